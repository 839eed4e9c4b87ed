package kafka_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/endtxn"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/sinktest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/sink"
)

func txnNewSink(t *testing.T, client *kafka.Client, id string) *kafka.TxnSink {
	t.Helper()
	s, err := kafka.NewTxnSink(txnCtx(t), kafka.TxnConfig{Client: client, TransactionalID: id})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// txnSend sends msgs and returns where its done's error arrives.
func txnSend(s sink.Sink, ctx context.Context, msgs []sink.Message) <-chan error {
	ch := make(chan error, 1)
	s.Send(ctx, msgs, func(err error) { ch <- err })
	return ch
}

// txnReadTopic reads every partition of topic with kafka.TxnReadPartition.
func txnReadTopic(t *testing.T, tg kafkatest.Target, topic string, partitions int, committed bool) []txnRec {
	t.Helper()
	var out []txnRec
	for p := range partitions {
		_, err := kafka.TxnReadPartition(txnCtx(t), tg.Kafka(t), topic, p, 0, committed, func(r kafka.TxnRecord) error {
			out = append(out, txnRec{topic, p, string(r.Key), txnValue(r.Value)})
			return nil
		})
		require.NoError(t, err)
	}
	return out
}

// Each batch is one committed transaction; done(nil) comes in Send order once it committed,
// and read_committed then sees every message of it.
func TestTxnSinkCommitsEachBatch(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txnsink")
		kafkatest.CreateTopic(t, tg, topic, 3, nil)
		s := txnNewSink(t, tg.Kafka(t), topic)
		var batches [][]sink.Message
		order := make(chan int, 5)
		for i := range 5 {
			msgs := txnMsgs(topic, string(rune('a'+i)), 40, 25, 10)
			batches = append(batches, msgs)
			s.Send(txnCtx(t), msgs, func(err error) {
				require.NoError(t, err)
				order <- i
			})
		}
		for i := range 5 {
			require.Equal(t, i, <-order, "done in Send order")
		}
		require.Equal(t, txnWant(batches...), txnGot(txnReadTopic(t, tg, topic, 3, true)))
		require.NoError(t, s.Reset(txnCtx(t)))
		require.NoError(t, s.Close())
	})
}

// A batch that fails (MESSAGE_TOO_LARGE for one of its messages) is aborted whole: none of its
// messages is visible to read_committed, though some were written. The batch queued behind it
// fails without being written. Reset makes the sink usable again and the next batch commits.
func TestTxnSinkFailureMidQueue(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txnsink")
		kafkatest.CreateTopic(t, tg, topic, 3, map[string]string{"max.message.bytes": "4096"})
		s := txnNewSink(t, tg.Kafka(t), topic)

		b1 := txnMsgs(topic, "one", 20, 20, 10)
		b2 := append(txnMsgs(topic, "two", 20, 20, 10), sink.Message{Topic: topic, Key: []byte("big"), Value: bytes.Repeat([]byte("x"), 10000)})
		b3 := txnMsgs(topic, "three", 20, 20, 10)
		// Batch 1's done waits for batch 3 to be queued: batches 2 and 3 are both queued
		// when batch 2 fails.
		queued := make(chan struct{})
		done1 := make(chan error, 1)
		s.Send(txnCtx(t), b1, func(err error) { <-queued; done1 <- err })
		done2 := txnSend(s, txnCtx(t), b2)
		done3 := txnSend(s, txnCtx(t), b3)
		close(queued)

		require.NoError(t, <-done1)
		err2 := <-done2
		require.ErrorIs(t, err2, kafkago.MessageSizeTooLarge)
		require.False(t, retry.IsRetryable(err2), "a message too large fails the same way again: %v", err2)
		err3 := <-done3
		require.ErrorIs(t, err3, kafkago.MessageSizeTooLarge, "batch 3 fails for batch 2's failure")
		require.ErrorContains(t, err3, "not written")

		uncommitted := txnGot(txnReadTopic(t, tg, topic, 3, false))
		require.NotEmpty(t, uncommitted[topic+"/k1"], "batch 2's small messages were written (then aborted)")
		require.Equal(t, txnWant(b1), txnGot(txnReadTopic(t, tg, topic, 3, true)), "only batch 1 committed")
		for p := range 3 {
			_, lso := txnReadPart(t, tg, topic, p, 0, true)
			_, hw := txnReadPart(t, tg, topic, p, 0, false)
			require.Equal(t, hw, lso, "partition %d: the failed transaction is aborted before Reset, not left to hold readers", p)
		}

		require.NoError(t, s.Reset(txnCtx(t)))
		b4 := txnMsgs(topic, "four", 20, 20, 10)
		require.NoError(t, <-txnSend(s, txnCtx(t), b4))
		require.Equal(t, txnWant(b1, b4), txnGot(txnReadTopic(t, tg, topic, 3, true)))

		require.NoError(t, s.Close())
		require.ErrorContains(t, <-txnSend(s, txnCtx(t), b4), "closed")
	})
}

