package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/listoffsets"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/sink"
)

// txnEndKey marks the record txnMarkEnd writes after a test's transactions: a reader that
// reached it on every partition has seen everything before it.
const txnEndKey = "txn-test-end"

type txnRec struct {
	topic     string
	partition int
	key       string
	value     string // "<nil>" for a tombstone
}

func txnCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// txnCommitOne writes msgs in one committed transaction.
func txnCommitOne(t *testing.T, p *kafka.TxnProducer, msgs []sink.Message) {
	t.Helper()
	require.NoError(t, p.Begin())
	require.NoError(t, p.Produce(txnCtx(t), msgs))
	require.NoError(t, p.Commit(txnCtx(t)))
}

func txnNewProducer(t *testing.T, client *kafka.Client, id string, log *slog.Logger) *kafka.TxnProducer {
	t.Helper()
	p, err := kafka.NewTxnProducer(txnCtx(t), kafka.TxnConfig{Client: client, TransactionalID: id, Logger: log})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// txnMsgs is n messages for topic; key i%keys, value "<tag>-<i>", every 7th a tombstone.
func txnMsgs(topic, tag string, n, keys, valueSize int) []sink.Message {
	out := make([]sink.Message, n)
	for i := range out {
		m := sink.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%keys), Headers: []sink.Header{{Key: "tag", Value: []byte(tag)}}}
		if i%7 != 6 {
			m.Value = append(fmt.Appendf(nil, "%s-%d-", tag, i), bytes.Repeat([]byte("x"), valueSize)...)
		}
		out[i] = m
	}
	return out
}

// txnWant is what a reader should see of msgs: per key, the values in order.
func txnWant(msgs ...[]sink.Message) map[string][]string {
	out := map[string][]string{}
	for _, ms := range msgs {
		for _, m := range ms {
			k := m.Topic + "/" + string(m.Key)
			out[k] = append(out[k], txnValue(m.Value))
		}
	}
	return out
}

func txnValue(v []byte) string {
	if v == nil {
		return "<nil>"
	}
	return string(v)
}

func txnGot(recs []txnRec) map[string][]string {
	out := map[string][]string{}
	for _, r := range recs {
		k := r.topic + "/" + r.key
		out[k] = append(out[k], r.value)
	}
	return out
}

// txnMarkEnd writes one plain (non-transactional) record to every partition of topic. A
// read_committed reader sees it only after every transaction before it ended.
func txnMarkEnd(t *testing.T, tg kafkatest.Target, topic string, partitions int) {
	t.Helper()
	c := tg.Client(t)
	for p := range partitions {
		res, err := c.Produce(txnCtx(t), &kafkago.ProduceRequest{
			Topic: topic, Partition: p, RequiredAcks: kafkago.RequireAll,
			Records: kafkago.NewRecordReader(kafkago.Record{Key: kafkago.NewBytes([]byte(txnEndKey)), Value: kafkago.NewBytes([]byte("end"))}),
		})
		require.NoError(t, err)
		require.NoError(t, res.Error)
	}
}

// txnReadCommitted reads topics (name -> partitions, ended with txnMarkEnd) with franz-go's
// consumer at isolation.level=read_committed: a reader independent of kafka-go, which drops
// aborted transactions' records as Kafka's clients do.
func txnReadCommitted(t *testing.T, tg kafkatest.Target, topics map[string]int) []txnRec {
	t.Helper()
	names := make([]string, 0, len(topics))
	pending := map[string]bool{}
	for name, n := range topics {
		names = append(names, name)
		for p := range n {
			pending[fmt.Sprintf("%s/%d", name, p)] = true
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(tg.Brokers...), kgo.ConsumeTopics(names...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	require.NoError(t, err)
	defer cl.Close()
	ctx := txnCtx(t)
	var out []txnRec
	for len(pending) > 0 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "read_committed: end marks not reached on %v", pending)
		for _, e := range fs.Errors() {
			require.NoError(t, e.Err, "read_committed %s/%d", e.Topic, e.Partition)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == txnEndKey {
				delete(pending, fmt.Sprintf("%s/%d", r.Topic, r.Partition))
				return
			}
			out = append(out, txnRec{r.Topic, int(r.Partition), string(r.Key), txnValue(r.Value)})
		})
	}
	return out
}

