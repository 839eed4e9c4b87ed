// Package cursortest is the conformance suite of cursor.Store: every implementation must pass
// it, against every backend it supports (kfake and a real broker for kafka.CursorStore).
package cursortest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
)

// Opener returns a new Store over the same backing storage on every call, as a restarted
// process would see it. Stores it returns are closed by the suite.
type Opener func(t *testing.T) cursor.Store

// Run runs the suite. newBacking is called once per test case and returns an Opener over fresh
// storage, so cases do not see each other's cursors.
func Run(t *testing.T, newBacking func(t *testing.T) Opener) {
	cases := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"LoadWithoutCommitIsNotFound", loadWithoutCommit},
		{"CommitThenLoadRoundTrips", commitThenLoad},
		{"ANewStoreSeesTheCommit", newStoreSeesCommit},
		{"LatestCommitWins", latestCommitWins},
		{"PipelinesAreIndependent", pipelinesIndependent},
		{"ConcurrentPipelines", concurrentPipelines},
		{"CancelledCommitFails", cancelledCommit},
		{"SeqOutOfRangeIsRefused", seqOutOfRange},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newBacking(t)) })
	}
}

func openStore(t *testing.T, open Opener) cursor.Store {
	s := open(t)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func sample(pipeline string, seq int64) cursor.Cursor {
	return cursor.Cursor{
		Pipeline:      pipeline,
		LastUpdatedAt: time.Date(2024, 3, 1, 12, 0, int(seq), 0, time.UTC),
		Delivered:     map[string]string{fmt.Sprintf("id-%d", seq): "0123456789abcdef", "other": "fedcba9876543210"},
		Lookback:      map[uint64]time.Time{cursor.Digest("late", time.Date(2024, 3, 1, 11, 59, 0, 0, time.UTC), "00000000000000aa"): time.Date(2024, 3, 1, 11, 59, 0, 0, time.UTC)},
		Seq:           seq,
		CommittedAt:   time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC),
		Records:       100 * seq,
	}
}

func loadWithoutCommit(t *testing.T, open Opener) {
	s := openStore(t, open)
	_, err := s.Load(ctx(t), "never-committed")
	require.ErrorIs(t, err, cursor.ErrNotFound)
}

func commitThenLoad(t *testing.T, open Opener) {
	s := openStore(t, open)
	want := sample("p", 1)
	require.NoError(t, s.Commit(ctx(t), want))
	got, err := s.Load(ctx(t), "p")
	require.NoError(t, err)
	assertEqualCursor(t, want, got)
}

func newStoreSeesCommit(t *testing.T, open Opener) {
	want := sample("p", 7)
	require.NoError(t, openStore(t, open).Commit(ctx(t), want))
	got, err := openStore(t, open).Load(ctx(t), "p")
	require.NoError(t, err)
	assertEqualCursor(t, want, got)
}

func latestCommitWins(t *testing.T, open Opener) {
	s := openStore(t, open)
	for seq := int64(1); seq <= 5; seq++ {
		require.NoError(t, s.Commit(ctx(t), sample("p", seq)))
	}
	got, err := openStore(t, open).Load(ctx(t), "p")
	require.NoError(t, err)
	assertEqualCursor(t, sample("p", 5), got)
}

func pipelinesIndependent(t *testing.T, open Opener) {
	s := openStore(t, open)
	require.NoError(t, s.Commit(ctx(t), sample("a", 3)))
	require.NoError(t, s.Commit(ctx(t), sample("b", 1)))
	require.NoError(t, s.Commit(ctx(t), sample("a", 4)))
	a, err := s.Load(ctx(t), "a")
	require.NoError(t, err)
	b, err := s.Load(ctx(t), "b")
	require.NoError(t, err)
	assertEqualCursor(t, sample("a", 4), a)
	assertEqualCursor(t, sample("b", 1), b)
	_, err = s.Load(ctx(t), "c")
	require.ErrorIs(t, err, cursor.ErrNotFound)
}

func concurrentPipelines(t *testing.T, open Opener) {
	s := openStore(t, open)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			for seq := int64(1); seq <= 3; seq++ {
				if err := s.Commit(ctx(t), sample(fmt.Sprintf("p%d", i), seq)); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	for i := range errs {
		got, err := openStore(t, open).Load(ctx(t), fmt.Sprintf("p%d", i))
		require.NoError(t, err)
		assertEqualCursor(t, sample(fmt.Sprintf("p%d", i), 3), got)
	}
}

func cancelledCommit(t *testing.T, open Opener) {
	s := openStore(t, open)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	require.Error(t, s.Commit(c, sample("p", 1)))
}

func assertEqualCursor(t *testing.T, want, got cursor.Cursor) {
	t.Helper()
	assert.Equal(t, want.Pipeline, got.Pipeline)
	assert.True(t, want.LastUpdatedAt.Equal(got.LastUpdatedAt), "last_updated_at: want %s, got %s", want.LastUpdatedAt, got.LastUpdatedAt)
	assert.Equal(t, want.Delivered, got.Delivered)
	assert.Equal(t, want.Lookback, got.Lookback)
	assert.Equal(t, want.Seq, got.Seq)
	assert.Equal(t, want.Records, got.Records)
	assert.True(t, want.CommittedAt.Equal(got.CommittedAt), "committed_at: want %s, got %s", want.CommittedAt, got.CommittedAt)
}

func seqOutOfRange(t *testing.T, open Opener) {
	s := openStore(t, open)
	require.NoError(t, s.Commit(ctx(t), sample("p", 3)))
	for _, seq := range []int64{-1, cursor.MaxSeq + 1, math.MaxInt64} {
		c := sample("p", 3)
		c.Seq = seq
		require.Error(t, s.Commit(ctx(t), c), "seq %d: a later commit would not increase it", seq)
	}
	got, err := openStore(t, open).Load(ctx(t), "p")
	require.NoError(t, err)
	assertEqualCursor(t, sample("p", 3), got)
}