// txnPauseEndTxn is a kafka-go transport that holds every EndTxn request until released: the
// transaction is then open with all its records written.
type txnPauseEndTxn struct {
	kafkago.RoundTripper
	reached chan struct{} // receives when an EndTxn is held
	release chan struct{} // closed to let it through
}

func (p *txnPauseEndTxn) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	if _, ok := req.(*endtxn.Request); ok {
		p.reached <- struct{}{}
		select {
		case <-p.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return p.RoundTripper.RoundTrip(ctx, addr, req)
}

// A second sink with the same transactional id fences the first while the first's
// transaction is open: the first's batch fails with ErrFenced (not retryable), none of it
// becomes visible, the first stays failed (Reset says fenced, later batches fail unwritten),
// and the second commits.
func TestTxnSinkFencing(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txnsink")
		kafkatest.CreateTopic(t, tg, topic, 2, nil)
		id := "fence-" + topic
		pause := &txnPauseEndTxn{reached: make(chan struct{}), release: make(chan struct{})}
		c := tg.KafkaConfig(t, kafka.Config{WrapTransport: func(rt kafkago.RoundTripper) kafkago.RoundTripper {
			pause.RoundTripper = rt
			return pause
		}})
		first := txnNewSink(t, c, id)

		before := txnMsgs(topic, "before", 20, 20, 10)
		doneBefore := txnSend(first, txnCtx(t), before)
		<-pause.reached
		pause.release <- struct{}{} // this one commits
		require.NoError(t, <-doneBefore)

		zombie := txnMsgs(topic, "zombie", 20, 20, 10)
		doneZombie := txnSend(first, txnCtx(t), zombie)
		<-pause.reached // zombie's records are written, its commit held
		second := txnNewSink(t, tg.Kafka(t), id)
		close(pause.release)

		err := <-doneZombie
		require.ErrorIs(t, err, kafka.ErrFenced)
		require.ErrorContains(t, err, id)
		require.False(t, retry.IsRetryable(err), "fencing is final: %v", err)
		require.ErrorIs(t, first.Reset(txnCtx(t)), kafka.ErrFenced, "Reset of a fenced sink")
		later := <-txnSend(first, txnCtx(t), txnMsgs(topic, "later", 5, 5, 10))
		require.ErrorIs(t, later, kafka.ErrFenced)

		good := txnMsgs(topic, "good", 20, 20, 10)
		require.NoError(t, <-txnSend(second, txnCtx(t), good))
		require.Equal(t, txnWant(before, good), txnGot(txnReadTopic(t, tg, topic, 2, true)))
		require.Equal(t, txnWant(before, zombie, good), txnGot(txnReadTopic(t, tg, topic, 2, false)), "the zombie's records are in the log, aborted")
	})
}

// txnExpiring is a context whose deadline passes when the test says so.
type txnExpiring struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func (c *txnExpiring) Done() <-chan struct{} { return c.done }
func (c *txnExpiring) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}
func (c *txnExpiring) expire() { c.once.Do(func() { close(c.done) }) }

