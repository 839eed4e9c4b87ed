package source_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/source"
	"github.com/keysetsync/keysetsync/throttle"
)

// TestOutcomeOf maps what Fetch returns, after its retries, to what a throttle.Limiter learns
// from it: only answers of an API at capacity lower the concurrency.
func TestOutcomeOf(t *testing.T) {
	retryAfter := func(s string) map[string]string { return map[string]string{"Retry-After": s} }
	for _, tc := range []struct {
		name   string
		answer sourcetest.Answer
		want   throttle.Outcome
	}{
		{"a page", sourcetest.Page("", sourcetest.Rec("a", "2024-01-01T00:00:00Z")), throttle.OK},
		{"429 with Retry-After", sourcetest.Answer{Status: 429, Body: `{"error":"slow down"}`, Header: retryAfter("7")}, throttle.Overloaded(7 * time.Second)},
		{"429 without", sourcetest.Answer{Status: 429}, throttle.Overloaded(0)},
		{"503 with Retry-After", sourcetest.Answer{Status: 503, Header: retryAfter("2")}, throttle.Overloaded(2 * time.Second)},
		{"500", sourcetest.Answer{Status: 500, Body: `{"error":"database down"}`}, throttle.Overloaded(0)},
		{"408", sourcetest.Answer{Status: 408}, throttle.Overloaded(0)},
		{"404", sourcetest.Answer{Status: 404, Header: retryAfter("7")}, throttle.Failed},
		{"401", sourcetest.Answer{Status: 401}, throttle.Failed},
		{"not a page", sourcetest.Answer{Status: 200, Body: `<html>`}, throttle.Failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Fetch wraps the last answer's error after its attempts; one or three, same outcome.
			for _, attempts := range []int{1, 3} {
				src := sourcetest.NewSource(t, &sourcetest.Scripted{Answers: []sourcetest.Answer{tc.answer}}, attempts)
				_, err := src.Fetch(t.Context(), 1, source.Query{Since: cursor.Start})
				assert.Equal(t, tc.want, source.OutcomeOf(err), "after %d attempt(s): %v", attempts, err)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close() // nothing listens at its address any more
		src, err := source.NewSource(source.SourceConfig{URL: srv.URL + "/pagination/keyset", MaxAttempts: 1})
		require.NoError(t, err)
		_, err = src.Fetch(t.Context(), 1, source.Query{Since: cursor.Start})
		require.Error(t, err)
		assert.Equal(t, throttle.Failed, source.OutcomeOf(err), "%v", err)
	})
}
