package producer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/cursor"
)

// Every error the producer package returns wraps one of these sentinels, so callers can decide
// with errors.Is what happened and IsRetryable whether trying again can help.
var (
	// ErrConfig: the Syncer or Source was configured in a way that would break its guarantees
	// (for example RequiredAcks weaker than all). Returned by New and NewSource.
	ErrConfig = errors.New("invalid configuration")
	// ErrAPI: the source API answered with an error status, or could not be reached, after
	// every retry. Wrapped in an *HTTPError when the API answered.
	ErrAPI = errors.New("source API request failed")
	// ErrBadPage: an answer was not a page of the contract (not JSON, no data array, a
	// scroll_param that is not a string). Wrapped in a *PageError.
	ErrBadPage = errors.New("invalid page")
	// ErrInvalidRecord: a record of a page cannot be delivered (missing id or updatedAt, a wrong
	// type, an unparseable time, out of updatedAt order, older than the cursor). Wrapped in a
	// *RecordError naming the page, the record and the field.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrNoProgress: the API kept answering pages that moved neither the cursor nor delivered
	// anything new (a scroll_param that repeats); the pass stops instead of looping.
	ErrNoProgress = errors.New("source API makes no progress")
	// ErrTieOverflow: the pass delivered and committed everything it could read, but the API
	// could not page through a tie wider than a page, so records at that time may be missing
	// (see TieOverflowError). Retrying cannot help: the API cannot serve those records.
	ErrTieOverflow = errors.New("records may be missing: a tie wider than a page")
	// ErrProduce: Kafka did not acknowledge every message of a batch; no cursor was committed
	// for it. Some messages may have been written: they are sent again by the next pass.
	ErrProduce = errors.New("produce to Kafka failed")
	// ErrCommit: the batch was acknowledged but its cursor could not be committed; the next
	// pass re-sends the batch (duplicates, never a loss).
	ErrCommit = errors.New("cursor commit failed")
)

// HTTPError is an error status answered by the source API.
type HTTPError struct {
	URL        string
	Status     int
	Message    string        // the "error" field of the JSON body, or the start of the body
	RetryAfter time.Duration // from a Retry-After header, zero if none
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("GET %s: HTTP %d %s: %s", e.URL, e.Status, http.StatusText(e.Status), e.Message)
}

// Unwrap makes every HTTPError match ErrAPI.
func (e *HTTPError) Unwrap() error { return ErrAPI }

// PageError says which page of a pass was not a page of the contract.
type PageError struct {
	Page int    // 1-based number of the page within the pass
	URL  string // the request that got it
	Err  error
}

func (e *PageError) Error() string {
	return fmt.Sprintf("invalid page %d (GET %s): %v", e.Page, e.URL, e.Err)
}

// Unwrap returns both the cause and ErrBadPage.
func (e *PageError) Unwrap() []error { return []error{ErrBadPage, e.Err} }

// RecordError says which record of which page could not be delivered, and why.
type RecordError struct {
	Page  int    // 1-based number of the page within the pass
	Index int    // 0-based index of the record within the page's data array
	ID    string // the record's id when it has one
	Field string // the offending field, empty when the record as a whole is bad
	Err   error
}

func (e *RecordError) Error() string {
	s := fmt.Sprintf("page %d, record %d", e.Page, e.Index)
	if e.ID != "" {
		s += fmt.Sprintf(" (id %q)", e.ID)
	}
	if e.Field != "" {
		s += ", field " + e.Field
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns both the cause and ErrInvalidRecord.
func (e *RecordError) Unwrap() []error { return []error{ErrInvalidRecord, e.Err} }

// TieOverflowError lists where a pass could not read every record: the first few overflows
// and how many there were in all.
type TieOverflowError struct {
	Overflows []TieOverflow
	Total     int
}

func (e *TieOverflowError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d page(s) held only records of one update time, more than a page, and the API cannot page through them: records at ", e.Total)
	for i, o := range e.Overflows {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (page %d: %d delivered)", cursor.FormatTime(o.At), o.Page, o.Delivered)
	}
	if n := e.Total - len(e.Overflows); n > 0 {
		fmt.Fprintf(&b, " and %d more", n)
	}
	b.WriteString(" beyond those delivered may be missing; how many cannot be known through this API. Configure its after-id parameter (--api-after-id-param) or a larger page size, then re-read from before the first of these times (keysetsync cursor set --to)")
	return b.String()
}

// Unwrap makes every TieOverflowError match ErrTieOverflow.
func (e *TieOverflowError) Unwrap() error { return ErrTieOverflow }

// IsRetryable reports whether the operation that returned err may succeed if tried again
// without any change: a server error or throttling of the API, a network failure or timeout, a
// retriable Kafka error. Invalid data, bad configuration and cancellation are not retryable.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, ErrConfig) || errors.Is(err, ErrBadPage) || errors.Is(err, ErrInvalidRecord) || errors.Is(err, ErrNoProgress) || errors.Is(err, ErrTieOverflow) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status >= 500 || he.Status == http.StatusTooManyRequests || he.Status == http.StatusRequestTimeout
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && !IsRetryable(e) {
				return false
			}
		}
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}
