package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/source"
)

const (
	urlUser     = "svc-sync-user"
	urlPassword = "pw-in-the-url-5ecret"
)

// authAPI serves a fixed set of records on the reference contract to requests that carry the
// basic auth of urlUser and urlPassword (others get 401), and answers 500 to the first request
// after failNext is set, so the retry WARN line appears.
type authAPI struct {
	records  []map[string]any // sorted by updatedAt
	failNext atomic.Bool
	fail     atomic.Bool // answer 500 to everything
	authed   atomic.Int64
}

func (a *authAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if u, p, ok := r.BasicAuth(); !ok || u != urlUser || p != urlPassword {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"unauthorized"}`)
		return
	}
	a.authed.Add(1)
	if a.fail.Load() || a.failNext.CompareAndSwap(true, false) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"error":"try again"}`)
		return
	}
	since := r.URL.Query().Get("updated_since")
	var page []map[string]any
	for _, rec := range a.records {
		if rec["updatedAt"].(string) >= since { // whole-second RFC 3339 UTC: ordered as strings
			page = append(page, rec)
		}
	}
	json.NewEncoder(w).Encode(map[string]any{"data": page, "scroll_param": nil}) //nolint:errcheck
}

// newAuthAPI serves n users, plus with invalid one whose name is a number (a dead letter), and
// returns the API and its URL with the credentials in it.
func newAuthAPI(t *testing.T, n int, invalid bool) (*authAPI, string) {
	a := &authAPI{}
	for i := range n {
		a.records = append(a.records, map[string]any{"id": fmt.Sprintf("u%03d", i), "name": fmt.Sprintf("user %d", i),
			"updatedAt": time.Date(2024, 1, 1, 0, 0, i, 0, time.UTC).Format(time.RFC3339)})
	}
	if invalid {
		a.records = append(a.records, map[string]any{"id": "bad", "name": 42, "updatedAt": time.Date(2024, 1, 1, 0, 0, n, 0, time.UTC).Format(time.RFC3339)})
	}
	sort.SliceStable(a.records, func(i, j int) bool { return a.records[i]["updatedAt"].(string) < a.records[j]["updatedAt"].(string) })
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return a, strings.Replace(srv.URL, "http://", "http://"+urlUser+":"+urlPassword+"@", 1) + "/pagination/keyset"
}

// noSecret fails if s shows the URL's password or user name.
func noSecret(t *testing.T, where, s string) {
	t.Helper()
	assert.NotContains(t, s, urlPassword, "%s shows the password of --api-url", where)
	assert.NotContains(t, s, urlUser, "%s shows the user name of --api-url", where)
}

