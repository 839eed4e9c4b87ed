package pipeline

import (
	"time"

	"github.com/keysetsync/keysetsync/source"
)

// Observer is told what a pipeline does, for metrics: what its walk reads (source.Observer) and
// what its passes write and commit. Set it in Config.Observer (the pipeline hands it to its
// Walker unless WalkOptions.Observer is set); nil means NopObserver.
//
// Contract: source.Observer's. The fetcher, the producer loop and the committer of a pass run
// concurrently and all call it.
type Observer interface {
	source.Observer
	// PassStarted is called once a pass loaded its cursor: at is the committed updatedAt, zero
	// when no cursor was committed yet (the pass starts from the beginning). Loading the cursor
	// means Kafka was reachable.
	PassStarted(at time.Time)
	// PassFinished is called at the end of every pass, also one that failed to load its cursor;
	// err is what Sync returns.
	PassFinished(err error)
	// BatchAcked is called when Kafka acknowledged a whole batch, before its cursor commit:
	// records is its data messages, deadLetters its dead letters, ackLatency the time from
	// enqueueing the batch to its last acknowledgement.
	BatchAcked(records, deadLetters int, ackLatency time.Duration)
	// ProduceFailed is called when a batch was not acknowledged (error or WriteTimeout);
	// retryable is IsRetryable of the error.
	ProduceFailed(retryable bool)
	// CursorCommitted is called after a cursor was committed: at is its updatedAt, d how long
	// the commit took.
	CursorCommitted(at time.Time, d time.Duration)
	// TxnCommitted is called, with Config.ExactlyOnce, when a batch's transaction (its
	// records and its cursor) committed, before CursorCommitted (whose d is then 0: the
	// cursor was committed with the batch, in BatchAcked's latency).
	TxnCommitted()
	// TxnAborted is called, with Config.ExactlyOnce, when a batch failed: its transaction was
	// aborted and none of it is visible to read_committed readers. The batches failed after it
	// without being written are not counted.
	TxnAborted()
	// Fenced is called when the Sink was fenced (sink.ErrFenced): another instance with the
	// same transactional id took over. The pass fails with an error matching ErrFenced.
	Fenced()
	// BackfillRanges is called when a parallel backfill's ranges change: active is how many
	// are walked now, unfinished how many are not done (0, 0: no backfill runs).
	BackfillRanges(active, unfinished int)
	// FetchLimit is called with how many API requests a backfill may have in flight.
	FetchLimit(n int)
}

// NopObserver ignores everything. Embed it to implement only some of Observer's methods.
type NopObserver struct{ source.NopObserver }

func (NopObserver) PassStarted(time.Time)                    {}
func (NopObserver) PassFinished(error)                       {}
func (NopObserver) BatchAcked(int, int, time.Duration)       {}
func (NopObserver) ProduceFailed(bool)                       {}
func (NopObserver) CursorCommitted(time.Time, time.Duration) {}
func (NopObserver) TxnCommitted()                            {}
func (NopObserver) TxnAborted()                              {}
func (NopObserver) Fenced()                                  {}
func (NopObserver) BackfillRanges(int, int)                  {}
func (NopObserver) FetchLimit(int)                           {}

var _ Observer = NopObserver{}

func observerOrNop(o Observer) Observer {
	if o == nil {
		return NopObserver{}
	}
	return o
}