// txnReadUncommitted reads topic read_uncommitted (kafka.Client.ScanWith), control records skipped.
func txnReadUncommitted(t *testing.T, tg kafkatest.Target, topic string) []txnRec {
	var out []txnRec
	for _, m := range kafkatest.ReadUncommitted(t, tg, topic) {
		if string(m.Key) != txnEndKey {
			out = append(out, txnRec{topic, m.Partition, string(m.Key), txnValue(m.Value)})
		}
	}
	return out
}

// txnKcatCommitted reads topic with kcat (librdkafka) at isolation.level=read_committed, on
// the real broker only.
func txnKcatCommitted(t *testing.T, tg kafkatest.Target, topic string) []txnRec {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	require.NoError(t, err, "kcat is needed to check with an independent client (scripts/lib.sh ks_ensure_tools)")
	cmd := exec.CommandContext(txnCtx(t), kcat, "-C", "-q", "-e", "-o", "beginning", "-b", strings.Join(tg.Brokers, ","),
		"-t", topic, "-X", "isolation.level=read_committed", "-Z", "-f", "%p\t%k\t%s\n")
	out, err := cmd.Output()
	require.NoError(t, err, "kcat: %s", out)
	var recs []txnRec
	for line := range strings.Lines(string(out)) {
		f := strings.SplitN(strings.TrimSuffix(line, "\n"), "\t", 3)
		require.Len(t, f, 3, "kcat line %q", line)
		if f[1] == txnEndKey {
			continue
		}
		var p int
		fmt.Sscan(f[0], &p)
		v := f[2]
		if v == "NULL" { // -Z prints NULL for a null value
			v = "<nil>"
		}
		recs = append(recs, txnRec{topic, p, f[1], v})
	}
	return recs
}

// A committed transaction is seen by read_committed readers exactly once, in key order; an
// aborted one is not, though it is in the log (read_uncommitted sees it).
func TestTxnCommitAndAbortVisibility(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		for _, tc := range []struct {
			name   string
			commit bool
		}{{"commit", true}, {"abort", false}} {
			t.Run(tc.name, func(t *testing.T) {
				topic := kafkatest.Topic(t, "txn")
				kafkatest.CreateTopic(t, tg, topic, 3, nil)
				p := txnNewProducer(t, tg.Kafka(t), topic, nil)
				msgs := txnMsgs(topic, "a", 60, 20, 10)

				require.NoError(t, p.Begin())
				require.NoError(t, p.Produce(txnCtx(t), msgs[:30]))
				require.NoError(t, p.Produce(txnCtx(t), msgs[30:]))
				if tc.commit {
					require.NoError(t, p.Commit(txnCtx(t)))
				} else {
					require.NoError(t, p.Abort(txnCtx(t)))
				}
				txnMarkEnd(t, tg, topic, 3)

				want := txnWant(msgs)
				committed := txnReadCommitted(t, tg, map[string]int{topic: 3})
				if tc.commit {
					require.Equal(t, want, txnGot(committed))
				} else {
					require.Empty(t, committed, "aborted records visible to read_committed")
				}
				require.Equal(t, want, txnGot(txnReadUncommitted(t, tg, topic)), "read_uncommitted sees every record written")
				if tg.Fake == nil {
					kc := txnKcatCommitted(t, tg, topic)
					if tc.commit {
						require.Equal(t, want, txnGot(kc), "kcat read_committed")
					} else {
						require.Empty(t, kc, "kcat read_committed sees aborted records")
					}
				}
			})
		}
	})
}

