package kafka_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/sink"
)

// BenchmarkTxnVsWriter writes batches of 1000 records (16-byte keys, 300-byte values, one
// header: about an Avro page) to a 6-partition topic on the real broker, side by side:
//
//	txn:    Begin, Produce(1000), Commit per iteration (exactly-once)
//	writer: kafka-go's Writer with acks=all, WriteMessages(1000) per iteration, configured as
//	        producer.NewWriter (at-least-once)
//
// Each iteration is one batch; -benchtime 1000x writes 1M records per variant. records/s is
// the number to compare.
func BenchmarkTxnVsWriter(b *testing.B) {
	tg := kafkatest.Real(b)
	const batch = 1000
	msgs := func(topic string, round int) []sink.Message {
		out := make([]sink.Message, batch)
		for i := range out {
			out[i] = sink.Message{
				Topic:   topic,
				Key:     fmt.Appendf(nil, "key-%011d", round*batch+i),
				Value:   bytes.Repeat([]byte{byte('a' + i%26)}, 300),
				Headers: []sink.Header{{Key: "schema", Value: []byte("users-v1")}},
			}
		}
		return out
	}
	ctx := context.Background()

	b.Run("txn", func(b *testing.B) {
		topic := kafkatest.Topic(b, "bench")
		kafkatest.CreateTopic(b, tg, topic, 6, nil)
		p, err := kafka.NewTxnProducer(ctx, kafka.TxnConfig{Client: tg.Kafka(b), TransactionalID: topic})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			m := msgs(topic, i)
			if err := p.Begin(); err != nil {
				b.Fatal(err)
			}
			if err := p.Produce(ctx, m); err != nil {
				b.Fatal(err)
			}
			if err := p.Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
	})

	b.Run("writer", func(b *testing.B) {
		topic := kafkatest.Topic(b, "bench")
		kafkatest.CreateTopic(b, tg, topic, 6, nil)
		c := tg.Client(b)
		w := &kafkago.Writer{
			Addr: c.Addr, Transport: c.Transport, Balancer: &kafkago.Murmur2Balancer{},
			RequiredAcks: kafkago.RequireAll, BatchSize: 2 * batch, BatchBytes: 1 << 20,
			BatchTimeout: 2 * time.Millisecond, MaxAttempts: 5,
		}
		defer w.Close()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			sm := msgs(topic, i)
			m := make([]kafkago.Message, len(sm))
			for j, s := range sm {
				m[j] = kafkago.Message{Topic: s.Topic, Key: s.Key, Value: s.Value, Headers: []kafkago.Header{{Key: s.Headers[0].Key, Value: s.Headers[0].Value}}}
			}
			if err := w.WriteMessages(ctx, m...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
	})
}
