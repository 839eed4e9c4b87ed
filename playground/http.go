package playground

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Paths served by Handler.
const (
	KeysetPath   = "/pagination/keyset"
	SnapshotPath = "/snapshot"
	HealthPath   = "/healthz"
)

// Query parameters of KeysetPath.
const (
	ParamUpdatedSince = "updated_since"
	ParamScroll       = "scroll_param"
)

// Page is the body of a 200 answer of KeysetPath. ScrollParam is nil (JSON null) when no record
// follows the page.
type Page struct {
	Data        []User  `json:"data"`
	ScrollParam *string `json:"scroll_param"`
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// ScrollToken is the scroll_param that follows a page whose last record has this updatedAt.
func ScrollToken(updatedAt string) string {
	return base64.StdEncoding.EncodeToString([]byte(updatedAt))
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	defer func() { s.count(sw.status) }()
	var serve func(http.ResponseWriter, *http.Request)
	switch r.URL.Path {
	case KeysetPath:
		serve = s.serveKeyset
	case SnapshotPath:
		serve = s.serveSnapshot
	case HealthPath:
		serve = serveHealth
	default:
		writeError(sw, http.StatusNotFound, fmt.Sprintf("no such path %q: the API is GET %s", r.URL.Path, KeysetPath))
		return
	}
	if r.Method != http.MethodGet {
		sw.Header().Set("Allow", http.MethodGet)
		writeError(sw, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s: use GET", r.Method, r.URL.Path))
		return
	}
	serve(sw, r)
}

func (s *Server) count(status int) {
	if status == 0 {
		status = http.StatusOK
	}
	s.stats.requests.Add(1)
	switch {
	case status == http.StatusTooManyRequests:
		s.stats.s429.Add(1)
		s.stats.s4xx.Add(1)
	case status >= 400 && status < 500:
		s.stats.s4xx.Add(1)
	case status >= 500:
		s.stats.s5xx.Add(1)
	}
}

func serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) serveKeyset(w http.ResponseWriter, r *http.Request) {
	if wait, ok := s.admit(); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(wait))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("rate limit of %g requests per second exceeded: retry after %d s", s.cfg.RateLimit, wait))
		return
	}
	if d := s.cfg.Latency; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if s.fail() {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("injected failure (fail rate %g)", s.cfg.FailRate))
		return
	}
	since, exclusive, msg := parseKeysetQuery(r.URL.RawQuery)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	items, more := s.page(since, exclusive)
	page := Page{Data: s.renderAll(items)}
	if more && len(page.Data) > 0 {
		token := ScrollToken(page.Data[len(page.Data)-1].UpdatedAt)
		page.ScrollParam = &token
	}
	s.stats.pages.Add(1)
	s.stats.served.Add(uint64(len(page.Data)))
	writeJSON(w, http.StatusOK, page)
}

// parseKeysetQuery returns the lower bound of a page and whether it is exclusive, or a message
// for a 400 answer.
func parseKeysetQuery(raw string) (since int64, exclusive bool, msg string) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return 0, false, fmt.Sprintf("malformed query string: %v", err)
	}
	var unexpected []string
	for k := range q {
		if k != ParamUpdatedSince && k != ParamScroll {
			unexpected = append(unexpected, strconv.Quote(k))
		}
	}
	if len(unexpected) > 0 {
		slices.Sort(unexpected)
		return 0, false, fmt.Sprintf("unexpected query parameters: %s (only %s, on the first request, or %s, on the next ones, are accepted)",
			strings.Join(unexpected, ", "), ParamUpdatedSince, ParamScroll)
	}
	for _, k := range []string{ParamUpdatedSince, ParamScroll} {
		if len(q[k]) > 1 {
			return 0, false, fmt.Sprintf("query parameter %s given %d times: give it once", k, len(q[k]))
		}
	}
	_, hasSince := q[ParamUpdatedSince]
	_, hasScroll := q[ParamScroll]
	switch {
	case hasSince && hasScroll:
		return 0, false, fmt.Sprintf("give either %s (first request) or %s (next requests), not both", ParamUpdatedSince, ParamScroll)
	case hasSince:
		v := q.Get(ParamUpdatedSince)
		t, ok := parseTime(v)
		if !ok {
			return 0, false, fmt.Sprintf("invalid %s %q: use YYYY-MM-DDTHH:MM:SSZ (UTC, e.g. 2024-01-01T00:00:00Z)", ParamUpdatedSince, v)
		}
		return t, false, ""
	case hasScroll:
		v := q.Get(ParamScroll)
		b, err := base64.StdEncoding.Strict().DecodeString(v)
		if err != nil {
			return 0, false, fmt.Sprintf("invalid %s %q: not standard base64 (%v); pass the scroll_param of the previous page unchanged", ParamScroll, v, err)
		}
		t, ok := parseTime(string(b))
		if !ok {
			return 0, false, fmt.Sprintf("invalid %s %q: does not decode to a YYYY-MM-DDTHH:MM:SSZ time; pass the scroll_param of the previous page unchanged", ParamScroll, v)
		}
		return t, true, ""
	default:
		return 0, false, fmt.Sprintf("missing query parameter: give %s=YYYY-MM-DDTHH:MM:SSZ for the first page or %s=<token> for the next ones", ParamUpdatedSince, ParamScroll)
	}
}

// admit takes a token from the rate limiter; when none is left it returns the whole seconds to
// wait (at least 1).
func (s *Server) admit() (retryAfter int, ok bool) {
	rate := s.cfg.RateLimit
	if rate <= 0 {
		return 0, true
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	now := s.cfg.Clock()
	if elapsed := now.Sub(s.refilled); elapsed > 0 {
		s.tokens = min(max(1, rate), s.tokens+elapsed.Seconds()*rate)
		s.refilled = now
	}
	if s.tokens >= 1 {
		s.tokens--
		return 0, true
	}
	return max(1, int(math.Ceil((1-s.tokens)/rate))), false
}

func (s *Server) fail() bool {
	if s.cfg.FailRate <= 0 {
		return false
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.faultRng.Float64() < s.cfg.FailRate
}

func (s *Server) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	index := s.idIndex()
	w.Header().Set("Content-Type", "application/x-ndjson; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	ctx := r.Context()
	var werr error
	s.eachByID(index, func(items []item) bool {
		for _, it := range items {
			if werr = enc.Encode(s.render(it)); werr != nil {
				return false
			}
		}
		return ctx.Err() == nil
	})
	if werr == nil {
		_ = bw.Flush()
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg})
}

// statusWriter records the status of an answer for Stats.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