// Several transactions over two topics and five partitions, many batches per partition per
// transaction, one aborted in the middle: the sequences carry on across batches, Produce calls
// and transactions (the broker checks them), and read_committed sees the committed ones only.
func TestTxnManyPartitionsAndTransactions(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		t1, t2 := kafkatest.Topic(t, "txn1"), kafkatest.Topic(t, "txn2")
		kafkatest.CreateTopic(t, tg, t1, 3, nil)
		kafkatest.CreateTopic(t, tg, t2, 2, nil)
		p := txnNewProducer(t, tg.Kafka(t), t1, nil)

		var committed [][]sink.Message
		for txn := range 5 {
			// 4 KiB values, 300 per topic per Produce: about 400 KiB per partition, so the
			// 512 KiB batch limit splits a partition's records over the two Produce calls'
			// batches and, for the bigger ones, within one.
			tag := fmt.Sprintf("t%d", txn)
			a := append(txnMsgs(t1, tag+"a", 300, 40, 4096), txnMsgs(t2, tag+"a", 300, 40, 4096)...)
			b := append(txnMsgs(t1, tag+"b", 300, 40, 4096), txnMsgs(t2, tag+"b", 300, 40, 4096)...)
			require.NoError(t, p.Begin())
			require.NoError(t, p.Produce(txnCtx(t), a), "txn %d", txn)
			require.NoError(t, p.Produce(txnCtx(t), b), "txn %d", txn)
			if txn == 2 {
				require.NoError(t, p.Abort(txnCtx(t)))
				continue
			}
			require.NoError(t, p.Commit(txnCtx(t)), "txn %d", txn)
			committed = append(committed, a, b)
		}
		txnMarkEnd(t, tg, t1, 3)
		txnMarkEnd(t, tg, t2, 2)

		got := txnReadCommitted(t, tg, map[string]int{t1: 3, t2: 2})
		require.Equal(t, txnWant(committed...), txnGot(got))
		parts := map[string]bool{}
		for _, r := range got {
			parts[fmt.Sprintf("%s/%d", r.topic, r.partition)] = true
		}
		require.Len(t, parts, 5, "every partition of both topics written")
	})
}

// A second producer with the same transactional id fences the first: the first's next
// Produce, Commit or Abort says so with ErrFenced (a Produce to a partition already in the
// transaction fails first, as the leader cannot tell fencing from a timed-out transaction),
// and none of the first's open transaction becomes visible. The second one works.
func TestTxnFencing(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		for _, tc := range []struct {
			name string
			// after runs on the fenced producer and returns the error that must be ErrFenced.
			after func(ctx context.Context, t *testing.T, p *kafka.TxnProducer, more []sink.Message) error
		}{
			{"commit", func(ctx context.Context, _ *testing.T, p *kafka.TxnProducer, _ []sink.Message) error {
				return p.Commit(ctx)
			}},
			{"produce then end", func(ctx context.Context, t *testing.T, p *kafka.TxnProducer, more []sink.Message) error {
				// The leader may take the batch (kfake does: fencing is the coordinator's),
				// refuse it as fenced, or refuse it with INVALID_PRODUCER_EPOCH, which the
				// producer cannot tell from a timed-out transaction: then Abort asks.
				err := p.Produce(ctx, more)
				t.Logf("produce after fencing: %v", err)
				switch {
				case err == nil:
					return p.Commit(ctx)
				case errors.Is(err, kafka.ErrFenced):
					return err
				}
				return p.Abort(ctx)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				topic := kafkatest.Topic(t, "txn")
				kafkatest.CreateTopic(t, tg, topic, 2, nil)
				id := "fence-" + topic
				first := txnNewProducer(t, tg.Kafka(t), id, nil)
				require.NoError(t, first.Begin())
				require.NoError(t, first.Produce(txnCtx(t), txnMsgs(topic, "zombie", 20, 20, 10)))

				second := txnNewProducer(t, tg.Kafka(t), id, nil)

				err := tc.after(txnCtx(t), t, first, txnMsgs(topic, "zombie2", 20, 20, 10))
				require.ErrorIs(t, err, kafka.ErrFenced)
				require.Contains(t, err.Error(), id)
				require.ErrorIs(t, first.Begin(), kafka.ErrFenced, "a fenced producer stays fenced")

				good := txnMsgs(topic, "good", 20, 20, 10)
				txnCommitOne(t, second, good)
				txnMarkEnd(t, tg, topic, 2)
				require.Equal(t, txnWant(good), txnGot(txnReadCommitted(t, tg, map[string]int{topic: 2})))
			})
		}
	})
}

