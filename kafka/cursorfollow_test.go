package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/sink"
)

func followCursor(pipeline string, seq int64) cursor.Cursor {
	return cursor.Cursor{Pipeline: pipeline, LastUpdatedAt: time.Unix(1700000000+seq, 0).UTC(), Seq: seq}
}

func followLoadSeq(t *testing.T, s cursor.Store, pipeline string) int64 {
	t.Helper()
	c, err := s.Load(txnCtx(t), pipeline)
	require.NoError(t, err)
	return c.Seq
}

// TestCursorStoreSeesAnotherStoresCommit: two stores of one topic, as two processes; each has
// read the topic before the other commits, so only a Load that catches up with the topic's end
// (not memory as it was) returns the other's cursor. The contract: a Load after a Commit, from
// any process, returns that cursor or a later one.
func TestCursorStoreSeesAnotherStoresCommit(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		a, b := openCursorStore(t, tg, name), openCursorStore(t, tg, name)
		t.Cleanup(func() { a.Close(); b.Close() })
		for _, s := range []*kafka.CursorStore{a, b} {
			_, err := s.Load(txnCtx(t), "p")
			require.ErrorIs(t, err, cursor.ErrNotFound)
		}
		for seq := int64(1); seq <= 20; seq++ {
			writer, reader := a, b
			if seq%2 == 0 {
				writer, reader = b, a
			}
			require.NoError(t, writer.Commit(txnCtx(t), followCursor("p", seq)))
			require.Equal(t, seq, followLoadSeq(t, reader, "p"), "the other store's commit of seq %d", seq)
			require.Equal(t, seq, followLoadSeq(t, writer, "p"), "the store's own commit of seq %d", seq)
		}
	})
}

// TestCursorStoreConcurrentLoadsSeeEveryCommit: many Loads at once, of several pipelines, each
// started after a commit of its pipeline by another store, all see it.
func TestCursorStoreConcurrentLoadsSeeEveryCommit(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		writer, reader := openCursorStore(t, tg, name), openCursorStore(t, tg, name)
		t.Cleanup(func() { writer.Close(); reader.Close() })
		const pipelines, rounds = 8, 5
		for round := int64(1); round <= rounds; round++ {
			var wg sync.WaitGroup
			errs := make([]error, pipelines)
			for i := range pipelines {
				wg.Go(func() {
					p := fmt.Sprintf("p%d", i)
					if err := writer.Commit(txnCtx(t), followCursor(p, round)); err != nil {
						errs[i] = err
						return
					}
					c, err := reader.Load(txnCtx(t), p)
					switch {
					case err != nil:
						errs[i] = err
					case c.Seq != round:
						errs[i] = fmt.Errorf("%s: loaded seq %d after the commit of seq %d", p, c.Seq, round)
					}
				})
			}
			wg.Wait()
			for _, err := range errs {
				require.NoError(t, err)
			}
		}
	})
}

// TestCursorStoreExactlyOnceCursors: a cursor written in a transaction is loaded once the
// transaction commits, never while it is open, never when it aborted, although the records of
// both carry a higher Seq than the committed cursor.
func TestCursorStoreExactlyOnceCursors(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		s := openCursorStore(t, tg, name)
		t.Cleanup(func() { s.Close() })
		p := txnNewProducer(t, tg.Kafka(t), name, nil)
		record := func(seq int64) []sink.Message {
			topic, key, value, err := s.Record(followCursor("p", seq))
			require.NoError(t, err)
			return []sink.Message{{Topic: topic, Key: key, Value: value}}
		}
		txnCommitOne(t, p, record(1))
		require.Equal(t, int64(1), followLoadSeq(t, s, "p"))

		require.NoError(t, p.Begin())
		require.NoError(t, p.Produce(txnCtx(t), record(50)))
		require.Equal(t, int64(1), followLoadSeq(t, s, "p"), "the cursor of an open transaction is not loaded")
		require.NoError(t, p.Abort(txnCtx(t)))
		require.Equal(t, int64(1), followLoadSeq(t, s, "p"), "the cursor of an aborted transaction is not loaded")

		txnCommitOne(t, p, record(2))
		require.Equal(t, int64(2), followLoadSeq(t, s, "p"), "the cursor of a committed transaction is loaded, the aborted one (seq 50) before it skipped")
		other := openCursorStore(t, tg, name)
		t.Cleanup(func() { other.Close() })
		require.Equal(t, int64(2), followLoadSeq(t, other, "p"), "a store reading the topic from its start skips the aborted one too")
	})
}

