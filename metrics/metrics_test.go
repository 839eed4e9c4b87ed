package metrics_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/metrics"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/schedule"
	"github.com/keysetsync/keysetsync/source"
)

var now = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// value gathers the registry and returns the value of the series name{labels...} (labels as
// name, value pairs besides pipeline), and whether it exists.
func value(t *testing.T, m *metrics.Metrics, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := m.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, s := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range s.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got["pipeline"] != "p1" {
				continue
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case s.Counter != nil:
				return s.Counter.GetValue(), true
			case s.Gauge != nil:
				return s.Gauge.GetValue(), true
			case s.Histogram != nil:
				return float64(s.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func TestObserverEventsBecomeMetrics(t *testing.T) {
	at := now.Add(-90 * time.Second)
	cases := []struct {
		name   string
		feed   func(o pipeline.Observer)
		metric string
		labels []string
		want   float64
	}{
		{"pages", func(o pipeline.Observer) {
			o.PageFetched(50, 9000, 20*time.Millisecond)
			o.PageFetched(7, 900, time.Millisecond)
		}, "keysetsync_pages_fetched_total", nil, 2},
		{"records fetched", func(o pipeline.Observer) { o.PageFetched(50, 9000, 0); o.PageFetched(7, 900, 0) }, "keysetsync_records_fetched_total", nil, 57},
		{"page fetch histogram count", func(o pipeline.Observer) { o.PageFetched(50, 9000, 0); o.PageFetched(7, 900, 0) }, "keysetsync_page_fetch_seconds", nil, 2},
		{"records produced leave dead letters out", func(o pipeline.Observer) { o.BatchAcked(1000, 3, time.Second); o.BatchAcked(20, 0, 0) }, "keysetsync_records_produced_total", nil, 1020},
		{"dead letters", func(o pipeline.Observer) { o.BatchAcked(1000, 3, time.Second); o.BatchAcked(20, 1, 0) }, "keysetsync_dead_letters_total", nil, 4},
		{"batch ack histogram count", func(o pipeline.Observer) { o.BatchAcked(1, 0, time.Second); o.BatchAcked(1, 0, 0) }, "keysetsync_batch_ack_seconds", nil, 2},
		{"retryable produce error", func(o pipeline.Observer) { o.ProduceFailed(true); o.ProduceFailed(true); o.ProduceFailed(false) }, "keysetsync_produce_errors_total", []string{"retryable", "true"}, 2},
		{"permanent produce error", func(o pipeline.Observer) { o.ProduceFailed(true); o.ProduceFailed(false) }, "keysetsync_produce_errors_total", []string{"retryable", "false"}, 1},
		{"produce errors start at zero", func(pipeline.Observer) {}, "keysetsync_produce_errors_total", []string{"retryable", "false"}, 0},
		{"api errors by kind", func(o pipeline.Observer) { o.APIFailed("503"); o.APIFailed("network"); o.APIFailed("503") }, "keysetsync_api_errors_total", []string{"kind", "503"}, 2},
		{"api retries by reason", func(o pipeline.Observer) { o.APIRetry("429"); o.APIRetry("network"); o.APIRetry("network") }, "keysetsync_api_retries_total", []string{"reason", "network"}, 2},
		{"cursor timestamp after commit", func(o pipeline.Observer) { o.CursorCommitted(at, 5*time.Millisecond) }, "keysetsync_cursor_timestamp_seconds", nil, float64(at.Unix())},
		{"cursor timestamp after load", func(o pipeline.Observer) { o.PassStarted(at) }, "keysetsync_cursor_timestamp_seconds", nil, float64(at.Unix())},
		{"cursor lag at scrape time", func(o pipeline.Observer) { o.CursorCommitted(at, 0) }, "keysetsync_cursor_lag_seconds", nil, 90},
		{"latest commit wins", func(o pipeline.Observer) { o.CursorCommitted(at.Add(-time.Hour), 0); o.CursorCommitted(at, 0) }, "keysetsync_cursor_lag_seconds", nil, 90},
		{"cursor commit histogram count", func(o pipeline.Observer) { o.CursorCommitted(at, time.Millisecond) }, "keysetsync_cursor_commit_seconds", nil, 1},
		{"tie overflows", func(o pipeline.Observer) { o.TieOverflow() }, "keysetsync_tie_overflows_total", nil, 1},
		{"transactions committed", func(o pipeline.Observer) { o.TxnCommitted(); o.TxnAborted(); o.TxnCommitted() }, "keysetsync_transactions_committed_total", nil, 2},
		{"transactions aborted", func(o pipeline.Observer) { o.TxnCommitted(); o.TxnAborted() }, "keysetsync_transactions_aborted_total", nil, 1},
		{"fenced", func(o pipeline.Observer) { o.Fenced(); o.TxnAborted() }, "keysetsync_fenced_total", nil, 1},
		{"invalid records", func(o pipeline.Observer) { o.InvalidRecord(); o.InvalidRecord() }, "keysetsync_invalid_records_total", nil, 2},
		{"late records", func(o pipeline.Observer) { o.LateRecord(); o.LateRecord(); o.LateRecord() }, "keysetsync_late_records_total", nil, 3},
		{"skipped records", func(o pipeline.Observer) { o.Skipped(20); o.Skipped(5) }, "keysetsync_records_skipped_total", nil, 25},
		{"remaining unknown until the API says", func(pipeline.Observer) {}, "keysetsync_records_remaining", nil, -1},
		{"remaining is the latest count", func(o pipeline.Observer) { o.RecordsRemaining(900); o.RecordsRemaining(850) }, "keysetsync_records_remaining", nil, 850},
		{"passes ok", func(o pipeline.Observer) { o.PassFinished(nil); o.PassFinished(errors.New("x")); o.PassFinished(nil) }, "keysetsync_passes_total", []string{"result", "ok"}, 2},
		{"passes failed", func(o pipeline.Observer) { o.PassFinished(nil); o.PassFinished(errors.New("x")) }, "keysetsync_passes_total", []string{"result", "failed"}, 1},
		{"not degraded by a failed pass", func(o pipeline.Observer) { o.PassFinished(errors.New("x")); o.PassFinished(nil) }, "keysetsync_degraded", nil, 0},
		{"degraded by records the API cannot serve", func(o pipeline.Observer) { o.PassFinished(tieOverflow) }, "keysetsync_degraded", nil, 1},
		{"degraded for good", func(o pipeline.Observer) { o.PassFinished(tieOverflow); o.PassFinished(nil) }, "keysetsync_degraded", nil, 1},
		{"no success yet", func(o pipeline.Observer) { o.PassFinished(errors.New("x")) }, "keysetsync_last_success_timestamp_seconds", nil, 0},
		{"last success", func(o pipeline.Observer) { o.PassFinished(nil); o.PassFinished(errors.New("x")) }, "keysetsync_last_success_timestamp_seconds", nil, float64(now.Unix())},
		{"slot waits", func(o pipeline.Observer) {
			o.(*metrics.Metrics).SlotWaited(time.Second)
			o.(*metrics.Metrics).SlotWaited(0)
		}, "keysetsync_slot_wait_seconds", nil, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := metrics.New("p1", metrics.WithoutRuntime(), metrics.WithClock(func() time.Time { return now }))
			c.feed(m)
			got, ok := value(t, m, c.metric, c.labels...)
			require.True(t, ok, "no series %s%v", c.metric, c.labels)
			assert.InDelta(t, c.want, got, 1e-6)
		})
	}
}

// tieOverflow is what Pipeline.Sync returns after a pass whose walk overflowed, as once wraps it.
var tieOverflow = fmt.Errorf("pipeline %q: %w", "p1", &source.TieOverflowError{
	Overflows: []source.TieOverflow{{At: time.Date(2024, 1, 1, 0, 0, 5, 0, time.UTC), Page: 3, PageSize: 50, Delivered: 50}}, Total: 1})

func TestDegradedNamesTheFirstLossAndStays(t *testing.T) {
	m := metrics.New("p1", metrics.WithoutRuntime())
	ok, _ := m.Degraded()
	assert.False(t, ok)
	m.PassFinished(errors.New("API down"))
	ok, _ = m.Degraded()
	assert.False(t, ok, "a failed pass heals with the next one: not degraded")

	m.PassFinished(tieOverflow)
	later := &source.TieOverflowError{Overflows: []source.TieOverflow{{At: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), Page: 1}}, Total: 1}
	m.PassFinished(later)
	m.PassFinished(nil)
	ok, reason := m.Degraded()
	assert.True(t, ok, "the records stay missing after a clean pass")
	assert.Contains(t, reason, "2024-01-01T00:00:05Z (page 3: 50 delivered)", "the first loss is named: the earliest time to re-read from")
}

func TestCursorUnknownUntilLoaded(t *testing.T) {
	m := metrics.New("p1", metrics.WithoutRuntime())
	assert.False(t, m.Loaded())
	_, ok := value(t, m, "keysetsync_cursor_lag_seconds")
	assert.False(t, ok, "no lag while no cursor is known")

	m.PassStarted(time.Time{}) // no cursor committed yet: loaded, still no position
	assert.True(t, m.Loaded())
	_, ok = value(t, m, "keysetsync_cursor_lag_seconds")
	assert.False(t, ok)
	ts, _ := value(t, m, "keysetsync_cursor_timestamp_seconds")
	assert.Zero(t, ts)
}

func TestEveryMetricIsNamedAndLabelled(t *testing.T) {
	m := metrics.New("p1", metrics.WithoutRuntime(), metrics.WithClock(func() time.Time { return now }))
	m.CursorCommitted(now, 0)
	m.APIFailed("500")
	m.APIRetry("500")
	want := []string{
		"pages_fetched_total", "records_fetched_total", "records_produced_total", "dead_letters_total",
		"produce_errors_total", "api_errors_total", "api_retries_total", "batch_ack_seconds", "cursor_commit_seconds",
		"page_fetch_seconds", "cursor_timestamp_seconds", "cursor_lag_seconds", "tie_overflows_total",
		"invalid_records_total", "late_records_total", "records_skipped_total", "passes_total", "records_remaining", "degraded",
		"transactions_committed_total", "transactions_aborted_total", "fenced_total", "slot_wait_seconds",
	}
	for i := range want {
		want[i] = "keysetsync_" + want[i]
	}
	n, err := testutil.GatherAndCount(m.Registry(), want...)
	require.NoError(t, err)
	assert.Equal(t, len(want)+2, n, "one series each, two for produce_errors_total and passes_total, and histograms count once")
	problems, err := testutil.GatherAndLint(m.Registry())
	require.NoError(t, err)
	assert.Empty(t, problems)
}

// scrape returns what h serves over HTTP.
func scrape(t *testing.T, h http.Handler) []byte {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return body
}

func TestHandlerServesTextFormatAndRuntimeMetrics(t *testing.T) {
	m := metrics.New("p1")
	m.BatchAcked(42, 0, time.Millisecond)
	body := scrape(t, m.Handler())
	assert.Contains(t, string(body), `keysetsync_records_produced_total{pipeline="p1"} 42`)
	assert.True(t, strings.Contains(string(body), "go_goroutines"), "Go runtime collector registered")
}

// TestOneProcessServesEveryPipeline: the pipelines of a process share one registry, each
// series labelled with its pipeline, next to the process's slot gauges.
func TestOneProcessServesEveryPipeline(t *testing.T) {
	p := metrics.NewProcess(metrics.WithoutRuntime())
	a, b := p.Pipeline("a"), p.Pipeline("b")
	a.BatchAcked(3, 0, 0)
	b.BatchAcked(5, 0, 0)
	b.SlotWaited(2 * time.Second)
	p.WatchLimiter(schedule.NewLimiter(7))
	body := scrape(t, p.Handler())
	for _, line := range []string{
		`keysetsync_records_produced_total{pipeline="a"} 3`,
		`keysetsync_records_produced_total{pipeline="b"} 5`,
		`keysetsync_slot_wait_seconds_count{pipeline="b"} 1`,
		`keysetsync_pass_slots 7`,
		`keysetsync_passes_waiting 0`,
	} {
		assert.Contains(t, string(body), line+"\n")
	}
	problems, err := testutil.GatherAndLint(p.Registry())
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestStatusOfAPipeline(t *testing.T) {
	clock := now
	since := now
	cases := []struct {
		name string
		feed func(m *metrics.Metrics)
		want metrics.Status
	}{
		{"connecting", func(*metrics.Metrics) {}, metrics.Status{Status: "unavailable", Reason: "connecting to Kafka: the topics are not checked yet"}},
		{"open, no cursor yet", func(m *metrics.Metrics) { m.Opened() }, metrics.Status{Status: "unavailable", Reason: "the cursor is not loaded yet"}},
		{"loaded", func(m *metrics.Metrics) { m.Opened(); m.PassStarted(time.Time{}) }, metrics.Status{Status: "ok", PassStarted: &since}},
		{"a pass running long after its API's last page: stalled", func(m *metrics.Metrics) {
			m.Opened()
			m.PassStarted(time.Time{})
			m.PassFinished(nil)
			clock = clock.Add(time.Minute)
			m.PassStarted(time.Time{})
			clock = clock.Add(time.Minute)
			m.PageFetched(10, 1000, time.Millisecond)
			clock = clock.Add(time.Hour)
		}, metrics.Status{Status: "ok", LastSuccess: &since, PassStarted: ptr(now.Add(time.Minute)), LastPage: ptr(now.Add(2 * time.Minute))}},
		{"failing since the first failure in a row", func(m *metrics.Metrics) {
			m.Opened()
			m.PassStarted(time.Time{})
			m.PassFinished(errors.New("first"))
			clock = clock.Add(time.Minute)
			m.PassFinished(errors.New("API down"))
		}, metrics.Status{Status: "failing", Error: "API down", Since: &since, Failures: 2}},
		{"healed", func(m *metrics.Metrics) {
			m.Opened()
			m.PassStarted(time.Time{})
			m.PassFinished(errors.New("API down"))
			clock = clock.Add(time.Minute)
			m.PassFinished(nil)
		}, metrics.Status{Status: "ok", LastSuccess: ptr(now.Add(time.Minute))}},
		{"degraded", func(m *metrics.Metrics) {
			m.Opened()
			m.PassStarted(time.Time{})
			m.PassFinished(tieOverflow)
			m.PassFinished(nil)
		}, metrics.Status{Status: "degraded", Reason: tieOverflow.Error(), LastSuccess: &since}},
		{"failing before loading stays unavailable, with its error", func(m *metrics.Metrics) {
			m.Opened()
			m.PassFinished(errors.New("no cursor"))
		}, metrics.Status{Status: "unavailable", Reason: "the cursor is not loaded yet", Error: "no cursor", Since: &since, Failures: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clock = now
			m := metrics.New("p1", metrics.WithoutRuntime(), metrics.WithClock(func() time.Time { return clock }))
			c.feed(m)
			c.want.Pipeline = "p1"
			assert.Equal(t, c.want, m.Status())
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestProcessReadiness: the process is ready once every pipeline loaded its cursor, unless
// one is degraded; failing pipelines are listed but do not make it unready.
func TestProcessReadiness(t *testing.T) {
	p := metrics.NewProcess(metrics.WithoutRuntime())
	ready, r := p.Ready()
	assert.False(t, ready, "no pipeline: nothing is synced")
	ms := []*metrics.Metrics{p.Pipeline("a"), p.Pipeline("b"), p.Pipeline("c")}
	for _, m := range ms {
		m.Opened()
	}
	ms[0].PassStarted(time.Time{})
	ms[2].PassStarted(time.Time{})
	ready, r = p.Ready()
	assert.False(t, ready)
	assert.Equal(t, "unavailable", r.Status)
	assert.Equal(t, `1 of 3 pipelines unavailable, the first: pipeline "b": the cursor is not loaded yet`, r.Reason)
	assert.Equal(t, map[string]int{"ok": 2, "unavailable": 1}, r.Counts)

	ms[1].PassStarted(time.Time{})
	ms[1].PassFinished(errors.New("API down"))
	ready, r = p.Ready()
	assert.True(t, ready, "a failing pipeline may heal at its next pass")
	assert.Equal(t, "ok", r.Status)
	assert.Equal(t, map[string]int{"ok": 2, "failing": 1}, r.Counts)
	require.Len(t, r.Pipelines, 3)
	assert.Equal(t, []string{"a", "b", "c"}, []string{r.Pipelines[0].Pipeline, r.Pipelines[1].Pipeline, r.Pipelines[2].Pipeline}, "in the config's order")
	assert.Equal(t, "API down", r.Pipelines[1].Error)

	ms[2].PassFinished(tieOverflow)
	ready, r = p.Ready()
	assert.False(t, ready)
	assert.Equal(t, "degraded", r.Status)
	assert.Contains(t, r.Reason, `1 of 3 pipelines degraded, the first: pipeline "c": `)
}