// The coordinator's "not now" answers are retried: NOT_COORDINATOR and
// COORDINATOR_LOAD_IN_PROGRESS to InitProducerID (a fresh cluster loading
// __transaction_state), CONCURRENT_TRANSACTIONS to AddPartitionsToTxn and EndTxn (the previous
// transaction's markers still being written). kfake injects them.
func TestTxnRetriesTransientCoordinatorAnswers(t *testing.T) {
	tg := kafkatest.NewFake(t)
	topic := kafkatest.Topic(t, "txn")
	kafkatest.CreateTopic(t, tg, topic, 2, nil)

	var injected [3]atomic.Int32
	inject := func(key kmsg.Key, slot int, codes ...int16) {
		tg.Fake.ControlKey(key.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
			n := injected[slot].Add(1)
			if int(n) > len(codes) {
				tg.Fake.DropControl()
				return nil, nil, false
			}
			tg.Fake.KeepControl()
			resp := req.ResponseKind()
			resp.SetVersion(req.GetVersion())
			switch r := resp.(type) {
			case *kmsg.InitProducerIDResponse:
				r.ErrorCode = codes[n-1]
			case *kmsg.EndTxnResponse:
				r.ErrorCode = codes[n-1]
			case *kmsg.AddPartitionsToTxnResponse:
				for _, rt := range req.(*kmsg.AddPartitionsToTxnRequest).Topics {
					st := kmsg.NewAddPartitionsToTxnResponseTopic()
					st.Topic = rt.Topic
					for _, p := range rt.Partitions {
						sp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
						sp.Partition, sp.ErrorCode = p, codes[n-1]
						st.Partitions = append(st.Partitions, sp)
					}
					r.Topics = append(r.Topics, st)
				}
			}
			return resp, nil, true
		})
	}
	inject(kmsg.InitProducerID, 0, kerr.NotCoordinator.Code, kerr.CoordinatorLoadInProgress.Code, kerr.NotCoordinator.Code)
	inject(kmsg.AddPartitionsToTxn, 1, kerr.ConcurrentTransactions.Code, kerr.CoordinatorNotAvailable.Code)
	inject(kmsg.EndTxn, 2, kerr.ConcurrentTransactions.Code, kerr.ConcurrentTransactions.Code)

	var logs logtest.Buffer
	p := txnNewProducer(t, tg.Kafka(t), topic, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	msgs := txnMsgs(topic, "a", 10, 10, 10)
	txnCommitOne(t, p, msgs)

	// Each hook saw its injected answers and then the request that went through.
	require.EqualValues(t, 4, injected[0].Load(), "InitProducerID requests")
	require.EqualValues(t, 3, injected[1].Load(), "AddPartitionsToTxn requests")
	require.EqualValues(t, 3, injected[2].Load(), "EndTxn requests")
	for _, req := range []string{"InitProducerID", "AddPartitionsToTxn", "EndTxn"} {
		require.Contains(t, logs.String(), "request="+req, "retries of %s logged", req)
	}
	txnMarkEnd(t, tg, topic, 2)
	require.Equal(t, txnWant(msgs), txnGot(txnReadCommitted(t, tg, map[string]int{topic: 2})))
}

