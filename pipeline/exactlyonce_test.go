package pipeline_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/cursortest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// Exactly-once mode without a broker: the pipeline writes to a sink.Mem whose batches are
// written whole or not at all (as a Kafka transaction is), and its cursors are records of
// those batches (cursortest.InSink), loaded back from what the Mem wrote.

const eoCursorTopic = "cursors"

// eoObserver counts the transaction events.
type eoObserver struct {
	pipeline.NopObserver
	mu                                  sync.Mutex
	committed, aborted, fenced, cursors int
}

func (o *eoObserver) TxnCommitted() { o.mu.Lock(); o.committed++; o.mu.Unlock() }
func (o *eoObserver) TxnAborted()   { o.mu.Lock(); o.aborted++; o.mu.Unlock() }
func (o *eoObserver) Fenced()       { o.mu.Lock(); o.fenced++; o.mu.Unlock() }
func (o *eoObserver) CursorCommitted(time.Time, time.Duration) {
	o.mu.Lock()
	o.cursors++
	o.mu.Unlock()
}

// eoPipeline is an exactly-once Pipeline over the playground (ptRecords records) writing to a
// Mem with policy, MaxInFlight ptInFlight.
func eoPipeline(t *testing.T, policy func(*sink.MemBatch), obs pipeline.Observer) (*pipeline.Pipeline, *cursortest.InSink) {
	t.Helper()
	var store *cursortest.InSink
	p, _ := memPipeline(t, policy, func(mem *sink.Mem) cursor.Store {
		store = &cursortest.InSink{Mem: mem, Topic: eoCursorTopic}
		return store
	}, func(c *pipeline.Config) { c.WriteTimeout, c.Observer, c.ExactlyOnce = time.Minute, obs, true })
	return p, store
}

// eoBatches records the batches a Mem acked, in order.
type eoBatches struct {
	mu    sync.Mutex
	acked [][]sink.Message
}

func (l *eoBatches) ack(b *sink.MemBatch) {
	l.mu.Lock()
	l.acked = append(l.acked, b.Msgs)
	l.mu.Unlock()
	b.Ack()
}

// checkCursors fails unless every acked batch ends with its cursor, and only it: the cursor
// that covers every record of the batches acked up to it, one seq after the one before.
func (l *eoBatches) checkCursors(t *testing.T, firstSeq, firstRecords int64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	records := firstRecords
	for i, msgs := range l.acked {
		require.NotEmpty(t, msgs, "batch %d", i)
		last := msgs[len(msgs)-1]
		require.Equal(t, eoCursorTopic, last.Topic, "batch %d: its last message is its cursor", i)
		for _, m := range msgs[:len(msgs)-1] {
			require.Equal(t, ptTopic, m.Topic, "batch %d: one cursor, last", i)
		}
		c, err := cursor.Unmarshal(last.Value)
		require.NoError(t, err)
		records += int64(len(msgs) - 1)
		assert.Equal(t, "p", string(last.Key))
		assert.Equal(t, firstSeq+int64(i), c.Seq, "batch %d", i)
		assert.Equal(t, records, c.Records, "batch %d: the cursor counts the records up to and with its batch", i)
		var newest time.Time
		for _, m := range msgs[:len(msgs)-1] {
			for _, h := range m.Headers {
				if h.Key == pipeline.HeaderUpdatedAt {
					at, err := time.Parse(time.RFC3339Nano, string(h.Value))
					require.NoError(t, err)
					if at.After(newest) {
						newest = at
					}
				}
			}
		}
		assert.Equal(t, newest, c.LastUpdatedAt, "batch %d: the cursor is at its newest record", i)
	}
}

// TestExactlyOnceCursorIsTheLastMessageOfItsBatch: with three batches in flight, each batch
// carries its own cursor as its last message; the pipeline never commits to the store, and a
// pass after loads the last one.
func TestExactlyOnceCursorIsTheLastMessageOfItsBatch(t *testing.T) {
	l := &eoBatches{}
	obs := &eoObserver{}
	p, store := eoPipeline(t, l.ack, obs)

	st, err := p.Pass(t.Context())
	require.NoError(t, err)
	assert.Equal(t, ptRecords, st.Produced)
	l.checkCursors(t, 1, 0)
	assert.Zero(t, store.Commits.Load(), "a cursor committed outside its batch")
	c, err := store.Load(t.Context(), "p")
	require.NoError(t, err)
	assert.EqualValues(t, ptRecords, c.Records)
	assert.Equal(t, st.Cursor, c.LastUpdatedAt)
	obs.mu.Lock()
	assert.Equal(t, len(l.acked), obs.committed, "TxnCommitted once a batch")
	assert.Equal(t, len(l.acked), obs.cursors, "CursorCommitted once a batch")
	assert.Zero(t, obs.aborted)
	obs.mu.Unlock()
	assert.Len(t, store.Mem.Written(ptTopic), ptRecords)

	st, err = p.Pass(t.Context())
	require.NoError(t, err)
	assert.Zero(t, st.Produced, "nothing new: the loaded cursor covers everything")
}