// TestCursorStoreSurvivesABrokerRestart: while the broker is down, Load fails at once with a
// retryable error; once it is back, Load sees what was committed meanwhile.
func TestCursorStoreSurvivesABrokerRestart(t *testing.T) {
	tg := kafkatest.NewFake(t)
	name := kafkatest.Topic(t, "cursors")
	br := kafkatest.NewBreaker(t)
	s, err := kafka.NewCursorStore(txnCtx(t), kafka.CursorStoreConfig{Client: tg.KafkaConfig(t, kafka.Config{Dial: br.Dial}), Topic: name, ReplicationFactor: 1})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	writer := openCursorStore(t, tg, name) // not behind the breaker
	t.Cleanup(func() { writer.Close() })

	require.NoError(t, writer.Commit(txnCtx(t), followCursor("p", 1)))
	require.Equal(t, int64(1), followLoadSeq(t, s, "p"))

	br.Refuse(true)
	for range 3 {
		_, err := s.Load(txnCtx(t), "p")
		require.Error(t, err)
		require.True(t, retry.IsRetryable(err), "a broker that is down is worth retrying: %v", err)
		require.NotErrorIs(t, err, context.DeadlineExceeded, "it fails, it does not wait for the context")
	}
	require.NoError(t, writer.Commit(txnCtx(t), followCursor("p", 2)))

	br.Refuse(false)
	var got int64
	require.NoError(t, retry.Do(txnCtx(t), retry.Policy{Budget: 30 * time.Second, Retryable: retry.IsRetryable, What: "load after the broker is back"}, func() (bool, error) {
		c, err := s.Load(txnCtx(t), "p")
		got = c.Seq
		return false, err
	}))
	require.Equal(t, int64(2), got, "the commit made while the broker was away from this store")
	require.NoError(t, writer.Commit(txnCtx(t), followCursor("p", 3)))
	require.Equal(t, int64(3), followLoadSeq(t, s, "p"))
}

// TestCursorStoreLoadWaitIsBoundedByItsContext: a Load whose catch-up cannot finish (its
// ListOffsets held by the broker) returns when its context ends; Close stops the follower.
func TestCursorStoreLoadWaitIsBoundedByItsContext(t *testing.T) {
	tg := kafkatest.NewFake(t)
	name := kafkatest.Topic(t, "cursors")
	s := openCursorStore(t, tg, name)
	_, err := s.Load(txnCtx(t), "p")
	require.ErrorIs(t, err, cursor.ErrNotFound)
	require.NoError(t, openCursorStore(t, tg, name).Commit(txnCtx(t), followCursor("p", 1)))

	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	tg.Fake.ControlKey(kmsg.ListOffsets.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() { close(held) })
		tg.Fake.SleepControl(func() { <-release })
		return nil, nil, false
	})
	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan error, 1)
	go func() {
		_, err := s.Load(ctx, "p")
		loaded <- err
	}()
	<-held
	cancel()
	require.ErrorIs(t, <-loaded, context.Canceled)
	close(release)
	require.NoError(t, s.Close())
	_, err = s.Load(txnCtx(t), "p")
	require.ErrorContains(t, err, "closed")
}

// TestCursorStoreReadsATopicCreatedAgain: a cursor topic deleted and created again under a
// running store is read again from its start, not from where the old one ended.
func TestCursorStoreReadsATopicCreatedAgain(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		var logs logtest.Buffer
		s, err := kafka.NewCursorStore(txnCtx(t), kafka.CursorStoreConfig{Client: tg.Kafka(t), Topic: name, ReplicationFactor: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		for seq := int64(1); seq <= 5; seq++ {
			require.NoError(t, s.Commit(txnCtx(t), followCursor("p", seq)))
		}
		require.Equal(t, int64(5), followLoadSeq(t, s, "p"))
		require.NoError(t, tg.Kafka(t).DeleteTopics(txnCtx(t), name))
		if tg.Fake != nil { // a real broker deletes in the background: a Load right after may still find it
			_, err = s.Load(txnCtx(t), "p")
			require.ErrorIs(t, err, kafka.ErrUnknownTopic, "a deleted topic fails the load")
			require.True(t, retry.IsRetryable(err), "retryable, as a missing topic is in Kafka's terms: %v", err)
		}
		w := openCursorStore(t, tg, name) // creates it again
		t.Cleanup(func() { w.Close() })
		require.NoError(t, w.Commit(txnCtx(t), followCursor("q", 1)))
		require.NoError(t, retry.Do(txnCtx(t), retry.Policy{Budget: 30 * time.Second, Retryable: retry.IsRetryable, What: "load from the new topic"}, func() (bool, error) {
			_, err := s.Load(txnCtx(t), "q")
			return false, err
		}))
		_, err = s.Load(txnCtx(t), "p")
		require.ErrorIs(t, err, cursor.ErrNotFound, "p's cursors went with the old topic")
		assert.True(t, strings.Contains(logs.String(), "reading it again from its start"), "logged: %s", logs.String())
	})
}

