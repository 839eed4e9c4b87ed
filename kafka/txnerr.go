package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/keysetsync/keysetsync/retry"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/sink"
)

// ErrFenced means another producer with the same transactional id took over: it called
// InitProducerID after this one, which bumped the epoch and aborted this producer's open
// transaction. The producer is dead; none of its open transaction's records become visible to
// read_committed readers. Errors wrapping it name the transactional id.
//
// It is the transaction coordinator's PRODUCER_FENCED (Kafka 2.7+) or, from older
// coordinators, INVALID_PRODUCER_EPOCH, to AddPartitionsToTxn, EndTxn or InitProducerID, and a
// partition leader's PRODUCER_FENCED. A partition leader's INVALID_PRODUCER_EPOCH is ambiguous
// (the Kafka 4.x leader answers it to a fenced producer's batch): Produce returns it as an
// ordinary failure and the Abort that must follow asks the coordinator, whose EndTxn answers
// PRODUCER_FENCED.
//
// One other cause reads the same and cannot be told apart in this protocol version: a
// transaction that stayed open past TransactionTimeout is aborted by the coordinator with an
// epoch bump, and its EndTxn then answers PRODUCER_FENCED too. Either way the remedy is a new
// producer. Kafka's InitProducerID would let this producer take its id back after a timeout,
// but it (and kfake more so) also accepts a stale epoch in the window after another producer's
// fencing bump, which would revive a zombie, so this producer does not try.
//
// It is sink.ErrFenced, so that callers that know only the sink.Sink can tell it (errors.Is),
// and it is not retryable (retry.IsRetryable).
var ErrFenced = sink.ErrFenced

// Names kafka-go lacks or names after their pre-transaction meaning.
const (
	txnNotCoordinator          = kafkago.NotCoordinatorForGroup       // 16 NOT_COORDINATOR
	txnCoordinatorNotAvailable = kafkago.GroupCoordinatorNotAvailable // 15 COORDINATOR_NOT_AVAILABLE
	txnCoordinatorLoading      = kafkago.GroupLoadInProgress          // 14 COORDINATOR_LOAD_IN_PROGRESS
	txnOperationNotAttempted   = kafkago.Error(55)                    // OPERATION_NOT_ATTEMPTED
)

// txnIsKafka reports whether err carries a broker's error code (as opposed to a transport
// failure: dial, EOF, timeout, a request kafka-go could not route).
func txnIsKafka(err error) bool {
	var ke kafkago.Error
	return errors.As(err, &ke)
}

