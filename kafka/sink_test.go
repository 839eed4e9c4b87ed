package kafka_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/sinktest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/sink"
)

// TestSinkConformance runs the sink suite against the Kafka sink on kfake (a produce error
// injected for Fail, a produce request held inside the broker for Hold) and on the real broker
// (a message over the topic's max.message.bytes for Fail, the broker's answer to a produce
// request held on the client side for Hold).
func TestSinkConformance(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		sinktest.Run(t, func(t *testing.T) sinktest.Target {
			return conformanceTarget(t, tg, "sink", func(c *kafka.Client) sink.Sink {
				s, err := kafka.NewSink(kafka.SinkConfig{Client: c, BatchRecords: 100})
				require.NoError(t, err)
				t.Cleanup(func() { s.Close() })
				return s
			})
		})
	})
}

// conformanceTarget is the sinktest target of the sink newSink makes on a client of tg: two
// fresh topics of prefix, read back with Scan (committed data). Fail is a produce error
// injected by kfake, or on the real broker a message over the max.message.bytes of a topic
// (MESSAGE_TOO_LARGE, for a sink told a larger limit, so it does not refuse it first). Hold
// holds a produce request inside kfake; on the real broker, where nothing can be held inside,
// it holds the broker's answer to one in the client's transport (kafkatest.Holder): written,
// and not yet acknowledged.
func conformanceTarget(t *testing.T, tg kafkatest.Target, prefix string, newSink func(*kafka.Client) sink.Sink) sinktest.Target {
	var st sinktest.Target
	for i, suffix := range []string{"-a", "-b"} {
		st.Topics[i] = kafkatest.Topic(t, prefix+suffix)
		kafkatest.CreateTopic(t, tg, st.Topics[i], 3, nil)
	}
	st.Read = func(t *testing.T, topic string) []sink.Message { return readAll(t, tg, topic) }
	if tg.Fake != nil {
		st.Sink = newSink(tg.Kafka(t))
		st.Fail = func(*testing.T) []sink.Message {
			tg.Fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: st.Topics[0], Err: kerr.InvalidRecord})
			return []sink.Message{{Topic: st.Topics[0], Key: []byte("k"), Value: []byte("v")}}
		}
		st.Hold = func(t *testing.T) *sinktest.Hold { return holdNextProduce(t, tg.Fake, st.Topics) }
		return st
	}
	client, holder := tg.KafkaHolding(t)
	st.Sink = newSink(client)
	small := kafkatest.Topic(t, prefix+"-small")
	kafkatest.CreateTopic(t, tg, small, 1, map[string]string{"max.message.bytes": "2000"})
	st.Fail = func(*testing.T) []sink.Message {
		return []sink.Message{{Topic: small, Key: []byte("k"), Value: make([]byte, 5000)}}
	}
	st.Hold = func(t *testing.T) *sinktest.Hold {
		held, release := holder.Arm(t, st.Topics[:]...)
		return &sinktest.Hold{Held: held, Release: release}
	}
	return st
}

// holdNextProduce holds the next produce request to topics inside kfake until released.
func holdNextProduce(t *testing.T, c *kfake.Cluster, topics [2]string) *sinktest.Hold {
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	releaseFn := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseFn) // before the cluster closes
	var mu sync.Mutex
	holding := true
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		hold := holding && slices.ContainsFunc(r.(*kmsg.ProduceRequest).Topics, func(pt kmsg.ProduceRequestTopic) bool {
			return pt.Topic == topics[0] || pt.Topic == topics[1]
		})
		if hold {
			holding = false
		} else if holding {
			c.KeepControl()
		}
		mu.Unlock()
		if hold {
			close(held)
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	return &sinktest.Hold{Held: held, Release: releaseFn}
}

// readAll reads topic back as sink messages, those of a partition in offset order.
func readAll(t *testing.T, tg kafkatest.Target, topic string) []sink.Message {
	var out []sink.Message
	for _, m := range kafkatest.ReadAll(t, tg, topic) {
		keys := make([]string, 0, len(m.Headers))
		for k := range m.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var hs []sink.Header
		for _, k := range keys {
			hs = append(hs, sink.Header{Key: k, Value: []byte(m.Headers[k])})
		}
		out = append(out, sink.Message{Topic: topic, Key: m.Key, Value: m.Value, Headers: hs})
	}
	return out
}

// TestSizeIsKafkaGosCount: sink.Size is exactly the size kafka-go's writer compares with
// BatchBytes: a writer whose BatchBytes is Size takes the message, one byte less refuses it.
func TestSizeIsKafkaGosCount(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	tr := &kafkago.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	long := strings.Repeat("h", 200) // header lengths past one varint byte
	cases := []struct {
		name string
		m    sink.Message
	}{
		{"no key, no headers", sink.Message{Value: []byte("v")}},
		{"tombstone", sink.Message{Key: []byte("k")}},
		{"headers", sink.Message{Key: []byte("id-1"), Value: make([]byte, 300), Headers: []sink.Header{{Key: "keysetsync.pipeline", Value: []byte("p")}, {Key: long, Value: []byte(long + long)}}}},
		{"large value", sink.Message{Key: []byte("big"), Value: make([]byte, 70000), Headers: []sink.Header{{Key: "keysetsync.updated_at", Value: []byte("2024-01-01T00:00:00Z")}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := sink.Size(&tc.m)
			m := kafkago.Message{Key: tc.m.Key, Value: tc.m.Value}
			for _, h := range tc.m.Headers {
				m.Headers = append(m.Headers, kafkago.Header(h))
			}
			for _, bytes := range []int{n, n - 1} {
				w := &kafkago.Writer{Addr: kafkago.TCP(c.ListenAddrs()...), Topic: "t", Transport: tr, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, BatchBytes: int64(bytes)}
				err := w.WriteMessages(context.Background(), m)
				require.NoError(t, w.Close())
				if bytes == n {
					require.NoError(t, err)
					continue
				}
				var tooLarge kafkago.MessageTooLargeError
				require.True(t, errors.As(err, &tooLarge), "BatchBytes %d, one below Size: %v", bytes, err)
			}
		})
	}
}