// A coordinator that keeps answering "not available" to the commit until the batch's deadline
// passes fails the batch with a retryable error (the pipeline retries after Reset); the
// transaction is aborted, and after Reset the next batch commits. kfake injects the answers.
func TestTxnSinkCoordinatorUnavailableIsRetryable(t *testing.T) {
	tg := kafkatest.NewFake(t)
	topic := kafkatest.Topic(t, "txnsink")
	kafkatest.CreateTopic(t, tg, topic, 2, nil)
	s := txnNewSink(t, tg.Kafka(t), topic)

	ctx := &txnExpiring{Context: txnCtx(t), done: make(chan struct{})}
	var answers atomic.Int32
	tg.Fake.ControlKey(kmsg.EndTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if answers.Add(1) == 3 {
			ctx.expire() // the deadline passes while the producer retries
		}
		if ctx.Err() != nil && !req.(*kmsg.EndTxnRequest).Commit {
			tg.Fake.DropControl() // the abort that follows goes through
			return nil, nil, false
		}
		tg.Fake.KeepControl()
		resp := req.ResponseKind().(*kmsg.EndTxnResponse)
		resp.SetVersion(req.GetVersion())
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp, nil, true
	})
	lost := txnMsgs(topic, "lost", 10, 10, 10)
	err := <-txnSend(s, ctx, lost)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, retry.IsRetryable(err), "a coordinator unavailable until the deadline may be back: %v", err)
	require.GreaterOrEqual(t, answers.Load(), int32(3))

	require.NoError(t, s.Reset(txnCtx(t)))
	kept := txnMsgs(topic, "kept", 10, 10, 10)
	require.NoError(t, <-txnSend(s, txnCtx(t), kept))
	require.Equal(t, txnWant(kept), txnGot(txnReadTopic(t, tg, topic, 2, true)))
}

// TestTxnSinkConformance runs the sink suite against the transactional sink, as
// TestSinkConformance does for the at-least-once one; it reads back committed data only, so
// a batch's messages count as written once its transaction committed.
func TestTxnSinkConformance(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		sinktest.Run(t, func(t *testing.T) sinktest.Target {
			return conformanceTarget(t, tg, "txnsink", func(c *kafka.Client) sink.Sink {
				return txnNewSink(t, c, kafkatest.Topic(t, "txnsink-id"))
			})
		})
	})
}

// A broker that goes down mid-sync fails the batch within TransportRetry with a retryable error
// that says so, not at the transaction's bound; Reset gives up as fast while it stays down, and
// the sink then refuses batches at once, naming why, so the caller's retry budget (not the
// sink) decides how long to wait. Once the broker is back, Reset repairs the producer and the
// next batch commits; nothing of the failed one is visible. The bounds asserted are far below
// the transaction timeout (60s), which the writes would wait for without the transport bound.
func TestTxnSinkBrokerDownFailsFast(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txnsink")
		kafkatest.CreateTopic(t, tg, topic, 2, nil)
		br := kafkatest.NewBreaker(t)
		const transportRetry = time.Second
		s, err := kafka.NewTxnSink(txnCtx(t), kafka.TxnConfig{
			Client: tg.KafkaConfig(t, kafka.Config{Dial: br.Dial}), TransactionalID: topic,
			TransactionTimeout: time.Minute, TransportRetry: transportRetry,
		})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		before := txnMsgs(topic, "before", 10, 10, 10)
		require.NoError(t, <-txnSend(s, txnCtx(t), before))

		br.Refuse(true)
		start := time.Now()
		err = <-txnSend(s, txnCtx(t), txnMsgs(topic, "lost", 10, 10, 10))
		failedIn := time.Since(start)
		require.Error(t, err)
		require.NotErrorIs(t, err, kafka.ErrFenced)
		require.True(t, retry.IsRetryable(err), "the broker may come back: %v", err)
		require.Contains(t, err.Error(), "unreachable")
		require.Less(t, failedIn, 20*time.Second, "the batch failed after the transport bound, not the transaction's: %v", err)

		start = time.Now()
		rerr := s.Reset(txnCtx(t))
		require.Error(t, rerr, "Reset cannot abort while the broker is down")
		require.True(t, retry.IsRetryable(rerr), "%v", rerr)
		require.Less(t, time.Since(start), 10*time.Second, "Reset gave up fast: %v", rerr)
		refused := <-txnSend(s, txnCtx(t), txnMsgs(topic, "refused", 10, 10, 10))
		require.ErrorContains(t, refused, "unreachable", "the refusal says why")
		require.True(t, retry.IsRetryable(refused), "%v", refused)

		br.Refuse(false)
		require.NoError(t, s.Reset(txnCtx(t)))
		after := txnMsgs(topic, "after", 10, 10, 10)
		require.NoError(t, <-txnSend(s, txnCtx(t), after))
		require.Equal(t, txnWant(before, after), txnGot(txnReadTopic(t, tg, topic, 2, true)))
	})
}
