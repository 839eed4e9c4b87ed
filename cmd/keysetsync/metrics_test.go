package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/metrics"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/source"
)

// get returns the status and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// sample returns the value of the series `name{pipeline="<pipeline>"}` in a text exposition.
func sample(t *testing.T, exposition, name, pipeline string) (float64, bool) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+`{pipeline="`+pipeline+`"}`) + ` (\S+)$`)
	m := re.FindStringSubmatch(exposition)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v, true
}

// metricsBase awaits the metrics server's address in the log ("metrics listening"
// addr=127.0.0.1:port) and returns its base URL.
// withoutTimes is a /readyz body without its pipelines' times, after checking that each is a
// valid RFC 3339 time not in the future and, when want names any, that each pipeline has
// exactly those.
func withoutTimes(t *testing.T, body string, want ...string) string {
	t.Helper()
	var r map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &r), body)
	ps, _ := r["pipelines"].([]any)
	for _, p := range ps {
		p := p.(map[string]any)
		var got []string
		for _, k := range []string{"pass_started", "last_page", "last_success"} {
			v, ok := p[k]
			if !ok {
				continue
			}
			got = append(got, k)
			at, err := time.Parse(time.RFC3339Nano, v.(string))
			require.NoError(t, err, "%s of %v", k, p["pipeline"])
			assert.False(t, at.After(time.Now()), "%s of %v in the future", k, p["pipeline"])
			delete(p, k)
		}
		if len(want) > 0 {
			assert.ElementsMatch(t, want, got, "times of pipeline %v: %s", p["pipeline"], body)
		}
	}
	b, err := json.Marshal(r)
	require.NoError(t, err)
	return string(b)
}

func metricsBase(t *testing.T, stderr *logtest.Buffer) string {
	t.Helper()
	addrRE := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)
	var base string
	require.Eventually(t, func() bool {
		m := addrRE.FindStringSubmatch(stderr.String())
		if m != nil {
			base = "http://" + m[1]
		}
		return m != nil
	}, 30*time.Second, 5*time.Millisecond, "no metrics address logged: %s", stderr.String())
	return base
}

func TestRunServesMetricsAndProbes(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		const records = 500
		api, err := playground.New(playground.Config{Records: records, TieWidth: 20})
		require.NoError(t, err)
		srv := httptest.NewServer(api.Handler())
		t.Cleanup(srv.Close)
		var maxUpdated time.Time
		for _, u := range api.Snapshot() {
			at, err := time.Parse(time.RFC3339, u.UpdatedAt)
			require.NoError(t, err)
			if at.After(maxUpdated) {
				maxUpdated = at
			}
		}

		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		stderr := &logtest.Buffer{}
		e := &env{stdout: io.Discard, stderr: stderr, getenv: func(k string) string {
			return map[string]string{"KEYSETSYNC_METRICS_ADDR": "127.0.0.1:0"}[k] // through the env var
		}}
		code := -1
		done := make(chan struct{})
		go func() {
			defer close(done)
			code = dispatch(ctx, e, []string{"run", "--brokers", strings.Join(tg.Brokers, ","), "--api-url", srv.URL + "/pagination/keyset",
				"--interval", "1h", "--batch-records", "100", "--pipeline", "metrics-it", "--topic-replication-factor", "1",
				"--topic", kafkatest.Topic(t, "u"), "--cursor-topic", kafkatest.Topic(t, "c")})
		}()

		base := metricsBase(t, stderr)

		code200, body := get(t, base+"/healthz")
		assert.Equal(t, http.StatusOK, code200, body)
		require.Eventually(t, func() bool {
			status, _ := get(t, base+"/readyz")
			return status == http.StatusOK
		}, 30*time.Second, 10*time.Millisecond, "never ready: %s", stderr.String())
		_, body = get(t, base+"/readyz")
		// Ready once the first pass loaded its cursor; where that pass stands now is a race.
		assert.JSONEq(t, `{"status":"ok","counts":{"ok":1},"pipelines":[{"pipeline":"metrics-it","status":"ok"}]}`, withoutTimes(t, body))

		// Ready means the cursor is loaded; the first pass ends when passes_total{result="ok"} is 1.
		var exposition string
		require.Eventually(t, func() bool {
			_, exposition = get(t, base+"/metrics")
			return strings.Contains(exposition, `keysetsync_passes_total{pipeline="metrics-it",result="ok"} 1`)
		}, 30*time.Second, 10*time.Millisecond, "first pass did not finish: %s", stderr.String())

		produced, ok := sample(t, exposition, "keysetsync_records_produced_total", "metrics-it")
		require.True(t, ok, exposition)
		assert.EqualValues(t, records, produced)
		fetched, _ := sample(t, exposition, "keysetsync_records_fetched_total", "metrics-it")
		assert.GreaterOrEqual(t, fetched, float64(records))
		ts, ok := sample(t, exposition, "keysetsync_cursor_timestamp_seconds", "metrics-it")
		require.True(t, ok, exposition)
		assert.Equal(t, float64(maxUpdated.Unix()), ts)
		lag, ok := sample(t, exposition, "keysetsync_cursor_lag_seconds", "metrics-it")
		require.True(t, ok, exposition)
		assert.InDelta(t, time.Since(maxUpdated).Seconds(), lag, 60)
		acks, _ := sample(t, exposition, "keysetsync_batch_ack_seconds_count", "metrics-it")
		commits, _ := sample(t, exposition, "keysetsync_cursor_commit_seconds_count", "metrics-it")
		assert.GreaterOrEqual(t, acks, 5.0, "500 records in batches of about 100")
		assert.Equal(t, acks, commits, "one cursor commit per acknowledged batch")
		assert.Contains(t, exposition, `keysetsync_passes_total{pipeline="metrics-it",result="failed"} 0`)

		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("run did not stop after cancellation")
		}
		assert.Equal(t, 0, code, stderr.String())
		status, _ := get(t, base+"/healthz")
		assert.Zero(t, status, "the server shuts down with the command")
	})
}

