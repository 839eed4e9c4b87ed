package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/retry"
)

// cursorStores holds one cursor store per cluster and cursor topic for the pipelines of a
// process: each store reads its topic once and follows it, so a thousand pipelines sharing a
// cursor topic cost one reader, not a thousand scans of it per interval. A store has its own
// Kafka client; closing the set closes them, after the pipelines that use them.
type cursorStores struct {
	log *slog.Logger // for the stores: not any one pipeline's

	mu     sync.Mutex
	stores map[string]*sharedStore
}

type sharedStore struct {
	store  *kafka.CursorStore
	client *kafka.Client
}

// get returns the store of f's cursor topic on f's cluster, opening it on first use, retrying
// for --kafka-wait while Kafka cannot be reached (as runner.Open does).
func (s *cursorStores) get(ctx context.Context, f *syncFlags) (*kafka.CursorStore, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := f.cursorStoreKey()
	if ss := s.stores[key]; ss != nil {
		return ss.store, nil
	}
	client, err := newKafkaClient(&f.kafkaSec, f.brokers, "keysetsync", s.log)
	if err != nil {
		return nil, err
	}
	var store *kafka.CursorStore
	err = retry.Do(ctx, retry.Policy{Budget: f.kafkaWait, Retryable: retry.IsRetryable, What: "connecting to Kafka", Log: s.log}, func() (bool, error) {
		store, err = openCursorStore(ctx, client, f.cursorTopic, f.replication, s.log)
		return false, err
	})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("cursor topic on %s: %w", client.Brokers(), err)
	}
	if s.stores == nil {
		s.stores = map[string]*sharedStore{}
	}
	s.stores[key] = &sharedStore{store: store, client: client}
	return store, nil
}

// close closes every store and its client; the pipelines using them are closed already.
func (s *cursorStores) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, ss := range s.stores {
		_ = ss.store.Close()
		ss.client.Close()
		delete(s.stores, key)
	}
}

// cursorStoreKey says which pipelines may share a cursor store: the same cursor topic on the
// same brokers, reached with the same credentials (a store opened with one user's rights must
// not serve another's pipelines). It holds secrets: it is a map key, never printed.
func (f *syncFlags) cursorStoreKey() string {
	k := &f.kafkaSec
	return strings.Join([]string{f.cursorTopic, strings.Join(brokerList(f.brokers), ","),
		fmt.Sprint(k.tls, k.insecureSkipVerify), k.caFile, k.certFile, k.keyFile, k.serverName,
		strings.ToLower(k.mechanism), k.username, k.password, k.passwordFile}, "\x00")
}