// A connection that breaks under a transactional request (the broker going away mid-request)
// is retried: AddPartitionsToTxn, Produce and EndTxn are idempotent for one producer id and
// epoch, and a resent batch keeps its sequence, so nothing is written twice.
func TestTxnRetriesBrokenConnections(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txn")
		kafkatest.CreateTopic(t, tg, topic, 2, nil)
		br := kafkatest.NewBreaker(t)
		client := tg.KafkaConfig(t, kafka.Config{Dial: br.Dial})
		p := txnNewProducer(t, client, topic, nil)

		var all [][]sink.Message
		for i, key := range []kmsg.Key{kmsg.AddPartitionsToTxn, kmsg.Produce, kmsg.EndTxn} {
			msgs := txnMsgs(topic, fmt.Sprint(i), 20, 20, 10)
			br.Drop(key.Int16(), 1)
			txnCommitOne(t, p, msgs)
			require.Equal(t, 1, br.Dropped(key.Int16()), "%s dropped", key.Name())
			all = append(all, msgs)
		}
		txnMarkEnd(t, tg, topic, 2)
		got := txnReadCommitted(t, tg, map[string]int{topic: 2})
		require.Equal(t, txnWant(all...), txnGot(got))
	})
}

// A Produce the broker refuses (here MESSAGE_TOO_LARGE) leaves the transaction abort-only:
// Commit refuses it, Abort ends it and re-initialises the producer (epoch bump, sequences back
// to 0), and the next transaction commits. Nothing of the failed one is visible.
func TestTxnFailedProduceAbortsAndRecovers(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txn")
		kafkatest.CreateTopic(t, tg, topic, 2, map[string]string{"max.message.bytes": "4096"})
		p := txnNewProducer(t, tg.Kafka(t), topic, nil)

		require.NoError(t, p.Begin())
		require.NoError(t, p.Produce(txnCtx(t), txnMsgs(topic, "lost", 20, 20, 10)))
		big := []sink.Message{{Topic: topic, Key: []byte("k1"), Value: bytes.Repeat([]byte("x"), 10000)}}
		err := p.Produce(txnCtx(t), big)
		require.ErrorIs(t, err, kafkago.MessageSizeTooLarge)
		require.Contains(t, err.Error(), topic+"/")
		require.Error(t, p.Commit(txnCtx(t)), "a transaction with a failed Produce is not committed")
		require.NoError(t, p.Abort(txnCtx(t)))

		var kept [][]sink.Message
		for i := range 2 {
			msgs := txnMsgs(topic, fmt.Sprint("kept", i), 20, 20, 10)
			txnCommitOne(t, p, msgs)
			kept = append(kept, msgs)
		}
		txnMarkEnd(t, tg, topic, 2)
		require.Equal(t, txnWant(kept...), txnGot(txnReadCommitted(t, tg, map[string]int{topic: 2})))
	})
}