func TestReadyzSaysWhyItIsNotReady(t *testing.T) {
	p := metrics.NewProcess(metrics.WithoutRuntime())
	m := p.Pipeline("p")
	s := metrics.NewServer(p)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	probe := func() (int, metrics.Readiness) {
		status, body := get(t, srv.URL+"/readyz")
		var v metrics.Readiness
		require.NoError(t, json.Unmarshal([]byte(body), &v), body)
		require.Len(t, v.Pipelines, 1, body)
		assert.Equal(t, "p", v.Pipelines[0].Pipeline)
		return status, v
	}

	status, body := probe()
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, "unavailable", body.Status)
	assert.Contains(t, body.Reason, "connecting to Kafka")

	m.Opened()
	status, body = probe()
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Contains(t, body.Reason, "cursor is not loaded")

	m.PassStarted(time.Time{}) // first pass, nothing committed yet: loaded all the same
	status, body = probe()
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "ok", body.Status)

	m.PassFinished(errors.New("API down")) // a failed pass: the next one may heal it
	status, body = probe()
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "failing", body.Pipelines[0].Status)
	assert.Equal(t, "API down", body.Pipelines[0].Error)

	m.PassFinished(fmt.Errorf("%w: %w", errMayBeMissing, &source.TieOverflowError{
		Overflows: []source.TieOverflow{{At: time.Date(2024, 1, 1, 0, 0, 7, 0, time.UTC), Page: 4, Delivered: 50}}, Total: 1}))
	m.PassFinished(nil)
	status, body = probe()
	assert.Equal(t, http.StatusServiceUnavailable, status, "records the API cannot serve stay missing")
	assert.Equal(t, "degraded", body.Status)
	assert.Contains(t, body.Reason, "2024-01-01T00:00:07Z (page 4: 50 delivered)")

	status, _ = get(t, srv.URL+"/healthz")
	assert.Equal(t, http.StatusOK, status)
}

func TestOnceWithMetricsAddrFailsClearlyWhenThePortIsTaken(t *testing.T) {
	taken := httptest.NewServer(http.NotFoundHandler())
	defer taken.Close()
	code, _, stderr := run(t.Context(), nil, "once", "--metrics-addr", strings.TrimPrefix(taken.URL, "http://"), "--brokers", "127.0.0.1:1")
	assert.Equal(t, 1, code, stderr)
	assert.Contains(t, stderr, "metrics server")
	assert.Contains(t, stderr, "address already in use")
}

func TestHelpListsMetricsAddr(t *testing.T) {
	for _, cmd := range []string{"once", "run"} {
		code, _, stderr := run(t.Context(), nil, cmd, "--help")
		require.Equal(t, 0, code)
		assert.Contains(t, stderr, "--metrics-addr  (env KEYSETSYNC_METRICS_ADDR, default \"\")")
	}
}

// TestRunServesEveryPipelineOnOneMetricsServer: with a pipelines list and one --metrics-addr,
// one server has every pipeline's series and status, and the process's pass limit.
func TestRunServesEveryPipelineOnOneMetricsServer(t *testing.T) {
	tg := kafkatest.NewFake(t)
	path, _, _ := twoPipelines(t, tg, [2]int{30, 60})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stderr := &logtest.Buffer{}
	e := &env{stdout: io.Discard, stderr: stderr, getenv: func(string) string { return "" }}
	done := make(chan int)
	go func() {
		done <- dispatch(ctx, e, []string{"run", "--config", path, "--interval", "1h", "--metrics-addr", "127.0.0.1:0",
			"--max-concurrent-passes", "3", "--delivery", "at-least-once"})
	}()
	base := metricsBase(t, stderr)
	assert.Equal(t, 1, strings.Count(stderr.String(), "metrics listening"), "one server for both pipelines")

	var exposition string
	require.Eventually(t, func() bool {
		_, exposition = get(t, base+"/metrics")
		return strings.Contains(exposition, `keysetsync_passes_total{pipeline="pa",result="ok"} 1`) &&
			strings.Contains(exposition, `keysetsync_passes_total{pipeline="pb",result="ok"} 1`)
	}, 30*time.Second, 10*time.Millisecond, "first passes did not finish: %s", stderr.String())
	for _, line := range []string{
		`keysetsync_records_produced_total{pipeline="pa"} 30`,
		`keysetsync_records_produced_total{pipeline="pb"} 60`,
		`keysetsync_slot_wait_seconds_count{pipeline="pa"}`,
		"keysetsync_pass_slots 3\n",
	} {
		assert.Contains(t, exposition, line)
	}
	status, body := get(t, base+"/readyz")
	assert.Equal(t, http.StatusOK, status, body)
	// Between passes (a 1h interval): no pass running, pages answered, a success.
	assert.JSONEq(t, `{"status":"ok","counts":{"ok":2},"pipelines":[{"pipeline":"pa","status":"ok"},{"pipeline":"pb","status":"ok"}]}`,
		withoutTimes(t, body, "last_page", "last_success"))

	cancel()
	select {
	case code := <-done:
		assert.Equal(t, 0, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after cancellation")
	}
}
