package kafka_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/sink"
)

// txnReadPart reads partition of topic with kafka.TxnReadPartition from its start and returns
// "key=value" per record, and where to read next.
func txnReadPart(t *testing.T, tg kafkatest.Target, topic string, partition int, from int64, committed bool) ([]string, int64) {
	t.Helper()
	var out []string
	next, err := kafka.TxnReadPartition(txnCtx(t), tg.Kafka(t), topic, partition, from, committed, func(r kafka.TxnRecord) error {
		require.Equal(t, partition, r.Partition)
		out = append(out, txnKV(r.Key, r.Value))
		return nil
	})
	require.NoError(t, err)
	return out, next
}

func txnKV(k, v []byte) string { return string(k) + "=" + txnValue(v) }

func txnKVs(msgs ...[]sink.Message) []string {
	var out []string
	for _, ms := range msgs {
		for _, m := range ms {
			out = append(out, txnKV(m.Key, m.Value))
		}
	}
	return out
}

// txnPlain writes msgs with kafka-go's Writer (no transaction, producer id -1).
func txnPlain(t *testing.T, tg kafkatest.Target, msgs []sink.Message) {
	t.Helper()
	// A transport of its own: the shared default one may cache metadata from before the
	// topic was created.
	tr := &kafkago.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafkago.Writer{Addr: kafkago.TCP(tg.Brokers...), Transport: tr, RequiredAcks: kafkago.RequireAll, BatchSize: len(msgs), Balancer: &kafkago.Murmur2Balancer{}}
	defer w.Close()
	kms := make([]kafkago.Message, len(msgs))
	for i, m := range msgs {
		kms[i] = kafkago.Message{Topic: m.Topic, Key: m.Key, Value: m.Value}
	}
	require.NoError(t, w.WriteMessages(txnCtx(t), kms...))
}

// On one partition, two transactional producers interleave their transactions, some
// committed, some aborted, between records written without a transaction. read_committed
// returns exactly the committed and the plain records, in offset order; read_uncommitted
// returns every record; neither returns a transaction marker.
func TestTxnReadInterleavedTransactions(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txnread")
		kafkatest.CreateTopic(t, tg, topic, 1, nil)
		c := tg.Kafka(t)
		p1 := txnNewProducer(t, c, topic+"-p1", nil)
		p2 := txnNewProducer(t, c, topic+"-p2", nil)
		m := func(tag string, n int) []sink.Message { return txnMsgs(topic, tag, n, 100, 5) }
		produce := func(p *kafka.TxnProducer, msgs []sink.Message) {
			require.NoError(t, p.Produce(txnCtx(t), msgs))
		}

		plain0, a1, b1, a2, b2, a3, b3, plain1, a4 := m("plain0", 2), m("a1", 3), m("b1", 2), m("a2", 4), m("b2", 1), m("a3", 2), m("b3", 3), m("plain1", 2), m("a4", 2)
		txnPlain(t, tg, plain0)
		// Round 1: p1 aborts, p2 commits.
		require.NoError(t, p1.Begin())
		require.NoError(t, p2.Begin())
		produce(p1, a1)
		produce(p2, b1)
		produce(p1, a2)
		produce(p2, b2)
		require.NoError(t, p1.Abort(txnCtx(t)))
		require.NoError(t, p2.Commit(txnCtx(t)))
		// Round 2: the other way round; p1's commit follows its own abort.
		require.NoError(t, p1.Begin())
		require.NoError(t, p2.Begin())
		produce(p1, a3)
		produce(p2, b3)
		txnPlain(t, tg, plain1)
		require.NoError(t, p2.Abort(txnCtx(t)))
		require.NoError(t, p1.Commit(txnCtx(t)))
		txnCommitOne(t, p1, a4)

		got, next := txnReadPart(t, tg, topic, 0, kafka.TxnFirstOffset, true)
		require.Equal(t, txnKVs(plain0, b1, b2, a3, plain1, a4), got, "read_committed")
		all, nextAll := txnReadPart(t, tg, topic, 0, 0, false)
		require.Equal(t, txnKVs(plain0, a1, b1, a2, b2, a3, b3, plain1, a4), all, "read_uncommitted")
		require.Equal(t, next, nextAll, "no transaction open: the LSO is the high watermark")
		// 21 records and 5 markers: the next offset is past the last marker.
		require.EqualValues(t, 21+5, next)

		// An independent read_committed reader agrees.
		txnMarkEnd(t, tg, topic, 1)
		var fg []string
		for _, r := range txnReadCommitted(t, tg, map[string]int{topic: 1}) {
			fg = append(fg, r.key+"="+r.value)
		}
		require.Equal(t, got, fg, "franz-go read_committed")
	})
}

