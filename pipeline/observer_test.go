package pipeline_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/pipelinetest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/source"
)

// recorder is an Observer that remembers what it was told.
type recorder struct {
	pipeline.NopObserver
	mu                                  sync.Mutex
	started                             []time.Time
	finished                            []error
	pages, fetched, produced, dead, ack int
	skipped, invalid, late, ties        int
	retries, failures                   []string
	produceErrs                         []bool
	commits                             []time.Time
}

func (r *recorder) do(f func()) { r.mu.Lock(); defer r.mu.Unlock(); f() }

func (r *recorder) PassStarted(at time.Time) { r.do(func() { r.started = append(r.started, at) }) }
func (r *recorder) PassFinished(err error)   { r.do(func() { r.finished = append(r.finished, err) }) }
func (r *recorder) PageFetched(n, _ int, _ time.Duration) {
	r.do(func() { r.pages++; r.fetched += n })
}
func (r *recorder) APIRetry(reason string) { r.do(func() { r.retries = append(r.retries, reason) }) }
func (r *recorder) APIFailed(kind string)  { r.do(func() { r.failures = append(r.failures, kind) }) }
func (r *recorder) BatchAcked(n, dead int, d time.Duration) {
	r.do(func() { r.produced += n; r.dead += dead; r.ack++ })
}
func (r *recorder) ProduceFailed(retryable bool) {
	r.do(func() { r.produceErrs = append(r.produceErrs, retryable) })
}
func (r *recorder) CursorCommitted(at time.Time, _ time.Duration) {
	r.do(func() { r.commits = append(r.commits, at) })
}
func (r *recorder) TieOverflow()   { r.do(func() { r.ties++ }) }
func (r *recorder) InvalidRecord() { r.do(func() { r.invalid++ }) }
func (r *recorder) LateRecord()    { r.do(func() { r.late++ }) }
func (r *recorder) Skipped(n int)  { r.do(func() { r.skipped += n }) }

func TestObserverSeesWhatStatsCount(t *testing.T) {
	tg := kafkatest.NewFake(t)
	p := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: 700, PageSize: 50, TieWidth: 20, Seed: 5}, BatchRecords: 200})
	rec := &recorder{}
	src, err := source.NewSource(source.SourceConfig{URL: p.URL})
	require.NoError(t, err)
	s, err := pipeline.New(pipeline.Config{Pipeline: p.Name, Source: src, Topic: p.Topic, Store: p.Store, Codec: p.Codec,
		BatchRecords: 200, Observer: rec, Sink: tg.Sink(t, 200)})
	require.NoError(t, err)

	st, err := s.Pass(t.Context())
	require.NoError(t, err)
	st2, err := s.Pass(t.Context()) // nothing new: the record at the cursor is skipped
	require.NoError(t, err)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.started, 2)
	assert.True(t, rec.started[0].IsZero(), "no cursor before the first pass")
	assert.True(t, rec.started[1].Equal(st.Cursor), "the second pass loads the first one's cursor")
	assert.Equal(t, []error{nil, nil}, rec.finished)
	assert.Equal(t, st.Pages+st2.Pages, rec.pages)
	assert.Equal(t, st.Fetched+st2.Fetched, rec.fetched)
	assert.Equal(t, 700, rec.produced)
	assert.Equal(t, st.Batches, rec.ack)
	assert.Len(t, rec.commits, st.Batches)
	assert.True(t, rec.commits[len(rec.commits)-1].Equal(p.MaxUpdatedAt(t)))
	assert.Equal(t, st.Skipped+st2.Skipped, rec.skipped)
	assert.Positive(t, rec.skipped)
	assert.Zero(t, rec.dead+rec.invalid+rec.late+rec.ties)
	assert.Empty(t, rec.retries)
	assert.Empty(t, rec.failures)
	assert.Empty(t, rec.produceErrs)
}

func TestObserverSeesAPIRetriesAndFailures(t *testing.T) {
	api, err := playground.New(playground.Config{Records: 10})
	require.NoError(t, err)
	var calls atomic.Int32
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(status)
			return
		}
		api.Handler().ServeHTTP(w, r)
	}))
	defer srv.Close()
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	walk := func(maxAttempts int) (*recorder, error) {
		calls.Store(0)
		src, err := source.NewSource(source.SourceConfig{URL: srv.URL + "/pagination/keyset", MaxAttempts: maxAttempts, BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond})
		require.NoError(t, err)
		rec := &recorder{}
		w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{Observer: rec}, nil)
		for {
			if _, err := w.Next(context.Background()); err != nil {
				return rec, err
			}
		}
	}

	rec, err := walk(3) // two 503s, then the page
	require.Error(t, err)
	assert.ErrorIs(t, err, io.EOF)
	assert.Equal(t, []string{"503", "503"}, rec.retries)
	assert.Empty(t, rec.failures)
	assert.Equal(t, 10, rec.fetched)

	rec, err = walk(2) // gives up after the second 503
	assert.ErrorIs(t, err, source.ErrAPI)
	assert.Equal(t, []string{"503"}, rec.retries)
	assert.Equal(t, []string{"503"}, rec.failures)

	status = http.StatusNotFound // not retryable: fails at once
	rec, err = walk(5)
	assert.ErrorIs(t, err, source.ErrAPI)
	assert.Empty(t, rec.retries)
	assert.Equal(t, []string{"404"}, rec.failures)
	assert.Zero(t, rec.pages)
}

func TestAPIErrorKind(t *testing.T) {
	assert.Equal(t, "429", source.APIErrorKind(&source.HTTPError{Status: 429}))
	assert.Equal(t, "bad_page", source.APIErrorKind(&source.PageError{Err: errors.New("x")}))
	assert.Equal(t, "canceled", source.APIErrorKind(context.Canceled))
	assert.Equal(t, "network", source.APIErrorKind(errors.New("connection refused")))
}
