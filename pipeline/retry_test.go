package pipeline_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/internal/pipelinetest"
	keysetkafka "github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/source"
)

// The wrappings our code puts around an error of the cursor load, of a batch and of a cursor
// commit, as pipeline.Pipeline and kafka.CursorStore write them.
func asCursorLoad(op string, err error) error {
	return fmt.Errorf("load cursor: %w", fmt.Errorf("load cursor of %q: %w", "users", fmt.Errorf("%s of keysetsync-cursors/0: %w", op, err)))
}

func asBatch(err error) error {
	return fmt.Errorf("%w: batch of 200 records up to updatedAt 2024-01-01T00:28:35Z: %w", pipeline.ErrProduce, err)
}

func asCommit(err error) error {
	return fmt.Errorf("%w: batch of 200 records up to updatedAt 2024-01-01T00:28:35Z was acknowledged: %w", pipeline.ErrCommit,
		fmt.Errorf("commit cursor of %q to topic %q: %w", "users", "keysetsync-cursors", err))
}

// realDialRefused is the error of dialing a port nothing listens on.
func realDialRefused(t *testing.T) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, err = net.Dial("tcp", addr)
	require.Error(t, err)
	return err
}

// realHTTPError is the error of a GET to a server whose handler does what fn does.
func realHTTPError(t *testing.T, tlsServer bool, fn http.HandlerFunc) error {
	srv := httptest.NewUnstartedServer(fn)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	if tlsServer {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	require.Error(t, err)
	return err
}

// realHTTP2Reset is the error of a GET over HTTP/2 whose stream the server resets
// (INTERNAL_ERROR) before it answers.
func realHTTP2Reset(t *testing.T) error {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, err := srv.Client().Get(srv.URL)
	require.ErrorContains(t, err, "INTERNAL_ERROR")
	return err
}

// hangUp closes the connection without an answer, as an API that restarts does.
func hangUp(w http.ResponseWriter, _ *http.Request) {
	c, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		c.Close()
	}
}

// TestIsRetryableClassifiesEveryErrorForm covers each form an error of the API, of the network
// or of the pipeline itself reaches IsRetryable in: built by the real constructors (or by a real
// failed call) and wrapped with %w as our code wraps it. Kafka's error codes are decided by
// kafka.Classify (kafka/errors_test.go); the two Kafka cases here hold IsRetryable to it for the
// data writer's errors, which package kafka does not return yet.
func TestIsRetryableClassifiesEveryErrorForm(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		// The data writer's Kafka errors.
		{"batch: NOT_LEADER_OR_FOLLOWER", asBatch(kafka.WriteErrors{kafka.NotLeaderForPartition, nil}), true},
		{"batch: MESSAGE_TOO_LARGE", asBatch(kafka.WriteErrors{kafka.MessageSizeTooLarge}), false},

		// The network, under Kafka or the API.
		{"cursor load: broker closed the connection (EOF)", asCursorLoad("list offsets", fmt.Errorf("kafka.(*Client).ListOffsets: %w", io.EOF)), true},
		{"cursor load: connection closed mid-answer", asCursorLoad("fetch", fmt.Errorf("kafka.(*Client).Fetch: %w", io.ErrUnexpectedEOF)), true},
		{"batch: connection refused (real dial)", asBatch(fmt.Errorf("kafka.(*Client).Produce: %w", realDialRefused(t))), true},
		{"batch: connection reset", asBatch(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), true},
		{"commit: broken pipe", asCommit(&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}), true},
		{"commit: connection closed under us", asCommit(fmt.Errorf("kafka.(*Client).Produce: %w", net.ErrClosed)), true},
		{"read deadline", asBatch(&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}), true},
		{"DNS failure", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "server misbehaving", Name: "kafka-0", IsTemporary: true}}, true},
		{"batch not acknowledged within the write timeout", fmt.Errorf("%w: batch of 1 records: not acknowledged within 1m0s: %w", pipeline.ErrProduce, context.DeadlineExceeded), true},
		{"API: hung up before answering (real GET)", realHTTPError(t, false, hangUp), true},
		{"API: body cut off mid-stream (real GET)", realHTTPError(t, false, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "100")
			fmt.Fprint(w, `{"data":[`)
		}), true},
		{"API: HTTP/2 stream reset before the answer (real GET)", realHTTP2Reset(t), true},
		{"API: refused (real dial, as *url.Error)", &url.Error{Op: "Get", URL: "http://api/keyset", Err: realDialRefused(t)}, true},

		// TLS and authentication fail the same way every time.
		{"API: certificate signed by an unknown authority (real GET)", realHTTPError(t, true, func(http.ResponseWriter, *http.Request) {}), false},
		{"Kafka: certificate signed by an unknown authority", fmt.Errorf("kafka.(*Client).Metadata: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), false},
		{"Kafka: handshake refused by the broker (alert, inside a *net.OpError)", fmt.Errorf("kafka.(*Client).Metadata: %w", &net.OpError{Op: "remote error", Err: tls.AlertError(42)}), false},
		{"Kafka: TLS to a plaintext port", fmt.Errorf("kafka.(*Client).Metadata: %w", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), false},
		{"API: certificate for another host", &url.Error{Op: "Get", URL: "https://api/keyset", Err: x509.HostnameError{Host: "api", Certificate: &x509.Certificate{}}}, false},

		// The API's answers.
		{"API 500", &source.HTTPError{Status: 500}, true},
		{"API 502", &source.HTTPError{Status: 502}, true},
		{"API 503", &source.HTTPError{Status: 503}, true},
		{"API 504", &source.HTTPError{Status: 504}, true},
		{"API 429", &source.HTTPError{Status: 429}, true},
		{"API 408", &source.HTTPError{Status: 408}, true},
		{"API 400", &source.HTTPError{Status: 400}, false},
		{"API 401", &source.HTTPError{Status: 401}, false},
		{"API 403", &source.HTTPError{Status: 403}, false},
		{"API 404", &source.HTTPError{Status: 404}, false},
		{"API: too many redirects", &url.Error{Op: "Get", URL: "http://api/keyset", Err: errors.New("stopped after 10 redirects")}, false},

		// Our own permanent errors win over a transient cause they wrap.
		{"invalid record wrapping an unexpected EOF", &source.RecordError{Page: 1, Index: 2, Err: io.ErrUnexpectedEOF}, false},
		{"invalid page", &source.PageError{Page: 1, Err: io.ErrUnexpectedEOF}, false},
		{"corrupt cursor record", asCursorLoad("fetch", fmt.Errorf("cursor of %q at t/0 offset 3: %w: %w", "users", cursor.ErrCorrupt, io.ErrUnexpectedEOF)), false},
		{"cursor topic not compacted", fmt.Errorf("%w: topic %q has cleanup.policy=%q", cursor.ErrNotCompacted, "c", "delete"), false},
		{"configuration", fmt.Errorf("%w: api url: want http(s)://host/path", pipeline.ErrConfig), false},
		{"no progress", fmt.Errorf("%w: page 3", source.ErrNoProgress), false},
		{"tie overflow", &source.TieOverflowError{Total: 1}, false},
		{"cancelled, wrapping a network error", fmt.Errorf("%w: %w", context.Canceled, io.EOF), false},
		{"cancelled GET", &url.Error{Op: "Get", URL: "http://api/keyset", Err: context.Canceled}, false},
		{"an error of unknown kind", errors.New("something else"), false},
		{"nil", nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, retry.IsRetryable(keysetkafka.Classify(c.err)), "IsRetryable(%v)", c.err)
		})
	}
}

