package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Mem is the in-memory reference Sink, for tests: it records what was written per topic, in
// order, and answers each batch as its policy says: at once, or when the test acks or fails
// it. A test holds a batch by keeping it from its policy and answering it later, so every
// interleaving of acknowledgements and failures can be set up without a broker.
//
// A batch is written (Written sees it) when it is acked, all at once: a held batch is not
// visible. Mem keeps the Sink contract as far as its policy does: a test that acks a later
// batch before an earlier one with the same keys breaks their order on purpose, as Kafka can
// when the batches' partitions differ.
type Mem struct {
	policy func(*MemBatch)

	mu      sync.Mutex
	written map[string][]Message // per topic, in the order written
	sent    int
	pending int           // batches sent and not answered
	idle    chan struct{} // closed when pending drops to 0
	broken  bool          // a Reset gave up: fail everything until one succeeds
	closed  bool
}

var _ Sink = (*Mem)(nil)

// MemBatch is one batch sent to a Mem, to answer once with Ack or Fail.
type MemBatch struct {
	N    int // 1 for the first batch sent to the Mem, 2 for the next, across Resets
	Msgs []Message

	m        *Mem
	done     func(error)
	once     sync.Once
	answered chan struct{}
}

// NewMem returns a Mem that calls policy with every batch sent, on the goroutine of Send;
// policy answers the batch, at once or later from anywhere. A nil policy acks every batch at
// once.
func NewMem(policy func(*MemBatch)) *Mem {
	if policy == nil {
		policy = (*MemBatch).Ack
	}
	return &Mem{policy: policy, written: map[string][]Message{}}
}

// Send implements Sink.
func (m *Mem) Send(ctx context.Context, msgs []Message, done func(error)) {
	m.mu.Lock()
	m.sent++
	b := &MemBatch{N: m.sent, Msgs: msgs, m: m, done: done, answered: make(chan struct{})}
	var refuse error
	switch {
	case m.closed:
		refuse = ErrClosed
	case m.broken:
		refuse = errors.New("mem sink: a Reset gave up before every earlier batch was answered")
	case ctx.Err() != nil:
		refuse = fmt.Errorf("mem sink: batch %d not sent: %w", b.N, ctx.Err())
	case len(msgs) > 0:
		if m.pending++; m.pending == 1 {
			m.idle = make(chan struct{})
		}
	}
	m.mu.Unlock()
	switch {
	case refuse != nil:
		done(refuse)
	case len(msgs) == 0:
		done(nil)
	default:
		m.policy(b)
	}
}

// Ack writes the batch's messages and then calls its done with nil. Answering a batch twice
// panics: it is a test's mistake.
func (b *MemBatch) Ack() {
	b.answer(func() {
		for _, msg := range b.Msgs {
			b.m.written[msg.Topic] = append(b.m.written[msg.Topic], msg)
		}
	}, nil)
}

// Fail calls the batch's done with err, writing none of its messages.
func (b *MemBatch) Fail(err error) { b.answer(func() {}, err) }

// Answered is closed once the batch's done returned.
func (b *MemBatch) Answered() <-chan struct{} { return b.answered }

func (b *MemBatch) answer(write func(), err error) {
	first := false
	b.once.Do(func() { first = true })
	if !first {
		panic(fmt.Sprintf("mem sink: batch %d answered twice", b.N))
	}
	b.m.mu.Lock()
	write()
	b.m.mu.Unlock()
	// done runs before the batch stops counting as pending: Reset returns after every done.
	b.done(err)
	close(b.answered)
	b.m.mu.Lock()
	if b.m.pending--; b.m.pending == 0 {
		close(b.m.idle)
	}
	b.m.mu.Unlock()
}

// Reset implements Sink: it waits until every batch sent was answered.
func (m *Mem) Reset(ctx context.Context) error {
	m.mu.Lock()
	idle := m.idle
	if m.pending == 0 {
		m.broken = false
		m.mu.Unlock()
		return nil
	}
	m.mu.Unlock()
	select {
	case <-idle:
		m.mu.Lock()
		m.broken = false
		m.mu.Unlock()
		return nil
	case <-ctx.Done():
		m.mu.Lock()
		m.broken = true
		m.mu.Unlock()
		return fmt.Errorf("mem sink: reset: batches still unanswered: %w", ctx.Err())
	}
}

// Close implements Sink: it waits like Reset, however long the test holds a batch.
func (m *Mem) Close() error {
	err := m.Reset(context.Background())
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return err
}

// Written returns the messages written to topic, in the order written.
func (m *Mem) Written(topic string) []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Message(nil), m.written[topic]...)
}
