package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// The ack-then-commit protocol, without a broker: the pipeline writes to a sink.Mem whose
// batches the test acks, fails or holds, and commits to a cursor.MemStore that checks, at every
// commit, that the batches it covers were acknowledged before it.

// Sizes of the protocol tests: 500 records in pages of about 50, batches of at least 100, three
// in flight.
const (
	ptRecords, ptPage, ptBatch, ptInFlight = 500, 50, 100, 3
	ptTopic                                = "users"
)

// ptLedger is what the Mem answered, for the store to check each commit against.
type ptLedger struct {
	mu      sync.Mutex
	acked   map[int]int // batch number: its messages, once acked
	commits []cursor.Cursor
	bad     []string // commits that ran ahead of the acknowledgements
}

// ack acks b and notes it.
func (l *ptLedger) ack(b *sink.MemBatch) {
	l.mu.Lock()
	l.acked[b.N] = len(b.Msgs)
	l.mu.Unlock()
	b.Ack()
}

// ptStore is a MemStore that checks every commit: the cursor of seq k covers batches 1..k (a
// pass from no cursor), and each of them was acknowledged before the commit.
type ptStore struct {
	*cursor.MemStore
	l *ptLedger
}

func (s *ptStore) Commit(ctx context.Context, c cursor.Cursor) error {
	if s.l == nil {
		return s.MemStore.Commit(ctx, c)
	}
	s.l.mu.Lock()
	want := int64(0)
	for n := 1; n <= int(c.Seq); n++ {
		m, ok := s.l.acked[n]
		if !ok {
			s.l.bad = append(s.l.bad, fmt.Sprintf("cursor seq %d committed before batch %d was acknowledged", c.Seq, n))
		}
		want += int64(m)
	}
	if c.Records != want {
		s.l.bad = append(s.l.bad, fmt.Sprintf("cursor seq %d covers %d records, the acknowledged batches up to it hold %d", c.Seq, c.Records, want))
	}
	s.l.commits = append(s.l.commits, c)
	s.l.mu.Unlock()
	return s.MemStore.Commit(ctx, c)
}

// ptFailed calls onFailed when the pipeline gave up on a batch.
type ptFailed struct {
	pipeline.NopObserver
	onFailed func()
}

func (o ptFailed) ProduceFailed(bool) { o.onFailed() }

// ptPipeline is a Pipeline over the playground writing to a Mem with policy, committing to a
// store that checks its commits against l.
func ptPipeline(t *testing.T, l *ptLedger, policy func(*sink.MemBatch), writeTimeout time.Duration, obs pipeline.Observer) (*pipeline.Pipeline, *sink.Mem, *ptStore) {
	t.Helper()
	store := &ptStore{MemStore: cursor.NewMemStore(), l: l}
	p, mem := memPipeline(t, policy, func(*sink.Mem) cursor.Store { return store }, func(c *pipeline.Config) {
		c.WriteTimeout, c.Observer = writeTimeout, obs
	})
	return p, mem, store
}

// memPipeline is a Pipeline "p" over the playground (ptRecords records in pages of ptPage)
// writing to a Mem with policy, in batches of ptBatch, ptInFlight in flight, committing to
// the store made for the Mem; edit sets the rest of the configuration.
func memPipeline(t *testing.T, policy func(*sink.MemBatch), store func(*sink.Mem) cursor.Store, edit func(*pipeline.Config)) (*pipeline.Pipeline, *sink.Mem) {
	t.Helper()
	_, url := sourcetest.Playground(t, ptRecords, ptPage)
	src, err := source.NewSource(source.SourceConfig{URL: url})
	require.NoError(t, err)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	mem := sink.NewMem(policy)
	t.Cleanup(func() { mem.Close() })
	cfg := pipeline.Config{Pipeline: "p", Source: src, Topic: ptTopic, Store: store(mem), Codec: codec, Sink: mem,
		BatchRecords: ptBatch, MaxInFlight: ptInFlight}
	edit(&cfg)
	p, err := pipeline.New(cfg)
	require.NoError(t, err)
	return p, mem
}

func (l *ptLedger) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	assert.Empty(t, l.bad, "commits ahead of the acknowledgements")
}

