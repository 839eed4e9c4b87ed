package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/retry"
)

// write writes msgs to partition 0 of topic, acknowledged by all replicas.
func write(t *testing.T, tg kafkatest.Target, topic string, msgs ...kafkago.Message) {
	t.Helper()
	w := &kafkago.Writer{Addr: kafkago.TCP(tg.Brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond,
		Transport: tg.Client(t).Transport, Balancer: kafkago.BalancerFunc(func(kafkago.Message, ...int) int { return 0 })}
	defer w.Close()
	require.NoError(t, w.WriteMessages(t.Context(), msgs...))
}

func keyed(keys ...string) []kafkago.Message {
	var out []kafkago.Message
	for _, k := range keys {
		out = append(out, kafkago.Message{Key: []byte(k), Value: []byte("v-" + k)})
	}
	return out
}

// follower runs Follow, collects what it hands over, and lets a test await a number of records.
type follower struct {
	mu   sync.Mutex
	keys []string
	offs []int64
	more chan struct{} // signalled after each batch
	done chan error    // Follow's result
	stop context.CancelFunc
}

// follow starts rd.Follow of partition 0 from offset.
func follow(t *testing.T, rd *kafka.Reader, offset int64) *follower {
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	f := &follower{more: make(chan struct{}, 1), done: make(chan error, 1), stop: cancel}
	go func() { f.done <- rd.Follow(ctx, 0, offset, f.fn) }()
	return f
}

// end stops Follow and returns its result.
func (f *follower) end() error {
	f.stop()
	return <-f.done
}

func (f *follower) fn(recs []kafka.Record) error {
	f.mu.Lock()
	for _, r := range recs {
		f.keys = append(f.keys, string(r.Key))
		f.offs = append(f.offs, r.Offset)
	}
	f.mu.Unlock()
	select {
	case f.more <- struct{}{}:
	default:
	}
	return nil
}

// await waits until n records arrived and returns their keys.
func (f *follower) await(t *testing.T, n int) []string {
	t.Helper()
	for {
		f.mu.Lock()
		keys := append([]string(nil), f.keys...)
		f.mu.Unlock()
		if len(keys) >= n {
			return keys
		}
		select {
		case <-f.more:
		case err := <-f.done:
			t.Fatalf("Follow returned %v after %d of %d records: %v", err, len(keys), n, keys)
		}
	}
}

// TestFollowReadsInOrderAndWaitsForMore: Follow hands over every record from its start offset,
// in order, then the records written while it waits, and ends without error when its context
// does.
func TestFollowReadsInOrderAndWaitsForMore(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "follow")
		kafkatest.CreateTopic(t, tg, topic, 1, nil)
		write(t, tg, topic, keyed("a", "b", "c")...)
		rd := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic, MaxWait: 50 * time.Millisecond})

		f := follow(t, rd, 1)
		assert.Equal(t, []string{"b", "c"}, f.await(t, 2), "from offset 1")
		write(t, tg, topic, keyed("d", "e")...)
		assert.Equal(t, []string{"b", "c", "d", "e"}, f.await(t, 4), "then what was written while it waited")
		assert.Equal(t, []int64{1, 2, 3, 4}, f.offs)
		require.NoError(t, f.end())
	})
}

// TestReaderOffsets: the bounds of a partition, and the first offset at or after a time (the end
// when none is).
func TestReaderOffsets(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "offsets")
		kafkatest.CreateTopic(t, tg, topic, 1, nil)
		t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
		msgs := keyed("a", "b", "c")
		for i := range msgs {
			msgs[i].Time = t0.Add(time.Duration(i) * time.Minute)
		}
		write(t, tg, topic, msgs...)
		rd := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic})
		parts, err := rd.Partitions(t.Context())
		require.NoError(t, err)
		require.Equal(t, []int{0}, parts)
		bounds, err := rd.Offsets(t.Context(), parts)
		require.NoError(t, err)
		assert.Equal(t, map[int]kafka.Offsets{0: {First: 0, End: 3}}, bounds)
		for _, c := range []struct {
			at   time.Time
			want int64
		}{{t0.Add(-time.Second), 0}, {t0.Add(time.Minute), 1}, {t0.Add(90 * time.Second), 2}, {t0.Add(time.Hour), 3}} {
			at, err := rd.OffsetsAt(t.Context(), parts, c.at)
			require.NoError(t, err)
			assert.Equal(t, map[int]int64{0: c.want}, at, "at %s", c.at.Sub(t0))
		}
	})
}