// cutBodies answers the first cuts requests of page 2 with a body cut off mid-stream (its
// Content-Length promises more than is sent, and the connection closes), then serves it whole.
type cutBodies struct {
	next http.Handler
	mu   sync.Mutex
	cuts int // of page 2 still to cut
	page int // requests seen
	cut  int // bodies cut
}

func (c *cutBodies) wrap(next http.Handler) http.Handler { c.next = next; return c }

func (c *cutBodies) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.page++
	cut := c.page >= 2 && c.cuts > 0
	if cut {
		c.cuts--
		c.cut++
	}
	c.mu.Unlock()
	if !cut {
		c.next.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	c.next.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body[:len(body)/2]) //nolint:errcheck // the client sees what it sees
	// Returning with less than Content-Length written makes net/http close the connection.
}

// TestABodyCutOffMidStreamIsRetried: a page whose body breaks off mid-stream is requested
// again (it used to end the pass: "unexpected EOF ... after 1 of 6 attempts"), and the pass
// delivers everything.
func TestABodyCutOffMidStreamIsRetried(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		var logs logtest.Buffer
		cuts := &cutBodies{cuts: 2}
		p := pipelinetest.New(t, tg, pipelinetest.Options{
			Playground: playground.Config{Records: 300, PageSize: 50}, BatchRecords: 100,
			Handler: cuts.wrap, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
		st, err := p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 300, st.Produced)
		assert.Equal(t, 2, cuts.cut, "two bodies were cut")
		p.RequireInSync(t)
		warns := strings.Count(logs.String(), `msg="api request failed, retrying"`)
		assert.Equal(t, 2, warns, "one retry warning per cut body:\n%s", logs.String())
		assert.Contains(t, logs.String(), "unexpected EOF")
	})
}

// TestACursorLoadCutOffIsRetried closes the cursor store's connection (a TCP proxy in front of
// the broker) when the cursor load sends one of its requests: the pass fails with a retryable
// error, so the pass retry of --retry-timeout runs it again, and the next pass resumes from the
// committed cursor and ends in sync. It used to be final: an EOF is not a net.Error.
func TestACursorLoadCutOffIsRetried(t *testing.T) {
	// The load's requests: its metadata comes from kafka-go's cache.
	for _, key := range []kmsg.Key{kmsg.ListOffsets, kmsg.Fetch} {
		t.Run(key.Name(), func(t *testing.T) {
			kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
				breaker := kafkatest.NewBreaker(t)
				p := pipelinetest.New(t, tg, pipelinetest.Options{
					Playground: playground.Config{Records: 200, PageSize: 50}, BatchRecords: 100, StoreDial: breaker.Dial,
				})
				// A committed cursor first, so the load has records to fetch.
				_, err := p.Pipeline.Pass(t.Context())
				require.NoError(t, err)
				p.API.Update(30)

				breaker.Drop(int16(key), 1)
				var failed []error
				for pass := 1; ; pass++ {
					require.LessOrEqual(t, pass, 3, "no pass succeeded: %v", failed)
					_, err := p.Pipeline.Pass(t.Context())
					if err == nil {
						break
					}
					t.Logf("pass %d: %v", pass, err)
					require.Truef(t, retry.IsRetryable(err), "a connection cut during the cursor load must be retryable: %v", err)
					failed = append(failed, err)
				}
				require.Equal(t, 1, breaker.Dropped(int16(key)), "the %s request was cut", key.Name())
				p.RequireInSync(t)
			})
		})
	}
}
