package producer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/topic"
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
	return fmt.Sprintf("%d page(s) held only records of one update time, more than a page, and the API cannot page through them: records at %s beyond those delivered may be missing; how many cannot be known through this API. Configure its after-id parameter (--api-after-id-param) or a larger page size, then re-read from before the first of these times (keysetsync cursor set --to)",
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

// IsRetryable reports whether the operation that returned err may succeed if tried again
// without any change. It is what the per-page API retry (SourceConfig.MaxAttempts) and a
// caller's pass retry (keysetsync's --retry-timeout and --kafka-wait) ask.
//
// Retryable: an API answer of 5xx, 429 or 408; a transient Kafka error (see topic.Transient:
// leader or coordinator moves, not enough replicas, request timed out, a broker that is
// starting, kafka-go's "topic partition has no leader"); and a network failure: a connection
// refused, reset or closed (EOF, an unexpected EOF mid-answer, a broken pipe), a body cut off
// mid-transfer, an HTTP/2 stream reset, a DNS failure, a timeout.
//
// Not retryable, whatever else err wraps: cancellation; invalid configuration, pages, records
// and cursors; ErrNoProgress and ErrTieOverflow; TLS failures (certificate, handshake);
// authentication and authorization (an API 401/403, a SASL or ACL error of Kafka); any other
// Kafka error (POLICY_VIOLATION, MESSAGE_TOO_LARGE, ...); and any error this function does not
// recognise as one of the above (for example too many redirects).
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	for _, permanent := range []error{ErrConfig, ErrBadPage, ErrInvalidRecord, ErrNoProgress, ErrTieOverflow,
		cursor.ErrCorrupt, cursor.ErrNotCompacted, avro.ErrInvalid, avro.ErrSchema} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	if tlsFailure(err) {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status >= 500 || he.Status == http.StatusTooManyRequests || he.Status == http.StatusRequestTimeout
	}
	var we kafka.WriteErrors // one error per message, not reachable by errors.As: each decides
	if errors.As(err, &we) {
		n := 0
		for _, e := range we {
			if e != nil {
				if !IsRetryable(e) {
					return false
				}
				n++
			}
		}
		return n > 0
	}
	if transient, isKafka := topic.Transient(err); isKafka {
		return transient
	}
	return networkFailure(err)
}

// networkFailure says whether err is a failure of the connection rather than an answer: those
// heal when the peer is back.
func networkFailure(err error) bool {
	var te *transferError
	var h2 http2StreamError
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	switch {
	case errors.As(err, &te), // the API's answer broke off (see transferError)
		errors.As(err, &h2), // the API reset an HTTP/2 stream, e.g. INTERNAL_ERROR while it restarts
		// A peer that closed the connection: at a request boundary (EOF), mid-answer
		// (unexpected EOF: Kafka's length-prefixed frames, an HTTP body shorter than its
		// Content-Length or chunk), or under our feet.
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ENETDOWN),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout(),
		// Any failure of a socket operation (dial, read, write) and of name resolution: a
		// restarting broker or API, a resolver that has not caught up. TLS failures, also
		// wrapped in *net.OpError, were ruled out before.
		errors.As(err, &oe), errors.As(err, &de):
		return true
	}
	return false
}

// http2StreamError has the shape of golang.org/x/net/http2.StreamError, into which net/http's
// bundled (unexported) HTTP/2 stream error converts itself with errors.As.
type http2StreamError struct {
	StreamID uint32
	Code     uint32
	Cause    error
}

func (e http2StreamError) Error() string {
	return fmt.Sprintf("stream error: stream ID %d; code %d", e.StreamID, e.Code)
}

// tlsFailure says whether err is a TLS failure: a certificate that does not verify, a handshake
// the peer refused (an alert), or a peer that does not speak TLS. Each needs a change of
// configuration, not another attempt.
func tlsFailure(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		ae  tls.AlertError
		rhe tls.RecordHeaderError
		ua  x509.UnknownAuthorityError
		hn  x509.HostnameError
		ci  x509.CertificateInvalidError
	)
	return errors.As(err, &cve) || errors.As(err, &ae) || errors.As(err, &rhe) ||
		errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci)
}
