package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
)

// TestCursorStoreOfOneClusterDoesNotWaitForAnother: a process whose pipelines use two clusters
// opens the cursor store of the one that answers while the other's open is still retrying an
// unreachable broker (for --kafka-wait): one cluster down must not hold up the pipelines of
// the others. Pipelines of the same store share one open.
func TestCursorStoreOfOneClusterDoesNotWaitForAnother(t *testing.T) {
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clients := &kafkaClients{}
	t.Cleanup(clients.close)
	down, err := clients.get(&kafkaSecurityFlags{}, "127.0.0.1:1", log)
	require.NoError(t, err)
	up, err := clients.get(&kafkaSecurityFlags{}, strings.Join(kafkatest.NewFake(t).Brokers, ","), log)
	require.NoError(t, err)
	stores := &cursorStores{log: log}
	t.Cleanup(stores.close)
	f := &syncFlags{cursorTopic: kafkatest.Topic(t, "cursors"), replication: 1, kafkaWait: 5 * time.Second}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	downDone := make(chan error, 1)
	go func() {
		_, err := stores.get(ctx, f, down)
		downDone <- err
	}()
	logs.Await(t, "the unreachable cluster's open retrying", func(s string) bool { return strings.Contains(s, "connecting to Kafka") })

	store, err := stores.get(t.Context(), f, up)
	require.NoError(t, err)
	select {
	case err := <-downDone:
		t.Fatalf("the reachable cluster's store opened only after the unreachable one's gave up (%v)", err)
	default:
	}
	again, err := stores.get(t.Context(), f, up)
	require.NoError(t, err)
	assert.Same(t, store, again, "one store per cluster and topic")

	cancel()
	assert.Error(t, <-downDone)
}
