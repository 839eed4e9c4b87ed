package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/sink"
)

var _ sink.Sink = (*TxnSink)(nil)

// TxnSink is a sink.Sink that writes each batch in one Kafka transaction of a TxnProducer:
// a batch becomes visible to read_committed readers whole or not at all, and a second TxnSink
// with the same transactional id fences this one (ErrFenced) and aborts its open transaction.
// A pipeline that puts its cursor record last in each batch thus commits records and cursor
// atomically; the sink does not need to know.
//
// A transactional producer has one transaction open at a time, so batches are written
// strictly one after another, in Send order, by one goroutine: Begin, Produce, Commit, and
// done(nil) only once the commit is confirmed (EndTxn). On any failure the transaction is
// aborted at once (so it does not hold back read_committed readers until its timeout) and
// done gets the error; every batch queued behind it gets an error too, without being written,
// until Reset. Errors say whether trying again can help (retry.IsRetryable): fencing never
// does; a coordinator or leader that stayed unavailable until the batch's ctx ended does.
type TxnSink struct {
	p   *TxnProducer
	log *slog.Logger

	// op is held while a batch is written or Reset repairs the producer: the producer has
	// one transaction at a time.
	op sync.Mutex

	mu      sync.Mutex
	queue   []txnJob
	running bool          // a worker goroutine is draining queue
	idle    chan struct{} // closed when that worker exits
	failed  error         // the first failure since the last Reset (classified)
	// broken is set by a Reset whose ctx ended before the batches sent before it were done:
	// a batch sent now could commit before them, so Send refuses until a Reset succeeds.
	broken error
	closed bool
}

type txnJob struct {
	ctx  context.Context
	msgs []sink.Message
	done func(error)
}

// txnAbortTimeout bounds the abort that follows a failed batch, whose own ctx may be over:
// if it does not finish, Reset aborts again.
const txnAbortTimeout = 30 * time.Second

// txnBatchBound is how long one batch's transaction may take before it is given up and
// aborted: a tenth below the coordinator's transaction timeout.
func txnBatchBound(timeout time.Duration) time.Duration {
	return timeout - timeout/10
}

// NewTxnSink starts the transactional producer of cfg (which fences any previous producer
// with the transactional id and aborts its open transaction) and returns a sink on it.
func NewTxnSink(ctx context.Context, cfg TxnConfig) (*TxnSink, error) {
	p, err := NewTxnProducer(ctx, cfg)
	if err != nil {
		return nil, txnSinkErr(err)
	}
	return &TxnSink{p: p, log: p.log}, nil
}

// Send queues msgs as one transaction; done is called once it committed, or with the error.
// It never blocks on I/O. Unlike sink.Sink's general rule, ctx also bounds the write, and so
// does TxnConfig.TransactionTimeout (the coordinator would abort a longer transaction): a
// batch whose ctx ends is aborted whole, so nothing of it becomes visible, and its done gets
// a retryable error. The pipeline sends with a ctx that is never cancelled.
func (s *TxnSink) Send(ctx context.Context, msgs []sink.Message, done func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		// done is never called from inside Send: the caller may hold its own locks.
		go done(s.p.errorf(sink.ErrClosed, "send"))
		return
	}
	if s.broken != nil {
		go done(&classified{fmt.Errorf("batch of %d messages not sent: %w", len(msgs), s.broken), true})
		return
	}
	s.queue = append(s.queue, txnJob{ctx: ctx, msgs: msgs, done: done})
	if !s.running {
		s.running = true
		s.idle = make(chan struct{})
		go s.work(s.idle)
	}
}

// work writes the queued batches one after the other and exits when the queue is empty.
func (s *TxnSink) work(idle chan struct{}) {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.running = false
			close(idle)
			s.mu.Unlock()
			return
		}
		j := s.queue[0]
		s.queue[0] = txnJob{}
		s.queue = s.queue[1:]
		s.mu.Unlock()

		s.op.Lock()
		err := s.write(j)
		s.op.Unlock()
		j.done(err)
	}
}

