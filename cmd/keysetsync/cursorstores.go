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
	stores map[storeKey]*storeOpen
	closed bool // a store opened after close is closed at once
}

// storeOpen is one store, opened once by the first get that needs it; done is closed once
// store or err is set. The lock is not held while it opens: a store retrying an unreachable
// cluster for --kafka-wait must not hold up the pipelines of the other clusters and topics.
type storeOpen struct {
	done  chan struct{}
	store *kafka.CursorStore
	err   error
}

// storeKey says which pipelines may share a cursor store: the same cursor topic through the
// same client (kafkaClients gives one client per brokers and credentials, so a store opened
// with one user's rights never serves another's pipelines).
type storeKey struct {
	client *kafka.Client
	topic  string
}

// get returns the store of f's cursor topic on client's cluster, opening it on first use,
// retrying for --kafka-wait while Kafka cannot be reached (as runner.Open does). Gets of the
// same store wait for that open; a failed open is forgotten, so the next get tries again.
func (s *cursorStores) get(ctx context.Context, f *syncFlags, client *kafka.Client) (*kafka.CursorStore, error) {
	key := storeKey{client: client, topic: f.cursorTopic}
	s.mu.Lock()
	if s.stores == nil {
		s.stores = map[storeKey]*storeOpen{}
	}
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("cursor topic on %s: the process is stopping", client.Brokers())
	}
	o := s.stores[key]
	if o != nil {
		s.mu.Unlock()
		select {
		case <-o.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if o.err != nil {
			return nil, o.err
		}
		return o.store, nil
	}
	o = &storeOpen{done: make(chan struct{})}
	s.stores[key] = o
	s.mu.Unlock()

	var store *kafka.CursorStore
	err := retry.Do(ctx, retry.Policy{Budget: f.kafkaWait, Retryable: retry.IsRetryable, What: "connecting to Kafka", Log: s.log}, func() (bool, error) {
		var err error
		store, err = openCursorStore(ctx, client, f.cursorTopic, f.replication, s.log)
		return false, err
	})
	s.mu.Lock()
	switch {
	case err != nil:
		o.err = fmt.Errorf("cursor topic on %s: %w", client.Brokers(), err)
		delete(s.stores, key)
	case s.closed:
		_ = store.Close()
		o.err = fmt.Errorf("cursor topic on %s: the process is stopping", client.Brokers())
	default:
		o.store = store
	}
	s.mu.Unlock()
	close(o.done)
	return o.store, o.err
}

// close closes every store; the pipelines using them are closed already.
func (s *cursorStores) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for key, o := range s.stores {
		select {
		case <-o.done:
			if o.store != nil {
				_ = o.store.Close()
			}
		default: // still opening: get closes it when it opens
		}
		delete(s.stores, key)
	}
}