// TestExactlyOnceFailedBatchLeavesNeitherRecordsNorCursor: batch 2 fails once batch 3 was sent
// behind it (pipelined), and batch 3 fails for it, as kafka.TxnSink fails every batch queued
// behind a failed one. Neither's records nor cursor is written; the cursor loaded is batch 1's.
// The next pass resumes from it and every record version is written exactly once overall.
func TestExactlyOnceFailedBatchLeavesNeitherRecordsNorCursor(t *testing.T) {
	l := &eoBatches{}
	obs := &eoObserver{}
	var (
		mu     sync.Mutex
		failed error
		second *sink.MemBatch
	)
	policy := func(b *sink.MemBatch) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case failed != nil:
			b.Fail(fmt.Errorf("not written: an earlier batch failed: %w", failed))
		case second == nil && b.N == 2:
			second = b // held until batch 3 is sent
		case second != nil && b.N == 3:
			failed = retry.Permanent("refused by the test")
			second.Fail(failed)
			b.Fail(fmt.Errorf("not written: an earlier batch failed: %w", failed))
		default:
			l.ack(b)
		}
	}
	p, store := eoPipeline(t, policy, obs)

	_, err := p.Pass(t.Context())
	require.ErrorIs(t, err, pipeline.ErrProduce)
	assert.Contains(t, err.Error(), "refused by the test")
	c, err := store.Load(t.Context(), "p")
	require.NoError(t, err)
	assert.EqualValues(t, 1, c.Seq, "only batch 1 is committed")
	l.mu.Lock()
	require.Len(t, l.acked, 1)
	assert.Len(t, store.Mem.Written(ptTopic), len(l.acked[0])-1, "only batch 1's records are written")
	l.mu.Unlock()
	obs.mu.Lock()
	assert.Equal(t, 1, obs.aborted, "one transaction aborted; the batch failed behind it was not written")
	obs.mu.Unlock()

	mu.Lock()
	failed = nil
	mu.Unlock()
	_, err = p.Pass(t.Context())
	require.NoError(t, err)
	l.checkCursors(t, 1, 0)
	assert.Zero(t, store.Commits.Load())
	versions := map[string]int{}
	for _, m := range store.Mem.Written(ptTopic) {
		versions[string(m.Key)+"@"+string(m.Headers[2].Value)]++
	}
	assert.Len(t, versions, ptRecords)
	for v, n := range versions {
		assert.Equal(t, 1, n, "record version %s written %d times", v, n)
	}
}

// TestExactlyOnceFencedIsFinal: a batch failed because another instance took the sink over
// fails the pass with ErrFenced, not retryable, naming the pipeline, and the Observer is told.
func TestExactlyOnceFencedIsFinal(t *testing.T) {
	obs := &eoObserver{}
	policy := func(b *sink.MemBatch) {
		if b.N >= 2 {
			b.Fail(fmt.Errorf("transactional id %q: end transaction: %w", "keysetsync-p", sink.ErrFenced))
			return
		}
		b.Ack()
	}
	p, store := eoPipeline(t, policy, obs)

	_, err := p.Pass(t.Context())
	require.ErrorIs(t, err, pipeline.ErrFenced)
	require.ErrorIs(t, err, pipeline.ErrProduce)
	assert.False(t, retry.IsRetryable(err), "fencing is final: %v", err)
	assert.Contains(t, err.Error(), `pipeline "p"`)
	assert.Contains(t, err.Error(), "another instance")
	t.Log(err)
	obs.mu.Lock()
	assert.Equal(t, 1, obs.fenced)
	assert.Equal(t, 1, obs.aborted)
	obs.mu.Unlock()
	c, err := store.Load(t.Context(), "p")
	require.NoError(t, err)
	assert.EqualValues(t, 1, c.Seq)
}

// TestExactlyOnceNeedsARecordStore: a store that cannot put its cursor in a batch is refused
// at New, not found out at the first commit.
func TestExactlyOnceNeedsARecordStore(t *testing.T) {
	src, err := source.NewSource(source.SourceConfig{URL: "http://127.0.0.1:1/items"})
	require.NoError(t, err)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	_, err = pipeline.New(pipeline.Config{Pipeline: "p", Source: src, Topic: ptTopic, Store: cursor.NewMemStore(), Codec: codec,
		Sink: sink.NewMem(nil), ExactlyOnce: true})
	require.ErrorIs(t, err, pipeline.ErrConfig)
	assert.Contains(t, err.Error(), "cursor.RecordStore")
	assert.False(t, errors.Is(err, pipeline.ErrFenced))
}
