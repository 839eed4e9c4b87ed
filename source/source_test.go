package source_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/schedule"
	"github.com/keysetsync/keysetsync/source"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const okPage = `{"data":[{"id":"a","updatedAt":"2024-01-01T00:00:00Z"}],"scroll_param":null}`

func TestSourceRetriesWhatCanSucceed(t *testing.T) {
	cases := []struct {
		name    string
		answers []sourcetest.Answer
		tries   int
	}{
		{"5xx then ok", []sourcetest.Answer{{Status: 500, Body: `{"error":"boom"}`}, {Status: 503, Body: "unavailable"}, {Status: 200, Body: okPage}}, 3},
		{"429 with Retry-After then ok", []sourcetest.Answer{{Status: 429, Body: `{"error":"slow down"}`, Header: map[string]string{"Retry-After": "1"}}, {Status: 200, Body: okPage}}, 2},
		{"408 then ok", []sourcetest.Answer{{Status: 408}, {Status: 200, Body: okPage}}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &sourcetest.Scripted{Answers: c.answers}
			p, err := sourcetest.NewSource(t, h, 5).Fetch(t.Context(), 1, source.Query{Since: cursor.Start})
			require.NoError(t, err)
			assert.Equal(t, 1, p.Len())
			assert.Len(t, h.Requests(), c.tries)
		})
	}
}

func TestSourceErrorsNameWhatWentWrong(t *testing.T) {
	cases := []struct {
		name      string
		answer    sourcetest.Answer
		is        error
		tries     int
		msg       []string
		retryable bool
	}{
		{"server error after every attempt", sourcetest.Answer{Status: 500, Body: `{"error":"database down"}`}, source.ErrAPI, 3,
			[]string{"page 7", "HTTP 500", "database down", "after 3 of 3 attempts"}, true},
		{"bad request is not retried", sourcetest.Answer{Status: 400, Body: `{"error":"Cannot use both updated_since and scroll_param"}`}, source.ErrAPI, 1,
			[]string{"page 7", "HTTP 400", "Cannot use both", "after 1 of 3 attempts"}, false},
		{"not JSON", sourcetest.Answer{Status: 200, Body: `<html>`}, source.ErrBadPage, 1, []string{"page 7", "body is not a page"}, false},
		{"no data array", sourcetest.Answer{Status: 200, Body: `{"items":[]}`}, source.ErrBadPage, 1, []string{"page 7", `no "data" array`}, false},
		{"scroll_param an object", sourcetest.Answer{Status: 200, Body: `{"data":[],"scroll_param":{"a":1}}`}, source.ErrBadPage, 1, []string{"page 7", `next token at "scroll_param"`, "want a string, a number, a boolean or null"}, false},
		{"truncated body", sourcetest.Answer{Status: 200, Body: `{"data":[{"id":"a"`}, source.ErrBadPage, 1, []string{"page 7", "unexpected end of JSON"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &sourcetest.Scripted{Answers: []sourcetest.Answer{c.answer}}
			_, err := sourcetest.NewSource(t, h, 3).Fetch(t.Context(), 7, source.Query{Since: cursor.Start})
			require.ErrorIs(t, err, c.is)
			for _, m := range c.msg {
				assert.Contains(t, err.Error(), m)
			}
			assert.Len(t, h.Requests(), c.tries)
			assert.Equal(t, c.retryable, retry.IsRetryable(err))
		})
	}
}

func TestSourceRefusesAnOversizedPage(t *testing.T) {
	big := `{"data":[{"id":"` + strings.Repeat("x", 2000) + `","updatedAt":"2024-01-01T00:00:00Z"}],"scroll_param":null}`
	srv := httptest.NewServer(&sourcetest.Scripted{Answers: []sourcetest.Answer{{Status: 200, Body: big}}})
	t.Cleanup(srv.Close)
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL, MaxPageBytes: 1000})
	require.NoError(t, err)
	_, err = src.Fetch(t.Context(), 2, source.Query{Since: cursor.Start})
	require.ErrorIs(t, err, source.ErrBadPage)
	assert.Contains(t, err.Error(), "larger than the limit of 1000 bytes")
}

func TestSourceSendsTheContractsParameters(t *testing.T) {
	h := &sourcetest.Scripted{Answers: []sourcetest.Answer{{Status: 200, Body: okPage}}}
	src := sourcetest.NewSource(t, h, 1)
	_, err := src.Fetch(t.Context(), 1, source.Query{Since: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)})
	require.NoError(t, err)
	tok := "MjAyNC0wMS0xNVQxMDozMDowMFo="
	_, err = src.Fetch(t.Context(), 2, source.Query{Token: &tok})
	require.NoError(t, err)
	assert.Equal(t, []string{"updated_since=2024-01-15T10%3A30%3A00Z", "scroll_param=MjAyNC0wMS0xNVQxMDozMDowMFo%3D"}, h.Requests())
}

// badPipeline runs one pass of a Pipeline over scripted pages into kfake and returns the error
// and the cursor it left.