// txnTransport reports whether err is a transport failure that a retry may cure. The answer
// of a request that failed this way is unknown.
func txnTransport(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && !txnIsKafka(err) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// txnCoordinatorTransient: answers of the transaction coordinator that say "not now", retried
// with the same request: the coordinator moved or is loading the transaction log (a fresh
// cluster answers NOT_COORDINATOR while __transaction_state is created), or the previous
// transaction's markers are still being written (CONCURRENT_TRANSACTIONS right after EndTxn).
// kafka-go's transport looks the coordinator up again for every transactional request, so a
// moved coordinator is found by the retry.
func txnCoordinatorTransient(ctx context.Context, err error) bool {
	return errors.Is(err, txnNotCoordinator) || errors.Is(err, txnCoordinatorNotAvailable) ||
		errors.Is(err, txnCoordinatorLoading) || errors.Is(err, kafkago.ConcurrentTransactions) ||
		errors.Is(err, kafkago.TransactionCoordinatorFenced) || errors.Is(err, kafkago.RequestTimedOut) ||
		txnTransport(ctx, err)
}

// txnCoordinatorFenced: answers of the transaction coordinator that mean another producer
// took over (see ErrFenced).
func txnCoordinatorFenced(err error) bool {
	return errors.Is(err, kafkago.ProducerFenced) || errors.Is(err, kafkago.InvalidProducerEpoch)
}

// txnProduceRetriable: answers of a partition leader after which the same batch, with the
// same sequence, is sent again. Idempotence makes that safe when the first one was written
// after all: the broker answers the duplicate with the first one's offset (or
// DUPLICATE_SEQUENCE_NUMBER), writing nothing twice.
func txnProduceRetriable(ctx context.Context, err error) bool {
	for _, e := range []kafkago.Error{
		kafkago.NotLeaderForPartition, kafkago.LeaderNotAvailable, kafkago.RequestTimedOut,
		kafkago.NotEnoughReplicas, kafkago.NotEnoughReplicasAfterAppend, kafkago.NetworkException,
		kafkago.KafkaStorageError, kafkago.UnknownTopicOrPartition, kafkago.ConcurrentTransactions,
		kafkago.FencedLeaderEpoch, kafkago.UnknownLeaderEpoch, kafkago.BrokerNotAvailable,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return txnTransport(ctx, err)
}

// txnBackoff is an exponential backoff with jitter between retries of a transient answer.
type txnBackoff struct{ next time.Duration }

const (
	txnBackoffMin = 5 * time.Millisecond
	txnBackoffMax = time.Second
)

// wait sleeps the next backoff, or returns ctx's error when ctx ends first.
func (b *txnBackoff) wait(ctx context.Context) error {
	if b.next == 0 {
		b.next = txnBackoffMin
	}
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(2*b.next, txnBackoffMax)
	return retry.Sleep(ctx, d)
}

// txnTransportGate bounds how long transport failures in a row (connection refused or reset,
// a broker that cannot be reached) are retried: about as long as kafka-go's writer retries
// them, so that a broker that is down fails the batch within seconds with a retryable error
// and the caller's retry loop (which logs it and counts it against its budget) takes over,
// instead of a silent wait until the transaction's bound. A broker's answer, even a transient
// one (NOT_COORDINATOR, CONCURRENT_TRANSACTIONS, ...), restarts the count: the broker is there
// and says "not now", retried until ctx ends.
type txnTransportGate struct {
	budget time.Duration
	since  time.Time // first transport failure of the current run; zero after an answer
}

// allow reports whether a retry of err is still within the budget, and records err.
func (g *txnTransportGate) allow(ctx context.Context, err error) bool {
	if g == nil {
		return true
	}
	if !txnTransport(ctx, err) {
		g.since = time.Time{}
		return true
	}
	now := time.Now()
	if g.since.IsZero() {
		g.since = now
	}
	return now.Sub(g.since) < g.budget
}

// errTxnUnreachable: transport failures outlasted a txnTransportGate's budget.
var errTxnUnreachable = errors.New("kafka broker unreachable")

// spent wraps err, a transport failure the gate refused to retry, saying so; it is
// retryable: the broker may come back.
func (g *txnTransportGate) spent(err error) error {
	return &classified{fmt.Errorf("%w (transport failures retried for %s): %w", errTxnUnreachable, g.budget, err), true}
}

// txnRetry calls fn until it succeeds, fails with an error transient does not accept, transport
// failures in a row outlast gate's budget (nil gate: no bound), or ctx ends (then the last
// error is returned joined with ctx's), backing off from txnBackoffMin to txnBackoffMax.
func txnRetry(ctx context.Context, gate *txnTransportGate, transient func(context.Context, error) bool, onRetry func(error, int), fn func(context.Context) error) error {
	refused := false
	err := retry.Do(ctx, retry.Policy{Budget: -1, FirstDelay: txnBackoffMin, MaxDelay: txnBackoffMax,
		Retryable: func(err error) bool {
			if !transient(ctx, err) {
				return false
			}
			if !gate.allow(ctx, err) {
				refused = true
				return false
			}
			return true
		}, OnRetry: onRetry},
		func() (bool, error) { return false, fn(ctx) })
	switch {
	case err != nil && refused:
		return gate.spent(err)
	case err != nil && ctx.Err() != nil:
		return errors.Join(err, ctx.Err())
	}
	return err
}
