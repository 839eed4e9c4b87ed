// Package sink is where a pipeline hands its batches over to be written: the Message a record
// becomes, and the Sink contract every writer of batches keeps (Kafka's, the in-memory one of
// tests, the transactional one).
package sink

import (
	"context"
	"errors"

	"github.com/keysetsync/keysetsync/retry"
)

// Header is one message header.
type Header struct {
	Key   string
	Value []byte
}

// Message is one record to write: its topic, key, value (nil: a tombstone) and headers. The
// partition is the sink's choice (Kafka: murmur2 of the key, as a Java producer would choose).
type Message struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header
}

// Sink writes batches of messages and says when each batch is safe: the core commits a cursor
// only after the Sink said so for its batch and every batch before it.
//
// The contract every implementation keeps (checked by internal/sinktest):
//   - Send hands over one batch and may return before it is written; the caller leaves msgs
//     unchanged until done. done is called exactly
//     once for it: with nil only when every message of the batch is durably written (Kafka:
//     acknowledged with acks=all), otherwise with the first failure, possibly before the rest of
//     the batch was answered. A batch that failed may be partly written. An empty batch is done
//     at once. A batch may span topics (data and dead letters; a transactional sink's cursor).
//   - Send never blocks for long: backpressure is the caller's (it bounds the batches it has in
//     flight). ctx bounds only the hand-over, not the write: a batch handed over is written or
//     failed whatever happens to ctx, and only Reset stops it.
//   - An error given to done says itself whether sending the batch again may succeed
//     (retry.IsRetryable): for Kafka, by its error codes.
//   - A message larger than the sink accepts (Size over its limit) fails its batch: sizing the
//     messages is the caller's job, with Size.
//   - Messages with the same key are written in the order they were sent, within a batch and
//     across batches sent one after the other, as far as the batches succeed: what a failed
//     batch wrote may land anywhere before Reset returns.
//   - After a failure the caller calls Reset before sending again. Reset returns only when
//     nothing sent before it can still land (no retry of an old batch is left in flight), so a
//     cursor committed after it is never overtaken by an old write. Every done of a batch sent
//     before Reset has been called when Reset returns. If ctx ends first, Reset returns an error
//     wrapping ctx's and the sink fails every batch sent until a later Reset returns nil.
//   - Close waits like Reset, then releases the sink; a batch sent after it fails.
//   - Send, Reset and Close are called by one goroutine at a time. done may run on any
//     goroutine, even before Send returns; it must not block for long nor call the Sink.
type Sink interface {
	Send(ctx context.Context, msgs []Message, done func(error))
	Reset(ctx context.Context) error
	Close() error
}

// ErrClosed is given to the done of a batch sent after Close.
var ErrClosed = errors.New("sink closed")

// ErrFenced is wrapped by the errors of a Sink whose writing another writer took over (a
// transactional sink: another producer with the same transactional id started). It is final:
// no retry heals it (retry.IsRetryable refuses it), the Sink stays failed, and none of the
// batches it had not confirmed becomes visible.
var ErrFenced = retry.Permanent("fenced: another writer with the same transactional id took over")
