package kafkatest

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/produce"
	"github.com/segmentio/kafka-go/protocol/rawproduce"

	"github.com/keysetsync/keysetsync/kafka"
)

// Holder is a kafka-go transport wrapper (kafka.Config.WrapTransport) that, once armed, holds
// the broker's answer to the next produce request to some topics: the records are written
// (and, with acks=all, replicated) but the client is not told, as if the answer were slow on
// the wire. It holds on the client side, so it works against the real broker too.
//
// It holds the answer, after the real round trip, not the request: the round trip ran to its
// end on kafka-go's own connection, which the pool got back, so nothing else queues behind the
// hold, and the context kafka-go passed (the Writer's WriteTimeout, the Client's Timeout) does
// not run out inside the transport. Both produce forms are held: *produce.Request (the
// Writer, kafka-go's Client.Produce) and *rawproduce.Request (the transactional producer sends
// pre-encoded batches, with its transactional id); nothing else is (Metadata,
// AddPartitionsToTxn, EndTxn pass).
type Holder struct {
	next kafkago.RoundTripper

	mu    sync.Mutex
	armed *holding // the hold the next matching answer takes; nil: none
}

type holding struct {
	topics  []string
	held    chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *holding) let() { h.once.Do(func() { close(h.release) }) }

// NewHolder returns a Holder; pass its Wrap as kafka.Config.WrapTransport.
func NewHolder() *Holder { return &Holder{} }

// Wrap is kafka.Config.WrapTransport.
func (h *Holder) Wrap(rt kafkago.RoundTripper) kafkago.RoundTripper {
	h.next = rt
	return h
}

// KafkaHolding returns a client of package kafka for tg whose transport is wrapped by a new
// Holder, closed at cleanup, and the Holder.
func (tg Target) KafkaHolding(t testing.TB) (*kafka.Client, *Holder) {
	h := NewHolder()
	return tg.KafkaConfig(t, kafka.Config{WrapTransport: h.Wrap}), h
}

// Arm makes the Holder hold the answer to the next produce request to any of topics. held is
// closed once an answer is held; release lets it go (the client then gets it as the broker
// sent it), and is called at t's cleanup too, before the cleanups registered earlier (a sink's
// Close, the client's), so none of them waits on a hold the test left behind.
func (h *Holder) Arm(t testing.TB, topics ...string) (held <-chan struct{}, release func()) {
	hd := &holding{topics: topics, held: make(chan struct{}), release: make(chan struct{})}
	h.mu.Lock()
	if h.armed != nil {
		h.mu.Unlock()
		t.Fatal("kafkatest.Holder armed twice before a produce request took the first hold")
	}
	h.armed = hd
	h.mu.Unlock()
	t.Cleanup(hd.let)
	return hd.held, hd.let
}

// RoundTrip implements kafkago.RoundTripper.
func (h *Holder) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	res, err := h.next.RoundTrip(ctx, addr, req)
	if hd := h.take(req); hd != nil {
		close(hd.held)
		// Not ctx: a deadline passing here would turn an answered request into a failed one,
		// which kafka-go retries, and the test that holds would see the write answered twice.
		<-hd.release
	}
	return res, err
}

// take returns the armed hold if req is a produce request to one of its topics, disarming it.
func (h *Holder) take(req protocol.Message) *holding {
	var topics []string
	switch r := req.(type) {
	case *produce.Request:
		for _, tp := range r.Topics {
			topics = append(topics, tp.Topic)
		}
	case *rawproduce.Request:
		for _, tp := range r.Topics {
			topics = append(topics, tp.Topic)
		}
	default:
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	hd := h.armed
	if hd == nil || !slices.ContainsFunc(topics, func(topic string) bool { return slices.Contains(hd.topics, topic) }) {
		return nil
	}
	h.armed = nil
	return hd
}
