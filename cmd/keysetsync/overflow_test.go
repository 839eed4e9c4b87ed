package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/playground"
)

// overflowAPI is the reference contract (no after-id, exclusive scroll_param) with ties of 120
// records on pages of 50: the API cannot serve the records of a tie past its first page, so
// a sync delivers about 850 of the 2,000.
var overflowAPI = playground.Config{Records: 2000, TieWidth: 120, PageSize: 50}

// overflowTime matches the time a tie overflow error names, with its page and count.
var overflowTime = regexp.MustCompile(`(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \(page \d+: \d+ (?:delivered|read)\)`)

// tieTimes is the set of updatedAt values of the playground's records.
func tieTimes(t *testing.T, api *playground.Server) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, u := range api.Snapshot() {
		out[u.UpdatedAt] = true
	}
	return out
}

// TestTieOverflowIsLoud: records an API cannot serve make once exit 3 (after it committed
// everything it delivered) and name the times, unless --accept-tie-overflow (flag, env var or
// config key) accepts the loss; verify, whose own walk has the same blind spot, says it cannot
// verify and exits 3 instead of reporting nothing missing.
func TestTieOverflowIsLoud(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		f := newToolsFixture(t, tg, overflowAPI, 1)
		times := tieTimes(t, f.api)
		accepting := writeConfig(t, "accept-tie-overflow: true\n")
		cases := []struct {
			name string
			vars map[string]string
			args []string
			code int
		}{
			{"once", nil, []string{"once"}, exitMayBeMissing},
			{"once accepting by flag", nil, []string{"once", "--accept-tie-overflow"}, 0},
			{"once accepting by env var", map[string]string{"KEYSETSYNC_ACCEPT_TIE_OVERFLOW": "true"}, []string{"once"}, 0},
			{"once accepting by config key", nil, []string{"once", "--config", accepting}, 0},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				topic, cursors := kafkatest.Topic(t, "users"), kafkatest.Topic(t, "cursors")
				vars := map[string]string{"KEYSETSYNC_TOPIC": topic, "KEYSETSYNC_CURSOR_TOPIC": cursors}
				for k, v := range f.vars {
					if _, set := vars[k]; !set {
						vars[k] = v
					}
				}
				for k, v := range c.vars {
					vars[k] = v
				}
				code, _, stderr := run(t.Context(), vars, c.args...)
				require.Equal(t, c.code, code, stderr)
				assert.Contains(t, stderr, "level=ERROR", "an accepted loss is still logged")
				assert.NotContains(t, stderr, "retrying", "a tie overflow is not retried: the API cannot serve those records")
				if c.code == exitMayBeMissing {
					assert.Contains(t, stderr, "keysetsync once: synced, but records may be missing: the source cannot serve them")
					m := overflowTime.FindStringSubmatch(stderr)
					require.NotNil(t, m, "the error names the times: %s", stderr)
					assert.True(t, times[m[1]], "%s is the updatedAt of a tie", m[1])
				}

				// The committed cursor covers everything delivered: nothing to re-send.
				msgs := kafkatest.ReadAll(t, tg, topic)
				require.NotEmpty(t, msgs)
				assert.Less(t, len(msgs), overflowAPI.Records, "records past the first page of each tie are lost")
				cur := kafkatest.Cursor(t, tg, cursors, "tools")
				assert.EqualValues(t, len(msgs), cur.Records)
				var newest time.Time
				for _, m := range msgs {
					at, err := cursor.ParseTime(m.Headers["keysetsync.updated_at"])
					require.NoError(t, err)
					if at.After(newest) {
						newest = at
					}
				}
				assert.Equal(t, newest, cur.LastUpdatedAt)
			})
		}

		t.Run("verify cannot verify", func(t *testing.T) {
			code, _, stderr := f.run(t, "once", "--accept-tie-overflow")
			require.Equal(t, 0, code, stderr)
			code, stdout, stderr := f.run(t, "verify")
			require.Equal(t, exitMayBeMissing, code, stdout+stderr)
			assert.Contains(t, stdout, "cannot verify: the API could not page through")
			assert.Contains(t, stderr, "keysetsync verify: cannot verify")
			assert.NotContains(t, stdout, "missing=", "no comparison reported as if it were complete")
			m := overflowTime.FindStringSubmatch(stdout)
			require.NotNil(t, m, "verify names the times: %s", stdout)
			assert.True(t, times[m[1]], "%s is the updatedAt of a tie", m[1])
		})
	})
}

