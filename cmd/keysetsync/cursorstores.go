package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/retry"
)

// cursorStores holds one cursor store per cluster and cursor topic for the pipelines of a
// process: each store reads its topic once and follows it, so a thousand pipelines sharing a
// cursor topic cost one reader, not a thousand scans of it per interval. A store uses the
// process's Kafka client of its cluster (kafkaClients), which jobSet.close closes after the stores.
type cursorStores struct {
	log *slog.Logger // for the stores: not any one pipeline's

	mu     sync.Mutex
	stores map[storeKey]*kafka.CursorStore
}

// storeKey says which pipelines may share a cursor store: the same cursor topic through the
// same client (kafkaClients gives one client per brokers and credentials, so a store opened
// with one user's rights never serves another's pipelines).
type storeKey struct {
	client *kafka.Client
	topic  string
}

// get returns the store of f's cursor topic on client's cluster, opening it on first use,
// retrying for --kafka-wait while Kafka cannot be reached (as runner.Open does).
func (s *cursorStores) get(ctx context.Context, f *syncFlags, client *kafka.Client) (*kafka.CursorStore, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := storeKey{client: client, topic: f.cursorTopic}
	if store := s.stores[key]; store != nil {
		return store, nil
	}
	var store *kafka.CursorStore
	err := retry.Do(ctx, retry.Policy{Budget: f.kafkaWait, Retryable: retry.IsRetryable, What: "connecting to Kafka", Log: s.log}, func() (bool, error) {
		var err error
		store, err = openCursorStore(ctx, client, f.cursorTopic, f.replication, s.log)
		return false, err
	})
	if err != nil {
		return nil, fmt.Errorf("cursor topic on %s: %w", client.Brokers(), err)
	}
	if s.stores == nil {
		s.stores = map[storeKey]*kafka.CursorStore{}
	}
	s.stores[key] = store
	return store, nil
}

// close closes every store; the pipelines using them are closed already.
func (s *cursorStores) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, store := range s.stores {
		_ = store.Close()
		delete(s.stores, key)
	}
}
