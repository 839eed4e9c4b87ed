package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/sink"
)

// SinkConfig configures the at-least-once data Sink.
type SinkConfig struct {
	// Client is the cluster to write to: its Addr and Transport (shared, not closed by the
	// Sink).
	Client *Client
	// BatchRecords is how many records the caller puts in one batch: kafka-go then sends a
	// batch's messages for one partition in one produce request where the bytes allow it.
	BatchRecords int
	// MaxMessageBytes is the smallest max.message.bytes of the topics the Sink writes (0: the
	// broker's default). A message larger than sink.MaxSize of it fails its batch; the caller
	// sizes its messages with the same limit, so that none does.
	MaxMessageBytes int
}

// Sink writes batches to Kafka with kafka-go's Writer, at least once: acks=all, and a batch is
// done when every partition's produce request for it was acknowledged or kafka-go gave up on
// it (5 attempts). Keys are partitioned with murmur2, where a Java producer would put them.
// One writer serves every topic, so the data and the dead letters of a batch are acknowledged
// together. See sink.Sink for the contract.
type Sink struct {
	cfg SinkConfig
	w   *kafkago.Writer
	// closing carries the result of closing the previous writer while a Reset waits for it;
	// non-nil after a Reset that gave up, until one that did not.
	closing chan error
	closed  bool
}

var _ sink.Sink = (*Sink)(nil)

// kafka-go's Header has sink.Header's fields: the conversion below compiles only while that
// holds, and it lets Send pass a message's headers to kafka-go without copying them.
var _ = kafkago.Header(sink.Header{})

// NewSink returns a Sink writing through cfg.Client. It does not connect yet.
func NewSink(cfg SinkConfig) (*Sink, error) {
	if cfg.Client == nil {
		return nil, errors.New("kafka sink: no client")
	}
	s := &Sink{cfg: cfg}
	s.w = s.newWriter()
	return s, nil
}

// newWriter returns a writer with the settings the guarantees rest on: acks=all, Murmur2
// partitioning, one produce request per partition and batch where the bytes allow it, and a
// short linger because every batch is waited for (the 1 s default would stall each one).
func (s *Sink) newWriter() *kafkago.Writer {
	return &kafkago.Writer{
		Addr:         s.cfg.Client.client.Addr,
		Transport:    s.cfg.Client.client.Transport,
		Balancer:     &kafkago.Murmur2Balancer{},
		RequiredAcks: kafkago.RequireAll,
		// A batch is BatchRecords plus less than one page: room for pages of up to 1000
		// records keeps it one request (kafka-go preallocates this many slots per batch).
		BatchSize: max(s.cfg.BatchRecords, 1) + 1000,
		// What the topics accept: kafka-go refuses a larger message, and a request it fills
		// up to this many bytes fits in max.message.bytes (see sink.Size).
		BatchBytes:   int64(sink.MaxSize(s.cfg.MaxMessageBytes)),
		BatchTimeout: 2 * time.Millisecond,
		MaxAttempts:  5,
		Async:        true,
		Completion:   complete,
	}
}

// sent is one batch handed to the writer: the writer's Completion counts its messages down.
type sent struct {
	done      func(error)
	mu        sync.Mutex
	remaining int
	err       error
}

// complete routes kafka-go's answer for one partition's messages to the batches they belong
// to (a request may carry several batches, and a batch spans requests).
func complete(msgs []kafkago.Message, err error) {
	var b *sent
	n := 0
	for i := range msgs {
		mb, _ := msgs[i].WriterData.(*sent)
		if mb != b {
			b.answer(n, err)
			b, n = mb, 0
		}
		n++
	}
	b.answer(n, err)
}

func (b *sent) answer(n int, err error) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if err != nil && b.err == nil {
		b.err = classify(err)
	}
	b.remaining -= n
	last, result := b.remaining == 0, b.err
	b.mu.Unlock()
	if last {
		b.done(result)
	}
}

// classify makes err say whether retrying may help, by its Kafka error codes.
func classify(err error) error {
	return fmt.Errorf("kafka sink: %w", Classify(err))
}

// Send implements sink.Sink.
func (s *Sink) Send(ctx context.Context, msgs []sink.Message, done func(error)) {
	switch {
	case s.closed:
		done(sink.ErrClosed)
		return
	case s.closing != nil:
		done(errors.New("kafka sink: not reset: the writer of a failed batch may still write"))
		return
	case len(msgs) == 0:
		done(nil)
		return
	}
	b := &sent{done: done, remaining: len(msgs)}
	km := make([]kafkago.Message, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		km[i] = kafkago.Message{Topic: m.Topic, Key: m.Key, Value: m.Value, WriterData: b,
			Headers: unsafe.Slice((*kafkago.Header)(unsafe.Pointer(unsafe.SliceData(m.Headers))), len(m.Headers))}
	}
	// In Async mode an error means nothing was enqueued (a message over BatchBytes, no
	// metadata for a topic, a closed writer): the whole batch failed here.
	if err := s.w.WriteMessages(ctx, km...); err != nil {
		done(classify(err))
	}
}

// Reset implements sink.Sink: it closes the writer, which waits for every batch kafka-go still
// writes or retries (its attempts bound the wait), and makes a new one.
func (s *Sink) Reset(ctx context.Context) error {
	if err := s.waitClosed(ctx); err != nil {
		return err
	}
	if !s.closed {
		s.w = s.newWriter()
	}
	return nil
}

// Close implements sink.Sink.
func (s *Sink) Close() error {
	if s.closed {
		return nil
	}
	err := s.waitClosed(context.Background())
	s.closed = true
	return err
}

// waitClosed closes the writer, or waits for the close a Reset before gave up on.
func (s *Sink) waitClosed(ctx context.Context) error {
	if s.closing == nil {
		s.closing = make(chan error, 1)
		go func(w *kafkago.Writer, out chan<- error) { out <- w.Close() }(s.w, s.closing)
	}
	select {
	case err := <-s.closing:
		s.closing = nil
		if err != nil {
			return fmt.Errorf("kafka sink: close writer: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kafka sink: reset: batches still in flight: %w", ctx.Err())
	}
}