// With many pipelines a page can be read in time and then wait behind the other passes for the
// slot longer than the request timeout: that wait is not the API's, so the page is kept, not
// failed and fetched again.
func TestSourceTimeoutLeavesOutTheWaitForTheSlot(t *testing.T) {
	const timeout = 50 * time.Millisecond
	// A page larger than what the connection buffers with the answer's headers: the fetch reads
	// most of it after its wait for the slot.
	page := strings.TrimSuffix(okPage, "}") + `,"pad":"` + strings.Repeat("x", 1<<20) + `"}`
	h := &sourcetest.Scripted{Answers: []sourcetest.Answer{{Status: 200, Body: page}}}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL, Timeout: timeout, MaxAttempts: 1})
	require.NoError(t, err)

	// Another pass queues for the only slot and gets it while the fetch is outside.
	lim, ctx, other := slotAndAnotherPass(t)
	fetched := make(chan error, 1)
	go func() {
		p, err := src.Fetch(ctx, 1, source.Query{Since: cursor.Start})
		if err == nil && p.Len() != 1 {
			err = fmt.Errorf("page of %d records, want 1", p.Len())
		}
		fetched <- err
	}()
	held := <-other
	// The API answered and the fetch waits for the slot back; it keeps waiting past its timeout.
	require.Eventually(t, func() bool { return lim.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	time.Sleep(4 * timeout)
	held.Release()
	require.NoError(t, <-fetched)
	assert.Len(t, h.Requests(), 1)
}

// slotAndAnotherPass holds the only slot of a limiter for a pass (ctx carries it) and starts
// another pass, queued for that slot: it comes on other once the first gives it away.
func slotAndAnotherPass(t *testing.T) (lim *schedule.Limiter, ctx context.Context, other <-chan *schedule.Slot) {
	t.Helper()
	lim = schedule.NewLimiter(1)
	ctx, slot, err := lim.Hold(t.Context(), nil)
	require.NoError(t, err)
	t.Cleanup(slot.Release)
	got := make(chan *schedule.Slot, 1)
	go func() {
		_, s, err := lim.Hold(t.Context(), nil)
		assert.NoError(t, err)
		got <- s
	}()
	require.Eventually(t, func() bool { return lim.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	return lim, ctx, got
}

// readWatch is a transport whose answers tell when their body is first read.
type readWatch struct {
	read chan struct{} // closed at the first Read of a body
	once sync.Once
}

func (w *readWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		resp.Body = &watchedBody{ReadCloser: resp.Body, w: w}
	}
	return resp, err
}

type watchedBody struct {
	io.ReadCloser
	w *readWatch
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.once.Do(func() { close(b.w.read) })
	return b.ReadCloser.Read(p)
}

// A page's body is read only once the pass has its slot back: while it queues for the slot the
// answer waits unread in the connection, so the pages in memory are bounded by the slots, not by
// the pipelines waiting for one.
func TestSourceReadsTheBodyOnlyWithTheSlot(t *testing.T) {
	srv := httptest.NewServer(&sourcetest.Scripted{Answers: []sourcetest.Answer{{Status: 200, Body: okPage}}})
	t.Cleanup(srv.Close)
	w := &readWatch{read: make(chan struct{})}
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL, Client: &http.Client{Transport: w}, MaxAttempts: 1})
	require.NoError(t, err)

	lim, ctx, other := slotAndAnotherPass(t)
	fetched := make(chan error, 1)
	go func() {
		_, err := src.Fetch(ctx, 1, source.Query{Since: cursor.Start})
		fetched <- err
	}()
	held := <-other // the fetch waits on the API without the slot
	// The answer came (the fetch queues for the slot again) and its body is not read meanwhile.
	require.Eventually(t, func() bool { return lim.Waiting() == 1 }, 10*time.Second, time.Millisecond)
	select {
	case <-w.read:
		t.Fatal("the body was read while the pass waited for its slot")
	default:
	}
	held.Release()
	require.NoError(t, <-fetched)
}

// An API that sends its answer's headers and then stalls mid-body holds the pass's slot for a
// moment only: another pass gets it while the body is awaited.
func TestSourceStalledBodyGivesTheSlotAway(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Length", "1000")
		rw.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(rw, `{"data":[`)
		rw.(http.Flusher).Flush()
		select { // the rest never comes
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) })
	w := &readWatch{read: make(chan struct{})}
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL, Client: &http.Client{Transport: w}, Timeout: time.Minute, MaxAttempts: 1})
	require.NoError(t, err)

	lim := schedule.NewLimiter(1)
	ctx, cancel := context.WithCancel(t.Context())
	ctx, slot, err := lim.Hold(ctx, nil)
	require.NoError(t, err)
	defer slot.Release()
	fetched := make(chan error, 1)
	go func() {
		_, err := src.Fetch(ctx, 1, source.Query{Since: cursor.Start})
		fetched <- err
	}()
	<-w.read // the pass has its slot back and reads the body, which stalls
	other := make(chan *schedule.Slot, 1)
	go func() {
		_, s, err := lim.Hold(t.Context(), nil)
		if assert.NoError(t, err) {
			other <- s
		}
	}()
	select {
	case s := <-other:
		s.Release()
	case <-time.After(10 * time.Second):
		t.Error("the slot stayed with a pass whose API stalled mid-body")
	}
	cancel()
	assert.ErrorIs(t, <-fetched, context.Canceled)
}