// write writes one batch in one transaction, or says why it did not.
func (s *TxnSink) write(j txnJob) error {
	s.mu.Lock()
	failed := s.failed
	s.mu.Unlock()
	if failed != nil {
		return &classified{fmt.Errorf("batch of %d messages not written: an earlier batch failed (Reset first): %w", len(j.msgs), failed),
			retry.IsRetryable(failed)}
	}
	// A batch cannot outlive its transaction: the coordinator aborts it after the timeout,
	// bumping the epoch, and the abort that follows then reads PRODUCER_FENCED, as if another
	// instance had taken over (ErrFenced, final). Our own bound fires first, with a margin
	// for the abort to reach the coordinator before it does (the coordinator's clock starts
	// at the first AddPartitionsToTxn, after ours). It also bounds the retries of a write
	// whose caller gave no deadline.
	ctx, cancel := context.WithTimeout(j.ctx, txnBatchBound(s.p.timeout))
	defer cancel()
	err := s.p.Begin()
	if err == nil {
		err = s.p.Produce(ctx, j.msgs)
	}
	if err == nil {
		if err = s.p.Commit(ctx); err == nil {
			return nil
		}
	}
	// Abort now, not at Reset: an open transaction holds every read_committed reader of its
	// partitions (the cursor load too) at its first offset until it ends.
	actx, cancel := context.WithTimeout(context.WithoutCancel(j.ctx), txnAbortTimeout)
	abort := s.p.Abort
	if errors.Is(err, errTxnUnreachable) {
		abort = s.p.abortUnreachable // fail fast: the broker was just found down
	}
	if aerr := abort(actx); aerr != nil {
		if errors.Is(aerr, ErrFenced) || errors.Is(aerr, errTxnUnreachable) {
			err = errors.Join(err, aerr) // the sink is fenced, or Reset is to abort fast
		} else {
			s.log.Warn("abort of a failed transaction did not complete; Reset aborts it", "err", aerr)
		}
	}
	cancel()
	err = txnSinkErr(fmt.Errorf("batch of %d messages: %w", len(j.msgs), err))
	s.mu.Lock()
	s.failed = err
	s.mu.Unlock()
	return err
}

// wait returns once every batch sent so far is done.
func (s *TxnSink) wait(ctx context.Context) error {
	for {
		s.mu.Lock()
		idle, running := s.idle, s.running
		s.mu.Unlock()
		if !running {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return s.p.errorf(ctx.Err(), "wait for queued batches")
		}
	}
}

// Reset waits until every batch sent before it is done, then makes the producer usable again
// after a failure: it aborts a transaction left open and restarts the producer's sequences
// with a new epoch, so nothing of a failed batch can be written after it. A fenced sink stays
// failed: Reset returns the error matching ErrFenced.
func (s *TxnSink) Reset(ctx context.Context) error {
	if err := s.wait(ctx); err != nil {
		s.mu.Lock()
		s.broken = s.p.errorf(err, "a Reset gave up before every earlier batch was done (Reset again)")
		s.mu.Unlock()
		return err
	}
	s.op.Lock()
	defer s.op.Unlock()
	s.mu.Lock()
	failed := s.failed
	s.broken = nil
	s.mu.Unlock()
	if failed == nil {
		return nil
	}
	// While the broker stays unreachable each Reset gives up fast, leaving the sink failed:
	// the caller's next attempt fails at once, and its retry budget, not this, decides how
	// long to wait for the broker.
	abort := s.p.Abort
	if errors.Is(failed, errTxnUnreachable) {
		abort = s.p.abortUnreachable
	}
	if err := abort(ctx); err != nil {
		return txnSinkErr(fmt.Errorf("reset: %w", err))
	}
	s.mu.Lock()
	s.failed = nil
	s.mu.Unlock()
	return nil
}

// Close waits for the queued batches like Reset, aborts a transaction a failure left open
// and releases the producer; batches sent after it fail.
func (s *TxnSink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), txnAbortTimeout)
	defer cancel()
	err := s.wait(ctx)
	s.op.Lock()
	defer s.op.Unlock()
	s.mu.Lock()
	failed := s.failed
	s.mu.Unlock()
	if err == nil && failed != nil && !errors.Is(failed, ErrFenced) {
		if aerr := s.p.Abort(ctx); aerr != nil {
			err = fmt.Errorf("close: %w", aerr)
		}
	}
	return errors.Join(err, s.p.Close())
}

// txnSinkErr classifies a TxnProducer error: fencing is final; otherwise Kafka's error codes
// decide (Classify), and a transport failure or ctx deadline reached during retries is
// retryable (retry.IsRetryable's network rules).
func txnSinkErr(err error) error {
	return &classified{err, !errors.Is(err, ErrFenced) && retry.IsRetryable(Classify(err))}
}