// TestAPIURLCredentialsAreSentAndNeverShown gives every command that shows the API's URL one
// with credentials in it (https://user:password@host/...), against an API that requires them
// as basic auth and fails once: the requests succeed (the credentials are sent), and no error,
// log line, message header, dead-letter header or output shows them; the URL appears as
// http://***@host/....
func TestAPIURLCredentialsAreSentAndNeverShown(t *testing.T) {
	tg := kafkatest.NewFake(t)
	api, apiURL := newAuthAPI(t, 20, true)
	shown := source.RedactURL(apiURL)
	require.True(t, strings.HasPrefix(shown, "http://***@127.0.0.1:"), shown)
	topic, dlq := kafkatest.Topic(t, "users"), kafkatest.Topic(t, "dlq")
	vars := map[string]string{
		"KEYSETSYNC_BROKERS": tg.Brokers[0], "KEYSETSYNC_API_URL": apiURL, "KEYSETSYNC_TOPIC": topic,
		"KEYSETSYNC_CURSOR_TOPIC": kafkatest.Topic(t, "cursors"), "KEYSETSYNC_TOPIC_REPLICATION_FACTOR": "1",
		"KEYSETSYNC_ON_INVALID": "dlq", "KEYSETSYNC_DLQ_TOPIC": dlq,
	}

	t.Run("once: logs, retry warning, message and dead-letter headers", func(t *testing.T) {
		api.failNext.Store(true)
		code, stdout, stderr := run(t.Context(), vars, "once")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "api request failed, retrying", "the fixture makes a retry warning")
		assert.Contains(t, stderr, "invalid record sent to the dead-letter topic")
		noSecret(t, "once's stderr", stderr)
		noSecret(t, "once's stdout", stdout)

		msgs := kafkatest.ReadAll(t, tg, topic)
		require.Len(t, msgs, 20, "every valid record, fetched with the URL's credentials")
		for _, m := range msgs {
			assert.Equal(t, shown, m.Headers[pipeline.HeaderSource], "offset %d", m.Offset)
			for k, v := range m.Headers {
				noSecret(t, "message header "+k, v)
			}
		}
		dead := kafkatest.ReadAll(t, tg, dlq)
		require.Len(t, dead, 1)
		assert.Equal(t, shown, dead[0].Headers[pipeline.HeaderSource])
		assert.True(t, strings.HasPrefix(dead[0].Headers[pipeline.HeaderURL], shown+"?"), dead[0].Headers[pipeline.HeaderURL])
		for k, v := range dead[0].Headers {
			noSecret(t, "dead-letter header "+k, v)
		}
	})

	t.Run("once: the error it exits with", func(t *testing.T) {
		api.fail.Store(true)
		defer api.fail.Store(false)
		code, _, stderr := run(t.Context(), vars, "once", "--api-max-attempts", "2", "--retry-timeout", "0", "--topic", kafkatest.Topic(t, "users"))
		assert.Equal(t, 1, code, stderr)
		assert.Contains(t, stderr, "HTTP 500")
		assert.Contains(t, stderr, shown, "the error names the URL, redacted")
		noSecret(t, "once's exit error", stderr)
	})

	t.Run("once: a wrong password is refused, and not shown either", func(t *testing.T) {
		wrong := strings.Replace(apiURL, urlPassword, "wrong-pw-9876", 1)
		code, _, stderr := run(t.Context(), vars, "once", "--api-url", wrong, "--retry-timeout", "0", "--topic", kafkatest.Topic(t, "users"))
		assert.Equal(t, 1, code, stderr)
		assert.Contains(t, stderr, "HTTP 401")
		assert.NotContains(t, stderr, "wrong-pw-9876")
		noSecret(t, "once's stderr", stderr)
	})

	t.Run("once: a URL that does not parse", func(t *testing.T) {
		bad := strings.Replace(apiURL, urlPassword, urlPassword+"%zz", 1)
		code, _, stderr := run(t.Context(), vars, "once", "--api-url", bad)
		assert.Equal(t, 2, code, stderr)
		noSecret(t, "the usage error", stderr)
	})

	t.Run("run: logs and retry warning", func(t *testing.T) {
		stdout, stderr := &logtest.Buffer{}, &logtest.Buffer{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan int, 1)
		api.failNext.Store(true)
		go func() {
			done <- dispatch(ctx, &env{stdout: stdout, stderr: stderr, getenv: func(k string) string { return vars[k] }},
				[]string{"run", "--interval", "1h", "--topic", kafkatest.Topic(t, "users")})
		}()
		stderr.Await(t, "the first pass to finish", func(s string) bool { return strings.Contains(s, `msg="pass finished"`) })
		cancel()
		assert.Equal(t, 0, <-done, stderr.String())
		assert.Contains(t, stderr.String(), "api request failed, retrying")
		noSecret(t, "run's stderr", stderr.String())
		noSecret(t, "run's stdout", stdout.String())
	})

	t.Run("verify: output and logs", func(t *testing.T) {
		// An API without the invalid record, which verify would stop at.
		api, apiURL := newAuthAPI(t, 20, false)
		vars := map[string]string{"KEYSETSYNC_BROKERS": tg.Brokers[0], "KEYSETSYNC_API_URL": apiURL, "KEYSETSYNC_TOPIC": kafkatest.Topic(t, "users"),
			"KEYSETSYNC_CURSOR_TOPIC": kafkatest.Topic(t, "cursors"), "KEYSETSYNC_TOPIC_REPLICATION_FACTOR": "1"}
		code, _, stderr := run(t.Context(), vars, "once")
		require.Equal(t, 0, code, stderr)
		api.failNext.Store(true)
		code, stdout, stderr := run(t.Context(), vars, "verify")
		assert.Equal(t, 0, code, stderr)
		assert.Contains(t, stdout, "ids_in_topic=20 ids_in_api=20 missing=0 stale=0")
		assert.Contains(t, stderr, "api request failed, retrying")
		noSecret(t, "verify's stdout", stdout)
		noSecret(t, "verify's stderr", stderr)
	})

	t.Run("config", func(t *testing.T) {
		code, stdout, stderr := run(t.Context(), vars, "config")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stdout, shown)
		noSecret(t, "config's output", stdout)
	})
	assert.Positive(t, api.authed.Load())
}