// A Produce whose answer is lost (here its ctx ends while the broker writes the batch) leaves
// the partition's sequence unknown: the broker has the batch, the producer did not count it.
// Abort must restart the sequences (epoch bump); reusing the old sequence would make the
// broker take the next transaction's first batch for a duplicate of the aborted one and drop
// it while answering success. kfake makes the answer lost deterministically.
func TestTxnLostProduceAnswerRestartsSequences(t *testing.T) {
	tg := kafkatest.NewFake(t)
	topic := kafkatest.Topic(t, "txn")
	kafkatest.CreateTopic(t, tg, topic, 1, nil)
	p := txnNewProducer(t, tg.Kafka(t), topic, nil)

	require.NoError(t, p.Begin())
	require.NoError(t, p.Produce(txnCtx(t), txnMsgs(topic, "first", 5, 5, 10)))
	ctx, cancel := context.WithCancel(txnCtx(t))
	returned := make(chan struct{})
	tg.Fake.ControlKey(kmsg.Produce.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		// The client stops waiting; once it has given up, the cluster writes the batch.
		cancel()
		tg.Fake.SleepControl(func() { <-returned })
		return nil, nil, false
	})
	lost := txnMsgs(topic, "lost", 5, 5, 10)
	require.ErrorIs(t, p.Produce(ctx, lost), context.Canceled)
	close(returned)
	require.Eventually(t, func() bool { return len(txnReadUncommitted(t, tg, topic)) == 10 },
		30*time.Second, 10*time.Millisecond, "the batch whose answer was lost gets written")
	require.NoError(t, p.Abort(txnCtx(t)))

	kept := txnMsgs(topic, "kept", 5, 5, 10)
	txnCommitOne(t, p, kept)
	txnMarkEnd(t, tg, topic, 1)
	require.Equal(t, txnWant(kept), txnGot(txnReadCommitted(t, tg, map[string]int{topic: 1})))
}

// One transaction can hold more records for a partition than one record batch the topic
// accepts (max.message.bytes): Produce cuts them into batches that fit, sent in order with
// their sequences, and read_committed readers see them all, in order. A message as large as
// the limit allows (sink.MaxSize) fits a batch on its own; one byte more is refused before
// anything is sent, naming where it was going.
func TestTxnSplitsAPartitionIntoBatchesThatFit(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		const maxBytes = 20000
		topic := kafkatest.Topic(t, "txnsplit")
		kafkatest.CreateTopic(t, tg, topic, 1, map[string]string{"max.message.bytes": fmt.Sprint(maxBytes)})
		p, err := kafka.NewTxnProducer(txnCtx(t), kafka.TxnConfig{Client: tg.Kafka(t), TransactionalID: topic, MaxMessageBytes: maxBytes})
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })

		sized := func(key string, size int) sink.Message {
			m := sink.Message{Topic: topic, Key: []byte(key)}
			m.Value = bytes.Repeat([]byte("x"), size-sink.Size(&m))
			require.Equal(t, size, sink.Size(&m))
			return m
		}
		limit := sink.MaxSize(maxBytes)
		// Three batches' worth of small messages, then one as large as a batch holds.
		msgs := append(txnMsgs(topic, "small", 30, 1, 1900), sized("k0", limit))
		txnCommitOne(t, p, msgs)

		require.NoError(t, p.Begin())
		err = p.Produce(txnCtx(t), []sink.Message{sized("k0", limit+1)})
		require.ErrorIs(t, err, kafkago.MessageSizeTooLarge)
		require.ErrorContains(t, err, fmt.Sprintf("%s/0 (key \"k0\") is %d bytes, over the limit of %d", topic, limit+1, limit))
		require.NoError(t, p.Abort(txnCtx(t)))

		txnMarkEnd(t, tg, topic, 1)
		require.Equal(t, txnWant(msgs), txnGot(txnReadCommitted(t, tg, map[string]int{topic: 1})))
	})
}

// A committed transaction is visible to read_committed readers as soon as Commit returns:
// the last stable offset of each of its partitions is past it, so a reader that starts then
// (a tail from the end, the next pass's cursor load) neither starts before it nor stops short
// of it. Kafka answers EndTxn before the partitions have their commit markers, and on the real
// broker most commits were not yet visible right after it: twenty in a row make that certain
// to show.
func TestTxnCommitIsVisibleWhenItReturns(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "txnvisible")
		kafkatest.CreateTopic(t, tg, topic, 2, nil)
		p := txnNewProducer(t, tg.Kafka(t), topic, nil)
		committed := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic})
		all := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic, Uncommitted: true})
		for i := range 20 {
			txnCommitOne(t, p, txnMsgs(topic, fmt.Sprint("t", i), 4, 4, 10))
			got, err := committed.Offsets(txnCtx(t), []int{0, 1})
			require.NoError(t, err)
			want, err := all.Offsets(txnCtx(t), []int{0, 1})
			require.NoError(t, err)
			require.Equal(t, want, got, "transaction %d: the last stable offsets right after Commit are the high watermarks", i)
		}
	})
}

