package source

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Observer is told what a walk reads, for metrics: pages, API retries and failures, and the
// records counted in WalkStats. nil in WalkOptions means NopObserver.
//
// Contract:
//   - Methods are called synchronously from the walking goroutine, which may run beside other
//     goroutines that call the same Observer (a pipeline's, see pipeline.Observer), so an
//     implementation must be safe for concurrent use and must return quickly.
//   - An Observer only watches: it cannot change the outcome, and it must not panic.
//   - Counts are deltas since the previous call, never totals.
//   - Cancellation (shutdown) is not reported as an API failure.
type Observer interface {
	// PageFetched is called for every page the API answered: its records, its size in bytes,
	// and how long the successful request took (retries and backoff not included).
	PageFetched(records, bytes int, d time.Duration)
	// APIRetry is called before a failed API request is tried again; reason is the HTTP status
	// ("503", "429") or "network" (see APIErrorKind).
	APIRetry(reason string)
	// APIFailed is called when fetching a page failed for good (every attempt used, or an error
	// that retrying cannot fix); kind is APIErrorKind of the error.
	APIFailed(kind string)
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

func (NopObserver) PageFetched(int, int, time.Duration) {}
func (NopObserver) APIRetry(string)                     {}
func (NopObserver) APIFailed(string)                    {}
func (NopObserver) TieOverflow()                        {}
func (NopObserver) InvalidRecord()                      {}
func (NopObserver) LateRecord()                         {}
func (NopObserver) Skipped(int)                         {}
func (NopObserver) Resent(int)                          {}
func (NopObserver) RecordsRemaining(int64)              {}

var _ Observer = NopObserver{}

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
