package kafka_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/sink"
)

// committedTopic writes to partition 0 of a fresh one-partition topic: p1 without a
// transaction, then transactions a (committed), b (aborted), c (committed) and d, left open
// (aborted at cleanup). It returns the topic and the producer, d still open.
func committedTopic(t *testing.T, tg kafkatest.Target) (string, *kafka.TxnProducer) {
	t.Helper()
	topic := kafkatest.Topic(t, "committed")
	kafkatest.CreateTopic(t, tg, topic, 1, nil)
	write(t, tg, topic, keyed("p1")...)
	p := txnNewProducer(t, tg.Kafka(t), topic, nil)
	msgs := func(keys ...string) []sink.Message {
		var out []sink.Message
		for _, k := range keys {
			out = append(out, sink.Message{Topic: topic, Key: []byte(k), Value: []byte("v-" + k)})
		}
		return out
	}
	txnCommitOne(t, p, msgs("a1", "a2"))
	require.NoError(t, p.Begin())
	require.NoError(t, p.Produce(txnCtx(t), msgs("b1")))
	require.NoError(t, p.Abort(txnCtx(t)))
	txnCommitOne(t, p, msgs("c1"))
	require.NoError(t, p.Begin())
	require.NoError(t, p.Produce(txnCtx(t), msgs("d1")))
	t.Cleanup(func() { p.Abort(txnCtx(t)) })
	return topic, p
}

func scanKeys(t *testing.T, tg kafkatest.Target, topic string, opts kafka.ScanOptions) []string {
	t.Helper()
	var keys []string
	require.NoError(t, tg.Kafka(t).ScanWith(txnCtx(t), topic, opts, func(r kafka.Record) error {
		keys = append(keys, string(r.Key))
		return nil
	}))
	return keys
}

// Scan reads what read_committed consumers see: neither an aborted transaction's records nor
// those of one still open (nor anything after it); with Uncommitted, every record written.
func TestScanReadsCommittedByDefault(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic, _ := committedTopic(t, tg)
		assert.Equal(t, []string{"p1", "a1", "a2", "c1"}, scanKeys(t, tg, topic, kafka.ScanOptions{}))
		assert.Equal(t, []string{"p1", "a1", "a2", "b1", "c1", "d1"}, scanKeys(t, tg, topic, kafka.ScanOptions{Uncommitted: true}))
	})
}

// A Reader reads committed data by default: Offsets' End is the last stable offset (the
// open transaction's first), Follow skips the aborted transaction and hands over the open
// one's records once it commits. Uncommitted, it sees every record at once.
func TestReaderReadsCommittedByDefault(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic, p := committedTopic(t, tg)
		rd := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic, MaxWait: 50 * time.Millisecond})
		un := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic, MaxWait: 50 * time.Millisecond, Uncommitted: true})

		committed, err := rd.Offsets(txnCtx(t), []int{0})
		require.NoError(t, err)
		all, err := un.Offsets(txnCtx(t), []int{0})
		require.NoError(t, err)
		assert.Less(t, committed[0].End, all[0].End, "the open transaction holds the end back")

		fu := follow(t, un, 0)
		assert.Equal(t, []string{"p1", "a1", "a2", "b1", "c1", "d1"}, fu.await(t, 6))
		require.NoError(t, fu.end())

		f := follow(t, rd, 0)
		// Each fetch answers every record there is below its end: the first one brings the
		// four committed ones together, or d1 too if it were not held back.
		assert.Equal(t, []string{"p1", "a1", "a2", "c1"}, f.await(t, 4))
		require.NoError(t, p.Commit(txnCtx(t)))
		assert.Equal(t, []string{"p1", "a1", "a2", "c1", "d1"}, f.await(t, 5))
		require.NoError(t, f.end())
	})
}

// The cursor is loaded read_committed: a cursor record of an aborted transaction, or of one
// still open, is never loaded (its batch's records are not visible either).
func TestCursorLoadIgnoresUncommittedCursors(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "cursors")
		store, err := kafka.NewCursorStore(txnCtx(t), kafka.CursorStoreConfig{Client: tg.Kafka(t), Topic: topic, ReplicationFactor: 1})
		require.NoError(t, err)
		t.Cleanup(func() { store.Close() })
		at := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
		cur := func(seq int64) []sink.Message {
			tp, k, v, err := store.Record(cursor.Cursor{Pipeline: "p", LastUpdatedAt: at.Add(time.Duration(seq) * time.Hour), Seq: seq})
			require.NoError(t, err)
			return []sink.Message{{Topic: tp, Key: k, Value: v}}
		}
		require.NoError(t, store.Commit(txnCtx(t), cursor.Cursor{Pipeline: "p", LastUpdatedAt: at, Seq: 1}))
		p := txnNewProducer(t, tg.Kafka(t), topic, nil)
		txnCommitOne(t, p, cur(2))
		require.NoError(t, p.Begin())
		require.NoError(t, p.Produce(txnCtx(t), cur(3)))
		require.NoError(t, p.Abort(txnCtx(t)))

		c, err := store.Load(txnCtx(t), "p")
		require.NoError(t, err)
		assert.EqualValues(t, 2, c.Seq, "the aborted cursor was loaded")

		require.NoError(t, p.Begin())
		require.NoError(t, p.Produce(txnCtx(t), cur(4)))
		t.Cleanup(func() { p.Abort(txnCtx(t)) })
		c, err = store.Load(txnCtx(t), "p")
		require.NoError(t, err)
		assert.EqualValues(t, 2, c.Seq, "a cursor of an open transaction was loaded")
	})
}