// txnListOffsetsTopics sends the topics of every ListOffsets request through it to seen.
type txnListOffsetsTopics struct {
	kafkago.RoundTripper
	seen chan []string
}

func (l *txnListOffsetsTopics) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	if r, ok := req.(*listoffsets.Request); ok {
		var topics []string
		for _, t := range r.Topics {
			topics = append(topics, t.Topic)
		}
		select {
		case l.seen <- topics:
		default: // the test reads only the latest ones
		}
	}
	return l.RoundTripper.RoundTrip(ctx, addr, req)
}

// Two producers share a partition, as pipelines share their cursor topic's: the second's
// commit (its own topic and the shared partition) returns only once read_committed readers
// see all of it, which on the shared partition means once the first producer's transaction,
// open since before, has ended. Once its own topic is stable, it asks only for the shared
// partition (it asked for every topic, a request each, at every attempt), and right after
// Commit both are at their high watermark.
func TestTxnCommitWaitsForASharedPartition(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		own, shared := kafkatest.Topic(t, "txnown"), kafkatest.Topic(t, "txnshared")
		kafkatest.CreateTopic(t, tg, own, 2, nil)
		kafkatest.CreateTopic(t, tg, shared, 1, nil)
		first := txnNewProducer(t, tg.Kafka(t), "first-"+shared, nil)
		require.NoError(t, first.Begin())
		require.NoError(t, first.Produce(txnCtx(t), txnMsgs(shared, "first", 1, 1, 10)))

		var logs logtest.Buffer
		lo := &txnListOffsetsTopics{seen: make(chan []string, 10000)}
		c := tg.KafkaConfig(t, kafka.Config{WrapTransport: func(rt kafkago.RoundTripper) kafkago.RoundTripper { lo.RoundTripper = rt; return lo }})
		second := txnNewProducer(t, c, "second-"+shared, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		require.NoError(t, second.Begin())
		require.NoError(t, second.Produce(txnCtx(t), append(txnMsgs(own, "second", 6, 6, 10), txnMsgs(shared, "second", 1, 1, 10)...)))
		committed := make(chan error, 1)
		go func() { committed <- second.Commit(txnCtx(t)) }()
		logs.Await(t, "the second commit waiting for the shared partition alone", func(s string) bool {
			for _, line := range strings.Split(s, "\n") {
				if strings.Contains(line, "request=ListOffsets") && strings.Contains(line, shared+"/0 at") && !strings.Contains(line, own+"/") {
					return true
				}
			}
			return false
		})
		select {
		case err := <-committed:
			t.Fatalf("the second commit returned (%v) while the first transaction holds the shared partition", err)
		default:
		}
		for len(lo.seen) > 0 { // the requests up to now
			<-lo.seen
		}
		select {
		case topics := <-lo.seen:
			require.Equal(t, []string{shared}, topics, "once its own topic is stable, only the shared partition is asked for")
		case <-txnCtx(t).Done():
			t.Fatal("no ListOffsets request after the shared partition was found behind")
		}
		require.NoError(t, first.Commit(txnCtx(t)))
		require.NoError(t, <-committed)

		for topic, parts := range map[string][]int{own: {0, 1}, shared: {0}} {
			got, err := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic}).Offsets(txnCtx(t), parts)
			require.NoError(t, err)
			want, err := tg.Kafka(t).NewReader(kafka.ReaderConfig{Topic: topic, Uncommitted: true}).Offsets(txnCtx(t), parts)
			require.NoError(t, err)
			require.Equal(t, want, got, "%s: the last stable offsets right after Commit are the high watermarks", topic)
		}
	})
}
