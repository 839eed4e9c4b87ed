package pipeline_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/endtxn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/pipelinetest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/retry"
)

// failNthCommit answers the nth EndTxn that commits with INVALID_TXN_STATE without sending
// it: the sink finds the commit failed, and aborts the transaction, still open.
type failNthCommit struct {
	kafkago.RoundTripper
	n, seen atomic.Int32
}

func (f *failNthCommit) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	if r, ok := req.(*endtxn.Request); ok && r.Committed && f.seen.Add(1) == f.n.Load() {
		return &endtxn.Response{ErrorCode: int16(kafkago.InvalidTransactionState)}, nil
	}
	return f.RoundTripper.RoundTrip(ctx, addr, req)
}

// requireCursorsWithTheirRecords fails unless the committed cursors (read_committed) are seq
// 1 to want, and each one covers exactly the committed records before it: the topic (one
// partition, in the API's order) holds c.Records records up to the cursor's last updatedAt,
// and the last cursor covers every committed record, none committed without its cursor.
func requireCursorsWithTheirRecords(t *testing.T, env *pipelinetest.Env, want int) {
	t.Helper()
	var cursors []cursor.Cursor
	for _, m := range kafkatest.ReadAll(t, env.Target, env.CursorTopic) {
		c, err := cursor.Unmarshal(m.Value)
		require.NoError(t, err)
		cursors = append(cursors, c)
	}
	require.Len(t, cursors, want, "committed cursors")
	data := kafkatest.ReadAll(t, env.Target, env.Topic)
	for i, c := range cursors {
		require.EqualValues(t, i+1, c.Seq, "cursor %d", i)
		require.LessOrEqual(t, c.Records, int64(len(data)), "cursor seq %d covers records that are not committed", c.Seq)
		u, err := env.Codec.Decode(data[c.Records-1].Value)
		require.NoError(t, err)
		assert.True(t, u.UpdatedAt.Equal(c.LastUpdatedAt), "cursor seq %d: its last record is at %s, the cursor at %s", c.Seq, u.UpdatedAt, c.LastUpdatedAt)
	}
	require.EqualValues(t, len(data), cursors[len(cursors)-1].Records, "records committed that no cursor covers")
}

// TestExactlyOnceWithTxnSink: a pipeline writing with kafka.TxnSink, three batches in flight,
// whose third transaction fails to commit: read_committed sees the first two batches with
// their cursors, and nothing of the third, neither records nor cursor (read_uncommitted sees
// its records, aborted). The next pass resumes from the second cursor and every record
// version is in the topic exactly once, each cursor committed with its records.
func TestExactlyOnceWithTxnSink(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		fail := &failNthCommit{}
		fail.n.Store(3)
		env := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: 1000, PageSize: 100, TieWidth: 3, Seed: 7},
			BatchRecords: 200, MaxInFlight: 3, ExactlyOnce: true,
			SinkTransport: func(rt kafkago.RoundTripper) kafkago.RoundTripper { fail.RoundTripper = rt; return fail }})

		_, err := env.Pipeline.Pass(t.Context())
		require.ErrorIs(t, err, pipeline.ErrProduce)
		require.ErrorIs(t, err, kafkago.InvalidTransactionState)
		requireCursorsWithTheirRecords(t, env, 2)
		assert.Greater(t, len(kafkatest.ReadUncommitted(t, tg, env.Topic)), len(kafkatest.ReadAll(t, tg, env.Topic)),
			"the failed batch's records were written, then aborted")
		assert.Len(t, kafkatest.ReadUncommitted(t, tg, env.CursorTopic), 3, "the failed batch's cursor was written, then aborted; the batches behind it never were")
		c := kafkatest.Cursor(t, tg, env.CursorTopic, env.Name)
		assert.EqualValues(t, 2, c.Seq, "the cursor loaded")

		st, err := env.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		assert.EqualValues(t, 1000-c.Records, st.Produced, "the second pass resumes after the second batch")
		env.RequireInSync(t)
		_, n := env.Latest(t)
		assert.Equal(t, 1000, n, "every record version exactly once (read_committed)")
		requireCursorsWithTheirRecords(t, env, 4) // batches of three pages, ties kept whole
	})
}

// holdNthCommit holds the nth EndTxn that commits until released.
type holdNthCommit struct {
	kafkago.RoundTripper
	n       int32
	seen    atomic.Int32
	reached chan struct{}
	release chan struct{}
}

func (h *holdNthCommit) RoundTrip(ctx context.Context, addr net.Addr, req protocol.Message) (protocol.Message, error) {
	if r, ok := req.(*endtxn.Request); ok && r.Committed && h.seen.Add(1) == h.n {
		close(h.reached)
		<-h.release
	}
	return h.RoundTripper.RoundTrip(ctx, addr, req)
}

// TestExactlyOnceFencedPass: a second instance starts (a TxnSink with the same transactional
// id) while the pass's second transaction is about to commit. The pass fails with ErrFenced,
// not retryable, naming the pipeline; read_committed sees only the first batch and its
// cursor, nothing the fenced instance wrote after.
func TestExactlyOnceFencedPass(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		hold := &holdNthCommit{n: 2, reached: make(chan struct{}), release: make(chan struct{})}
		env := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: 1000, PageSize: 100, Seed: 7},
			BatchRecords: 200, MaxInFlight: 3, ExactlyOnce: true,
			SinkTransport: func(rt kafkago.RoundTripper) kafkago.RoundTripper { hold.RoundTripper = rt; return hold }})

		passErr := make(chan error, 1)
		go func() {
			_, err := env.Pipeline.Pass(t.Context())
			passErr <- err
		}()
		<-hold.reached
		other, err := kafka.NewTxnSink(t.Context(), kafka.TxnConfig{Client: tg.Kafka(t), TransactionalID: "keysetsync-" + env.Topic})
		require.NoError(t, err)
		t.Cleanup(func() { other.Close() })
		close(hold.release)

		err = <-passErr
		require.ErrorIs(t, err, pipeline.ErrFenced)
		require.ErrorIs(t, err, kafka.ErrFenced)
		assert.False(t, retry.IsRetryable(err), "fencing is final: %v", err)
		assert.ErrorContains(t, err, `pipeline "test" is fenced: another instance`)
		requireCursorsWithTheirRecords(t, env, 1)
	})
}
