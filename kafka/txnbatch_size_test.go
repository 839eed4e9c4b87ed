package kafka

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/sink"
)

// txnEncodeBatch sizes its buffer once from txnBatchSizeBound: the bound must never be below
// what it renders, whatever the keys, values and headers (varint lengths change width at 64,
// 8,192 and 1,048,576 bytes), or the buffer would grow again.
func TestTxnBatchSizeBoundCoversTheRenderedBatch(t *testing.T) {
	msg := func(key, value int, headers ...int) sink.Message {
		m := sink.Message{Key: []byte(strings.Repeat("k", key)), Value: []byte(strings.Repeat("v", value))}
		for _, h := range headers {
			m.Headers = append(m.Headers, sink.Header{Key: strings.Repeat("h", h), Value: []byte(strings.Repeat("x", h))})
		}
		return m
	}
	many := func(n int, m sink.Message) []sink.Message {
		out := make([]sink.Message, n)
		for i := range out {
			out[i] = m
		}
		return out
	}
	for _, tc := range []struct {
		name string
		msgs []sink.Message
	}{
		{"one empty message", []sink.Message{{}}},
		{"a tombstone", []sink.Message{{Key: []byte("id-1")}}},
		{"small records", many(1000, msg(8, 150))},
		{"varint edges", []sink.Message{msg(63, 63), msg(64, 64), msg(8191, 8191), msg(8192, 8192, 63, 64)}},
		{"a large value", []sink.Message{msg(10, 1<<20+1)}},
		{"headers", many(100, msg(16, 300, 1, 20, 200))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := txnEncodeBatch(tc.msgs, txnBatchIdentity{producerID: 7, epoch: 1}, time.Unix(1700000000, 0))
			require.NoError(t, err)
			require.LessOrEqual(t, len(b), txnBatchSizeBound(tc.msgs), "the bound undercounts the batch")
		})
	}
}

// The batch is rendered into one buffer allocated once, at its bound: a buffer that doubles its
// way up from nothing allocates, copies and clears about twice the batch, which at a thousand
// pipelines was one of the largest allocations of a sync after the pages (BENCHMARKS.md "Many
// pipelines"). Its capacity shows which it was: the bound, rounded up to the allocator's 8 KiB
// pages, against the next power of two of doubling.
func TestTxnEncodeBatchAllocatesItsBufferOnce(t *testing.T) {
	msgs := make([]sink.Message, 1000)
	for i := range msgs {
		msgs[i] = sink.Message{Key: []byte("00000000-0000-0000-0000-000000000000"), Value: make([]byte, 150)}
	}
	b, err := txnEncodeBatch(msgs, txnBatchIdentity{producerID: 7}, time.Unix(1700000000, 0))
	require.NoError(t, err)
	bound := txnBatchSizeBound(msgs)
	require.LessOrEqual(t, len(b), bound)
	require.LessOrEqual(t, cap(b), bound+8<<10, "a batch of %d bytes in a buffer of %d: it grew by steps instead of being sized once at %d", len(b), cap(b), bound)
}
