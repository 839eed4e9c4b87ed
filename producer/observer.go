package producer

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Observer is told what a pipeline does, for metrics. Set it in Config.Observer (the Syncer
// hands it to its Walker) or WalkOptions.Observer; nil means NopObserver.
//
// Contract:
//   - Methods are called synchronously from the pass's goroutines (the fetcher, the producer
//     loop and the committer run concurrently), so an implementation must be safe for
//     concurrent use and must return quickly: a slow Observer slows the pipeline down.
//   - An Observer only watches: it cannot change the outcome, and it must not panic.
//   - Counts are deltas since the previous call, never totals.
//   - Cancellation (shutdown) is not reported as an API or produce failure.
type Observer interface {
	// PassStarted is called once a pass loaded its cursor: at is the committed updatedAt, zero
	// when no cursor was committed yet (the pass starts from the beginning). Loading the cursor
	// means Kafka was reachable.
	PassStarted(at time.Time)
	// PassFinished is called at the end of every pass, also one that failed to load its cursor;
	// err is what Sync returns.
	PassFinished(err error)
	// PageFetched is called for every page the API answered: its records, its size in bytes,
	// and how long the successful request took (retries and backoff not included).
	PageFetched(records, bytes int, d time.Duration)
	// APIRetry is called before a failed API request is tried again; reason is the HTTP status
	// ("503", "429") or "network" (see APIErrorKind).
	APIRetry(reason string)
	// APIFailed is called when fetching a page failed for good (every attempt used, or an error
	// that retrying cannot fix); kind is APIErrorKind of the error.
	APIFailed(kind string)
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
	// TieOverflow is called for every page full of one timestamp the API could not page through.
	TieOverflow()
	// InvalidRecord is called for every invalid record, dead-lettered or stopping the pass.
	InvalidRecord()
	// LateRecord is called for every record found behind the position by the lookback window.
	LateRecord()
	// Resent is called with the number of records sent although they may have been delivered
	// before: the walk could not hold exactly what it delivered (a tie or lookback window past
	// its state limit; see Walker). Duplicates, never a loss.
	Resent(n int)
	// Skipped is called with the number of records of a page already delivered (same id,
	// updatedAt and content), when it is not zero.
	Skipped(n int)
	// RecordsRemaining is called after every page whose answer said how many records the
	// request matched (Contract.TotalPath): n is how many of them remain after that page.
	RecordsRemaining(n int64)
}

// NopObserver ignores everything. Embed it to implement only some of Observer's methods.
type NopObserver struct{}

func (NopObserver) PassStarted(time.Time)                    {}
func (NopObserver) PassFinished(error)                       {}
func (NopObserver) PageFetched(int, int, time.Duration)      {}
func (NopObserver) APIRetry(string)                          {}
func (NopObserver) APIFailed(string)                         {}
func (NopObserver) BatchAcked(int, int, time.Duration)       {}
func (NopObserver) ProduceFailed(bool)                       {}
func (NopObserver) CursorCommitted(time.Time, time.Duration) {}
func (NopObserver) TieOverflow()                             {}
func (NopObserver) InvalidRecord()                           {}
func (NopObserver) LateRecord()                              {}
func (NopObserver) Skipped(int)                              {}
func (NopObserver) Resent(int)                               {}
func (NopObserver) RecordsRemaining(int64)                   {}

func observerOrNop(o Observer) Observer {
	if o == nil {
		return NopObserver{}
	}
	return o
}

// APIErrorKind classifies an error of the source API for metrics: the HTTP status as a number
// ("500", "429"), "bad_page" for an answer that is not a page, "canceled" for a cancelled
// request, or "network" for anything else (refused connection, timeout, broken body).
func APIErrorKind(err error) string {
	var he *HTTPError
	switch {
	case errors.As(err, &he):
		return strconv.Itoa(he.Status)
	case errors.Is(err, ErrBadPage):
		return "bad_page"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "network"
	}
}