// TestHeldBatchKeepsEveryCursorBehindIt: batch 1 held, the batches after it acknowledged at
// once. No cursor is committed while batch 1 is held, not even those of the acknowledged
// batches after it; once the pipeline gives up on it (WriteTimeout), the pass fails with
// ErrProduce and no cursor at all. The held batch exceeds WriteTimeout by construction: it is
// answered only after the pipeline gave up on it.
func TestHeldBatchKeepsEveryCursorBehindIt(t *testing.T) {
	l := &ptLedger{acked: map[int]int{}}
	held := make(chan *sink.MemBatch, 1)
	policy := func(b *sink.MemBatch) {
		if b.N == 1 {
			held <- b
			return
		}
		l.ack(b)
	}
	var once sync.Once
	gaveUp := ptFailed{onFailed: func() {
		once.Do(func() { (<-held).Fail(errors.New("answered after the pipeline gave up")) })
	}}
	p, mem, store := ptPipeline(t, l, policy, 300*time.Millisecond, gaveUp)
	t.Cleanup(gaveUp.onFailed) // a pipeline that never gave up leaves it held: answer it before the Mem closes

	_, err := p.Pass(t.Context())
	require.ErrorIs(t, err, pipeline.ErrProduce)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	_, err = store.Load(t.Context(), "p")
	require.ErrorIs(t, err, cursor.ErrNotFound, "a cursor was committed while batch 1 was held")
	l.check(t)
	assert.NotEmpty(t, mem.Written(ptTopic), "the batches after the held one were written")
}

// TestHeldBatchReleasedLateCommitsInOrder: batch 1 held until batches 2 and 3 were
// acknowledged, then acknowledged: every cursor is committed, in order, each after its batch
// and all before it were acknowledged.
func TestHeldBatchReleasedLateCommitsInOrder(t *testing.T) {
	l := &ptLedger{acked: map[int]int{}}
	var (
		mu    sync.Mutex
		first *sink.MemBatch
	)
	policy := func(b *sink.MemBatch) {
		switch b.N {
		case 1:
			mu.Lock()
			first = b
			mu.Unlock()
		case ptInFlight: // the last batch sent while batch 1 is held
			l.ack(b)
			mu.Lock()
			f := first
			mu.Unlock()
			l.ack(f)
		default:
			l.ack(b)
		}
	}
	p, mem, store := ptPipeline(t, l, policy, time.Minute, nil)

	st, err := p.Pass(t.Context())
	require.NoError(t, err)
	l.check(t)
	assert.Equal(t, ptRecords, st.Produced)
	c, err := store.Load(t.Context(), "p")
	require.NoError(t, err)
	assert.EqualValues(t, ptRecords, c.Records)
	assert.Equal(t, ptRecords, len(mem.Written(ptTopic)))
	require.Greater(t, len(l.commits), ptInFlight, "more batches than are in flight at once")
	for i, c := range l.commits {
		assert.EqualValues(t, i+1, c.Seq, "commits in order")
	}
}

// TestFailedBatchGetsNoCursor: batch 2 fails, after batch 3 was acknowledged. The cursor covers
// batch 1 only, nothing of batch 2 or later; the next pass resumes from it and delivers
// everything.
func TestFailedBatchGetsNoCursor(t *testing.T) {
	l := &ptLedger{acked: map[int]int{}}
	fail := true
	var second *sink.MemBatch // sent before batch 3, on the same goroutine
	policy := func(b *sink.MemBatch) {
		switch {
		case !fail:
			l.ack(b)
		case b.N == 2:
			second = b
		case b.N == 3:
			l.ack(b)
			second.Fail(retry.Permanent("refused by the test"))
		default:
			l.ack(b)
		}
	}
	p, mem, store := ptPipeline(t, l, policy, time.Minute, nil)

	_, err := p.Pass(t.Context())
	require.ErrorIs(t, err, pipeline.ErrProduce)
	assert.Contains(t, err.Error(), "refused by the test")
	l.check(t)
	c, err := store.Load(t.Context(), "p")
	require.NoError(t, err)
	assert.EqualValues(t, 1, c.Seq, "only batch 1 is covered")
	l.mu.Lock()
	assert.EqualValues(t, l.acked[1], c.Records)
	assert.Contains(t, l.acked, 3, "batch 3 was acknowledged, and is still not covered")
	l.mu.Unlock()

	// The second pass's batch numbers and seqs no longer start together: it is checked by
	// what it delivers.
	written := len(mem.Written(ptTopic))
	fail, store.l = false, nil
	st, err := p.Pass(t.Context())
	require.NoError(t, err)
	assert.EqualValues(t, ptRecords-c.Records, st.Produced, "the second pass resumes after batch 1")
	assert.Equal(t, written+ptRecords-int(c.Records), len(mem.Written(ptTopic)))
}
