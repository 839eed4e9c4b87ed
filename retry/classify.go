// Package retry decides whether a failed operation may succeed when tried again (IsRetryable),
// and tries it again with backoff (Do). It knows the standard library's failures (network, TLS,
// cancellation); the packages that own an external system say what their own errors mean by
// implementing Retryable on them, so this package depends on none of them.
package retry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// Classified is an error that says itself whether trying again can help: an API's HTTP status,
// a Kafka error code, a sentinel that no retry can heal (Permanent).
type Classified interface {
	error
	Retryable() bool
}

// Permanent returns a new sentinel error that IsRetryable refuses wherever it is in an error's
// tree: a configuration, page, record or cursor that fails the same way every time.
func Permanent(text string) error { return &permanent{text} }

type permanent struct{ text string }

func (e *permanent) Error() string   { return e.text }
func (e *permanent) Retryable() bool { return false }

// IsRetryable reports whether the operation that returned err may succeed if tried again without
// any change. The first rule that matches decides:
//  1. nil and cancellation: no.
//  2. an error anywhere in err's tree that says it is not retryable (Classified, Permanent): no.
//     One permanent cause is enough, whatever else err wraps.
//  3. a TLS failure (a certificate that does not verify, a handshake the peer refused, a peer
//     that does not speak TLS): no, it needs a change of configuration.
//  4. an error in the tree that says it is retryable (an HTTP 5xx/429/408, a transient Kafka
//     error): yes.
//  5. a network failure: a connection refused, reset or closed (EOF, an unexpected EOF
//     mid-answer, a broken pipe), an HTTP/2 stream reset, a DNS failure, a timeout: yes.
//  6. anything else (for example too many redirects): no.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	says, retryable := classified(err)
	switch {
	case says && !retryable:
		return false
	case tlsFailure(err):
		return false
	case says:
		return true
	}
	return networkFailure(err)
}

// classified walks err's whole tree: says is whether any error in it is Classified, and
// retryable whether all that are say so.
func classified(err error) (says, retryable bool) {
	retryable = true
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if c, ok := e.(Classified); ok {
			says = true
			retryable = retryable && c.Retryable()
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return says, retryable
}

// networkFailure says whether err is a failure of the connection rather than an answer: those
// heal when the peer is back.
func networkFailure(err error) bool {
	var h2 http2StreamError
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	switch {
	case errors.As(err, &h2), // the API reset an HTTP/2 stream, e.g. INTERNAL_ERROR while it restarts
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