// TestCursorStoreIdleLoadCostsOneListOffsets: once the store has read the topic, a Load with
// nothing new costs one ListOffsets and no Fetch, however many records the topic holds; a Load
// after a new commit fetches only from where the store stopped.
func TestCursorStoreIdleLoadCostsOneListOffsets(t *testing.T) {
	tg := kafkatest.NewFake(t)
	name := kafkatest.Topic(t, "cursors")
	s, w := openCursorStore(t, tg, name), openCursorStore(t, tg, name)
	t.Cleanup(func() { s.Close(); w.Close() })
	for seq := int64(1); seq <= 50; seq++ {
		require.NoError(t, w.Commit(txnCtx(t), followCursor(fmt.Sprintf("p%d", seq%5), seq)))
	}
	require.Equal(t, int64(50), followLoadSeq(t, s, "p0"))
	_, err := w.Load(txnCtx(t), "p0") // w's follower is idle from now on
	require.NoError(t, err)

	var mu sync.Mutex
	requests := map[kmsg.Key]int{}
	var fetchedFrom []int64
	for _, key := range []kmsg.Key{kmsg.ListOffsets, kmsg.Fetch} {
		tg.Fake.ControlKey(key.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
			mu.Lock()
			defer mu.Unlock()
			requests[key]++
			if f, ok := req.(*kmsg.FetchRequest); ok {
				for _, tp := range f.Topics {
					for _, p := range tp.Partitions {
						fetchedFrom = append(fetchedFrom, p.FetchOffset)
					}
				}
			}
			return nil, nil, false // observed, then served as usual
		})
	}
	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return requests[kmsg.ListOffsets], requests[kmsg.Fetch]
	}
	for range 10 {
		require.Equal(t, int64(50), followLoadSeq(t, s, "p0"))
	}
	lists, fetches := counts()
	assert.Equal(t, 10, lists, "one ListOffsets per idle Load")
	assert.Equal(t, 0, fetches, "no Fetch when nothing is new")

	require.NoError(t, w.Commit(txnCtx(t), followCursor("p0", 51)))
	require.Equal(t, int64(51), followLoadSeq(t, s, "p0"))
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, fetchedFrom)
	assert.Equal(t, int64(50), fetchedFrom[0], "the new record is fetched from where the store stopped, not from the start")
}

// TestCursorStoreTombstoneInALaterPartition: as the scan read the partitions in order, a
// tombstone in a later partition erases the pipeline's cursors of earlier ones, and a cursor
// after it wins.
func TestCursorStoreTombstoneInALaterPartition(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		cases := []struct {
			name   string
			values []string // of pipeline p, value i in partition i; "" is a tombstone
			want   int64    // 0: no cursor
		}{
			{name: "tombstone last", values: []string{"5", "9", ""}},
			{name: "cursor after the tombstone", values: []string{"5", "", "2"}, want: 2},
			{name: "tombstone first", values: []string{"", "5", "2"}, want: 5},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				name := kafkatest.Topic(t, "cursors")
				kafkatest.CreateTopic(t, tg, name, len(c.values), map[string]string{"cleanup.policy": "compact"})
				client := tg.Client(t)
				for part, v := range c.values {
					rec := kafkago.Record{Key: kafkago.NewBytes([]byte("p"))}
					if v != "" {
						seq, err := strconv.ParseInt(v, 10, 64)
						require.NoError(t, err)
						b, err := cursor.Marshal(followCursor("p", seq))
						require.NoError(t, err)
						rec.Value = kafkago.NewBytes(b)
					}
					// A topic just created may not have its leaders known yet (NOT_LEADER_FOR_PARTITION
					// on a fresh broker): retried as any retryable Kafka answer.
					err := retry.Do(txnCtx(t), retry.Policy{Budget: 30 * time.Second, Retryable: retry.IsRetryable, What: "produce"}, func() (bool, error) {
						res, err := client.Produce(txnCtx(t), &kafkago.ProduceRequest{Topic: name, Partition: part, RequiredAcks: kafkago.RequireAll, Records: kafkago.NewRecordReader(rec)})
						if err == nil {
							err = res.Error
						}
						return false, kafka.Classify(err)
					})
					require.NoError(t, err)
				}
				s := openCursorStore(t, tg, name)
				t.Cleanup(func() { s.Close() })
				got, err := s.Load(txnCtx(t), "p")
				if c.want == 0 {
					require.ErrorIs(t, err, cursor.ErrNotFound)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, c.want, got.Seq)
			})
		}
	})
}
