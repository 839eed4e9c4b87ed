// Package sink is where a pipeline hands its batches over to be written: the Message a record
// becomes, and the Sink contract every writer of batches keeps (Kafka's, the in-memory one of
// tests, the transactional one).
package sink

import "context"

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
//   - Send hands over one batch and may return before it is written. done is called exactly
//     once for it: with nil only when every message of the batch is durably written (Kafka:
//     acknowledged with acks=all), otherwise with the first failure. A batch that failed may be
//     partly written. Send never blocks for long: backpressure is the caller's (it bounds the
//     batches it has in flight).
//   - Messages with the same key are written in the order they were sent, within a batch and
//     across batches sent one after the other.
//   - After a failure the caller calls Reset before sending again. Reset returns only when
//     nothing sent before it can still land (no retry of an old batch is left in flight), so a
//     cursor committed after it is never overtaken by an old write. Every done of a batch sent
//     before Reset has been called when Reset returns.
//   - Close waits like Reset, then releases the sink; nothing may be sent after it.
type Sink interface {
	Send(ctx context.Context, msgs []Message, done func(error))
	Reset(ctx context.Context) error
	Close() error
}
