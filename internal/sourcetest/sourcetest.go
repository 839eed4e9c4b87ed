// Package sourcetest gives tests a scripted API: answers served in order, the requests it got,
// and a Source in front of it with fast retries.
package sourcetest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/source"
)

// Answer is one scripted API response.
type Answer struct {
	Status int
	Body   string
	Header map[string]string
}

// Scripted serves Answers in order (the last one repeats) and records the queries it got.
type Scripted struct {
	mu      sync.Mutex
	Answers []Answer
	queries []string
}

func (s *Scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = append(s.queries, r.URL.RawQuery)
	a := s.Answers[min(len(s.queries), len(s.Answers))-1]
	for k, v := range a.Header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.Status)
	fmt.Fprint(w, a.Body)
}

// Requests returns the raw queries received so far.
func (s *Scripted) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

// NewSource serves h and returns a Source of the reference contract in front of it, with
// millisecond backoffs, closed at cleanup.
func NewSource(t testing.TB, h http.Handler, attempts int) *source.Source {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL + "/pagination/keyset", MaxAttempts: attempts,
		BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond, MaxRetryAfter: 5 * time.Millisecond})
	require.NoError(t, err)
	return src
}

// Page is a 200 answer holding records (JSON objects) and next as its scroll_param ("" : null).
func Page(next string, records ...string) Answer {
	n := "null"
	if next != "" {
		n = `"` + next + `"`
	}
	return Answer{Status: 200, Body: `{"data":[` + strings.Join(records, ",") + `],"scroll_param":` + n + `}`}
}

// Rec is a record of the reference shape.
func Rec(id, updated string) string {
	return fmt.Sprintf(`{"id":%q,"name":"n","updatedAt":%q}`, id, updated)
}