// TestFollowGoesOnAfterDeletedRecords: records deleted before Follow reached them are reported
// (Deleted) and skipped, not an error.
func TestFollowGoesOnAfterDeletedRecords(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "deleted")
		kafkatest.CreateTopic(t, tg, topic, 1, nil)
		write(t, tg, topic, keyed("a", "b", "c", "d")...)
		cl, err := kgo.NewClient(kgo.SeedBrokers(tg.Brokers...))
		require.NoError(t, err)
		defer cl.Close()
		req := kmsg.NewPtrDeleteRecordsRequest()
		rt := kmsg.NewDeleteRecordsRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewDeleteRecordsRequestTopicPartition()
		rp.Offset = 2
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		res, err := req.RequestWith(t.Context(), cl)
		require.NoError(t, err)
		require.NoError(t, kerr.ErrorForCode(res.Topics[0].Partitions[0].ErrorCode))

		var deleted [][3]int64
		rd := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic, MaxWait: 50 * time.Millisecond,
			Deleted: func(p int, from, to int64) { deleted = append(deleted, [3]int64{int64(p), from, to}) }})
		f := follow(t, rd, 0)
		assert.Equal(t, []string{"c", "d"}, f.await(t, 2))
		require.NoError(t, f.end())
		assert.Equal(t, [][3]int64{{0, 0, 2}}, deleted)
	})
}

// TestFollowRetriesWhatIsRetryable: a fetch answered with a retriable Kafka error is sent again;
// one answered with an error that fails the same way every time ends Follow with it at once.
func TestFollowRetriesWhatIsRetryable(t *testing.T) {
	for _, c := range []struct {
		name  string
		code  int16
		fails bool
	}{
		{"NOT_LEADER_OR_FOLLOWER", kerr.NotLeaderForPartition.Code, false},
		{"TOPIC_AUTHORIZATION_FAILED", kerr.TopicAuthorizationFailed.Code, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			tg := kafkatest.NewFake(t)
			topic := kafkatest.Topic(t, "retry")
			kafkatest.CreateTopic(t, tg, topic, 1, nil)
			write(t, tg, topic, keyed("a")...)
			var failed atomic.Int32
			tg.Fake.ControlKey(int16(kmsg.Fetch), func(r kmsg.Request) (kmsg.Response, error, bool) {
				failed.Add(1)
				req := r.(*kmsg.FetchRequest)
				res := req.ResponseKind().(*kmsg.FetchResponse)
				for _, rt := range req.Topics {
					st := kmsg.NewFetchResponseTopic()
					st.Topic, st.TopicID = rt.Topic, rt.TopicID
					for _, rp := range rt.Partitions {
						sp := kmsg.NewFetchResponseTopicPartition()
						sp.Partition, sp.ErrorCode = rp.Partition, c.code
						st.Partitions = append(st.Partitions, sp)
					}
					res.Topics = append(res.Topics, st)
				}
				return res, nil, true
			})
			rd := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic, MaxWait: 50 * time.Millisecond})
			f := follow(t, rd, 0)
			if c.fails {
				err := <-f.done
				require.Error(t, err)
				assert.False(t, retry.IsRetryable(err), "%v", err)
				assert.Contains(t, err.Error(), fmt.Sprintf("fetch %s/0 at offset 0", topic))
				return
			}
			assert.Equal(t, []string{"a"}, f.await(t, 1))
			require.NoError(t, f.end())
			assert.Equal(t, int32(1), failed.Load(), "one fetch failed, the next was served")
		})
	}
}

// TestReaderDoesNotWaitForAMissingTopic: a topic that does not exist fails at once, as
// ErrUnknownTopic, not after RetryFor.
func TestReaderDoesNotWaitForAMissingTopic(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		rd := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: kafkatest.Topic(t, "missing"), RetryFor: time.Hour})
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := rd.Partitions(ctx)
		require.Error(t, err)
		assert.True(t, errors.Is(err, kafka.ErrUnknownTopic), "%v", err)
		require.NoError(t, ctx.Err(), "failed at once, not when the deadline ended the retries")
	})
}
