package kafka_test

import (
	"context"
	"net"
	"sync"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/metadata"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
)

// txnCountMetadata counts the Metadata requests that go through it.
type txnCountMetadata struct {
	kafkago.RoundTripper
	mu sync.Mutex
	n  int
}

func (c *txnCountMetadata) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	if _, ok := req.(*metadata.Request); ok {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
	return c.RoundTripper.RoundTrip(ctx, addr, req)
}

func (c *txnCountMetadata) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// A producer learns where its partitions' leaders are once, not before every transaction: a
// Metadata request per transaction was a fifth of the requests of a thousand pipelines' first
// sync. (That it asks again after a leader moved is the faults suite's "leader moved" cases.)
func TestTxnProducerAsksForLeadersOnce(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txnleaders")
		kafkatest.CreateTopic(t, tg, topic, 3, nil)
		counter := &txnCountMetadata{}
		c := tg.KafkaConfig(t, kafka.Config{WrapTransport: func(rt kafkago.RoundTripper) kafkago.RoundTripper {
			counter.RoundTripper = rt
			return counter
		}})
		p := txnNewProducer(t, c, "leaders-"+topic, nil)
		txnCommitOne(t, p, txnMsgs(topic, "first", 30, 30, 10))
		after := counter.count()
		for i := range 5 {
			txnCommitOne(t, p, txnMsgs(topic, "more", 30, 30, 10+i))
		}
		require.Equal(t, after, counter.count(), "Metadata requests after the first transaction")
		txnMarkEnd(t, tg, topic, 3)
		require.Len(t, txnReadCommitted(t, tg, map[string]int{topic: 3}), 6*30)
	})
}