// Reading from an offset inside a batch, or where the previous read stopped (fn's error),
// continues exactly there: every record once, in order, in both modes.
func TestTxnReadResumes(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txnread")
		kafkatest.CreateTopic(t, tg, topic, 1, nil)
		// One client for the many reads: a new one per read dials and loads metadata again,
		// which under -race on a busy machine took minutes.
		kc := tg.Kafka(t)
		p := txnNewProducer(t, kc, topic, nil)
		var want [][]sink.Message
		for i := range 4 {
			msgs := txnMsgs(topic, fmt.Sprint("t", i), 10, 100, 5)
			if i == 2 {
				require.NoError(t, p.Begin())
				require.NoError(t, p.Produce(txnCtx(t), msgs))
				require.NoError(t, p.Abort(txnCtx(t)))
				continue
			}
			txnCommitOne(t, p, msgs)
			want = append(want, msgs)
		}
		for _, committed := range []bool{true, false} {
			full, end := txnReadPart(t, tg, topic, 0, 0, committed)
			stop := errors.New("stop")
			var got []string
			for from := int64(0); from < end; {
				n := 0
				next, err := kafka.TxnReadPartition(txnCtx(t), kc, topic, 0, from, committed, func(r kafka.TxnRecord) error {
					if n == 3 {
						return stop
					}
					n++
					got = append(got, txnKV(r.Key, r.Value))
					return nil
				})
				if err != nil {
					require.ErrorIs(t, err, stop)
				}
				require.Greater(t, next, from, "progress from %d", from)
				from = next
			}
			require.Equal(t, full, got, "committed=%v: read in pieces of 3 records", committed)
		}
		got, _ := txnReadPart(t, tg, topic, 0, 0, true)
		require.Equal(t, txnKVs(want...), got)
	})
}

// An open transaction holds the last stable offset at its first record: read_committed stops
// there, returns at once with that offset and nothing of the transaction or after it, while
// read_uncommitted reads to the high watermark. Once the transaction commits, reading on
// from the returned offset yields the transaction and the records after it.
func TestTxnReadStopsAtLastStableOffset(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txnread")
		kafkatest.CreateTopic(t, tg, topic, 1, nil)
		p := txnNewProducer(t, tg.Kafka(t), topic, nil)
		before, open, after := txnMsgs(topic, "before", 5, 100, 5), txnMsgs(topic, "open", 4, 100, 5), txnMsgs(topic, "after", 3, 100, 5)
		txnCommitOne(t, p, before) // offsets 0-4, marker 5
		require.NoError(t, p.Begin())
		require.NoError(t, p.Produce(txnCtx(t), open)) // 6-9, open
		txnPlain(t, tg, after)                         // 10-12

		got, lso := txnReadPart(t, tg, topic, 0, 0, true)
		require.Equal(t, txnKVs(before), got)
		require.EqualValues(t, 6, lso, "stops at the open transaction's first offset")
		again, next := txnReadPart(t, tg, topic, 0, lso, true)
		require.Empty(t, again)
		require.Equal(t, lso, next)

		all, hw := txnReadPart(t, tg, topic, 0, 0, false)
		require.Equal(t, txnKVs(before, open, after), all)
		require.EqualValues(t, 13, hw)

		require.NoError(t, p.Commit(txnCtx(t)))
		rest, end := txnReadPart(t, tg, topic, 0, lso, true)
		require.Equal(t, txnKVs(open, after), rest)
		require.EqualValues(t, 14, end, "past the commit marker")
	})
}

// txnBatchBytes renders a v2 record batch at base with records at the given offsets and a
// last offset delta that may reach past them, as compaction leaves a batch whose last
// records it removed (KAFKA-5443).
func txnBatchBytes(base int64, lastOffsetDelta int32, offsets ...int64) []byte {
	var recs []byte
	for _, off := range offsets {
		r := kmsg.Record{OffsetDelta: int32(off - base), Key: fmt.Appendf(nil, "k%d", off), Value: fmt.Appendf(nil, "v%d", off)}
		body := len(r.AppendTo(nil)) - 1 // less the 1-byte varint of Length 0
		r.Length = int32(body)
		recs = r.AppendTo(recs)
	}
	b := kmsg.RecordBatch{FirstOffset: base, Magic: 2, LastOffsetDelta: lastOffsetDelta, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: int32(len(offsets)), Records: recs, Length: int32(49 + len(recs))}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// A batch whose last records compaction removed keeps its offset range: the reader must go on
// after the batch's end, not after its last record, or it asks for the same batch for ever.
// kfake answers the fetches as a broker would for such a log: 0-5 one batch holding only 0
// and 1, 6-9 a second batch; a fetch answers only the batch holding the offset asked for.
func TestTxnReadPastCompactedBatchTail(t *testing.T) {
	tg := kafkatest.NewFake(t)
	topic := kafkatest.Topic(t, "txnread")
	kafkatest.CreateTopic(t, tg, topic, 1, nil)
	first, second := txnBatchBytes(0, 5, 0, 1), txnBatchBytes(6, 3, 6, 7, 8, 9)
	var fetches atomic.Int32
	tg.Fake.ControlKey(kmsg.Fetch.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		tg.Fake.KeepControl()
		fetches.Add(1)
		freq := req.(*kmsg.FetchRequest)
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		resp.SetVersion(req.GetVersion())
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic = topic
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = 10, 10, 0
		switch off := freq.Topics[0].Partitions[0].FetchOffset; {
		case off <= 5:
			rp.RecordBatches = first
		case off <= 9:
			rp.RecordBatches = second
		}
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	for _, committed := range []bool{true, false} {
		got, next := txnReadPart(t, tg, topic, 0, 0, committed)
		require.Equal(t, []string{"k0=v0", "k1=v1", "k6=v6", "k7=v7", "k8=v8", "k9=v9"}, got)
		require.EqualValues(t, 10, next)
	}
	t.Logf("%d fetches", fetches.Load())
}