// await polls cond until it holds, failing the test when ctx ends first. It observes a state
// that changes without a notification (an HTTP endpoint, a log line), bounded by ctx.
func await(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			require.FailNow(t, "not seen: "+what, "%v", context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// TestRunShowsADegradedPipeline: run keeps going after a pass with records the API cannot
// serve, logs the ERROR, and /readyz and keysetsync_degraded show the pipeline degraded; with
// --accept-tie-overflow it stays ready. A signal still stops run with 0.
func TestRunShowsADegradedPipeline(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		cases := []struct {
			name   string
			accept bool
		}{
			{"degraded", false},
			{"accepted", true},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				f := newToolsFixture(t, tg, overflowAPI, 1)
				bound, stop := context.WithTimeout(t.Context(), 2*time.Minute)
				defer stop()
				ctx, cancel := context.WithCancel(bound)
				defer cancel()
				stderr := &logtest.Buffer{}
				vars := f.vars
				vars["KEYSETSYNC_METRICS_ADDR"] = "127.0.0.1:0"
				e := &env{stdout: io.Discard, stderr: stderr, getenv: func(k string) string { return vars[k] }}
				args := []string{"run", "--interval", "1h"}
				if c.accept {
					args = append(args, "--accept-tie-overflow")
				}
				code := -1
				done := make(chan struct{})
				go func() {
					defer close(done)
					code = dispatch(ctx, e, args)
				}()

				addrRE := regexp.MustCompile(`msg="metrics listening" .*\baddr=(\S+)`)
				var base string
				await(bound, t, "metrics address in the log", func() bool {
					m := addrRE.FindStringSubmatch(stderr.String())
					if m != nil {
						base = "http://" + m[1]
					}
					return m != nil
				})
				probe := func() (int, map[string]string) {
					status, body := get(t, base+"/readyz")
					var v map[string]string
					_ = json.Unmarshal([]byte(body), &v)
					return status, v
				}
				var exposition string
				if c.accept {
					await(bound, t, "first pass finished", func() bool {
						_, exposition = get(t, base+"/metrics")
						return strings.Contains(exposition, `keysetsync_passes_total{pipeline="tools",result="ok"} 1`)
					})
					status, body := probe()
					assert.Equal(t, http.StatusOK, status, body)
					assert.Equal(t, "ok", body["status"])
				} else {
					var body map[string]string
					await(bound, t, "readyz degraded", func() bool {
						var status int
						status, body = probe()
						return status == http.StatusServiceUnavailable && body["status"] == "degraded"
					})
					assert.Contains(t, body["reason"], "records at ")
					assert.Regexp(t, overflowTime, body["reason"], "the reason names the times")
					_, exposition = get(t, base+"/metrics")
					assert.Contains(t, stderr.String(), `level=ERROR msg="pass finished, but records may be missing: the pipeline is degraded until restarted"`)
				}
				degraded, ok := sample(t, exposition, "keysetsync_degraded", "tools")
				require.True(t, ok, exposition)
				assert.Equal(t, map[bool]float64{false: 1, true: 0}[c.accept], degraded)

				cancel()
				select {
				case <-done:
				case <-bound.Done():
					t.Fatal("run did not stop after cancellation")
				}
				assert.Equal(t, 0, code, stderr.String())
			})
		}
	})
}

// TestOnceExitCodeWithSeveralPipelines: with a pipelines list, a failed pipeline (1) wins over
// one whose API could not serve every record (3), which wins over the ones that synced (0).
func TestOnceExitCodeWithSeveralPipelines(t *testing.T) {
	tg := kafkatest.NewFake(t)
	overflowing := newToolsFixture(t, tg, overflowAPI, 1)
	fine := newToolsFixture(t, tg, playground.Config{Records: 50}, 1)
	item := func(name, url string) string {
		return "  - {pipeline: " + name + ", api-url: '" + url + "', topic: '" + kafkatest.Topic(t, "users") + "'}\n"
	}
	cases := []struct {
		name  string
		items string
		code  int
	}{
		{"all synced", item("fine", fine.vars["KEYSETSYNC_API_URL"]), 0},
		{"records missing", item("fine", fine.vars["KEYSETSYNC_API_URL"]) + item("ties", overflowing.vars["KEYSETSYNC_API_URL"]), exitMayBeMissing},
		{"a failure wins", item("ties", overflowing.vars["KEYSETSYNC_API_URL"]) + item("down", "http://127.0.0.1:1/keyset"), 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			head := "brokers: " + strings.Join(tg.Brokers, ",") + "\ncursor-topic: " + kafkatest.Topic(t, "cursors") + "\nretry-timeout: 0s\napi-max-attempts: 1\npipelines:\n"
			code, _, stderr := run(t.Context(), nil, "once", "--config", writeConfig(t, head+c.items))
			assert.Equal(t, c.code, code, stderr)
			if strings.Contains(c.items, "ties") {
				assert.Regexp(t, `pipeline "ties": [^\n]*`+overflowTime.String(), stderr, "the overflow is reported with the pipeline's name and times")
			}
		})
	}
}
