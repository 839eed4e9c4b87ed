package source

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/retry"
)

// Every error the source package returns wraps one of these sentinels, so callers can decide
// with errors.Is what happened and retry.IsRetryable whether trying again can help.
var (
	// ErrConfig: the pipeline or Source was configured in a way that would break its guarantees
	// (for example RequiredAcks weaker than all). Returned by New and NewSource.
	ErrConfig = retry.Permanent("invalid configuration")
	// ErrAPI: the source API answered with an error status, or could not be reached, after
	// every retry. Wrapped in an *HTTPError when the API answered.
	ErrAPI = errors.New("source API request failed")
	// ErrBadPage: an answer was not a page of the contract (not JSON, no data array, a
	// scroll_param that is not a string). Wrapped in a *PageError.
	ErrBadPage = retry.Permanent("invalid page")
	// ErrInvalidRecord: a record of a page cannot be delivered (missing id or updatedAt, a wrong
	// type, an unparseable time, out of updatedAt order, older than the cursor). Wrapped in a
	// *RecordError naming the page, the record and the field.
	ErrInvalidRecord = retry.Permanent("invalid record")
	// ErrNoProgress: the API kept answering pages that moved neither the cursor nor delivered
	// anything new (a scroll_param that repeats); the pass stops instead of looping.
	ErrNoProgress = retry.Permanent("source API makes no progress")
	// ErrTieOverflow: the pass delivered and committed everything it could read, but the API
	// could not page through a tie wider than a page, so records at that time may be missing
	// (see TieOverflowError). Retrying cannot help: the API cannot serve those records.
	ErrTieOverflow = retry.Permanent("records may be missing: a tie wider than a page")
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

// Retryable: a 5xx, 429 Too Many Requests or 408 Request Timeout may pass when asked again;
// any other status (401, 403, 404, ...) answers the same until someone changes something.
func (e *HTTPError) Retryable() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

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
	return fmt.Sprintf("%d page(s) held only records of one update time, more than a page, and the API cannot page through them: records at %s beyond those delivered may be missing; how many cannot be known through this API. Configure its after-id parameter or a larger page size, then re-read from before the first of these times",
		e.Total, OverflowList(e.Overflows, e.Total, "delivered"))
}

// OverflowList names where tie overflows happened, for a message: each time with its page and
// its records (`2024-01-01T00:00:00Z (page 2: 50 delivered)`), then how many more there were
// than listed.
func OverflowList(overflows []TieOverflow, total int, verb string) string {
	var b strings.Builder
	for i, o := range overflows {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (page %d: %d %s)", cursor.FormatTime(o.At), o.Page, o.Delivered, verb)
	}
	if n := total - len(overflows); n > 0 {
		fmt.Fprintf(&b, " and %d more", n)
	}
	return b.String()
}

// Unwrap makes every TieOverflowError match ErrTieOverflow.
func (e *TieOverflowError) Unwrap() error { return ErrTieOverflow }
