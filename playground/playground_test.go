package playground

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a settable Config.Clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var (
	testStart = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	testNow   = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
)

// newTestServer returns a server with a fake clock at testNow (unless cfg has a clock) and an
// httptest server around its handler.
func newTestServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	if cfg.Clock == nil {
		cfg.Clock = newFakeClock(testNow).Now
	}
	s, err := New(cfg)
	require.NoError(t, err)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, rawURL string) answer {
	t.Helper()
	resp, err := http.Get(rawURL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{status: resp.StatusCode, header: resp.Header, body: body}
}

func getPage(t *testing.T, base string, query url.Values) Page {
	t.Helper()
	a := get(t, base+KeysetPath+"?"+query.Encode())
	require.Equal(t, http.StatusOK, a.status, "body: %s", a.body)
	require.Equal(t, "application/json", a.header.Get("Content-Type"))
	var p Page
	require.NoError(t, json.Unmarshal(a.body, &p))
	require.NotNil(t, p.Data, "data must be a JSON array, never null")
	return p
}

func since(ts string) url.Values   { return url.Values{ParamUpdatedSince: {ts}} }
func scroll(tok string) url.Values { return url.Values{ParamScroll: {tok}} }

// pass pages through the API like the reference client: updated_since first, then scroll_param
// until it is null. It returns every record received, in order, and the number of pages.
func pass(t *testing.T, base, from string) (users []User, pages int) {
	t.Helper()
	p := getPage(t, base, since(from))
	for {
		pages++
		users = append(users, p.Data...)
		if p.ScrollParam == nil {
			return users, pages
		}
		require.Less(t, pages, 1_000_000, "paging does not end")
		p = getPage(t, base, scroll(*p.ScrollParam))
	}
}

func ts(t time.Time) string { return t.UTC().Format(TimeLayout) }

// checkInvariants verifies the index: sorted by (updatedAt, id), exactly one live entry per
// record, pos pointing at it.
func checkInvariants(t *testing.T, s *Server) {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	require.Equal(t, len(s.upds), len(s.recs))
	seen := make([]bool, len(s.pos))
	prev := -1
	for j := s.live.next(0); j >= 0; j = s.live.next(j + 1) {
		require.Less(t, j, len(s.upds), "live bit beyond the entries")
		rec := s.recs[j]
		require.False(t, seen[rec], "record %d live twice", rec)
		seen[rec] = true
		require.Equal(t, uint32(j), s.pos[rec], "pos of record %d", rec)
		if prev >= 0 {
			p := s.recs[prev]
			ok := s.upds[prev] < s.upds[j] || s.upds[prev] == s.upds[j] && s.idCmp(p, rec) < 0
			require.True(t, ok, "entries %d and %d out of order", prev, j)
		}
		prev = j
	}
	for rec, ok := range seen {
		require.True(t, ok, "record %d has no live entry", rec)
	}
	for j := 1; j < len(s.upds); j++ {
		require.LessOrEqual(t, s.upds[j-1], s.upds[j], "updatedAt not sorted at %d", j)
	}
}

func TestFirstPageIsInclusiveAndSorted(t *testing.T) {
	tests := []struct {
		name      string
		tieWidth  int
		since     time.Time
		wantFirst time.Time
		wantLen   int
	}{
		{"before everything", 1, testStart.Add(-time.Hour), testStart, 50},
		{"exactly the oldest", 1, testStart, testStart, 50},
		{"exactly a middle record", 1, testStart.Add(10 * time.Second), testStart.Add(10 * time.Second), 50},
		{"exactly a tie group", 4, testStart.Add(3 * time.Second), testStart.Add(3 * time.Second), 50},
		{"the newest", 1, testStart.Add(199 * time.Second), testStart.Add(199 * time.Second), 1},
		{"after everything", 1, testStart.Add(time.Hour), time.Time{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := newTestServer(t, Config{Seed: 7, TieWidth: tt.tieWidth, Start: testStart})
			p := getPage(t, srv.URL, since(ts(tt.since)))
			require.Len(t, p.Data, tt.wantLen)
			if tt.wantLen == 0 {
				assert.Nil(t, p.ScrollParam)
				return
			}
			assert.Equal(t, ts(tt.wantFirst), p.Data[0].UpdatedAt)
			if tt.tieWidth > 1 {
				// The whole group of the bound is there.
				n := 0
				for _, u := range p.Data {
					if u.UpdatedAt == ts(tt.wantFirst) {
						n++
					}
				}
				assert.Equal(t, tt.tieWidth, n)
			}
			for i := 1; i < len(p.Data); i++ {
				a, b := p.Data[i-1], p.Data[i]
				assert.True(t, a.UpdatedAt < b.UpdatedAt || a.UpdatedAt == b.UpdatedAt && a.ID < b.ID,
					"records %d and %d not sorted by (updatedAt, id)", i-1, i)
			}
		})
	}
}

func TestScrollParamIsExclusive(t *testing.T) {
	_, srv := newTestServer(t, Config{Seed: 3, TieWidth: 5, PageSize: 7, Start: testStart})
	tests := []struct {
		name      string
		token     string
		wantFirst string
	}{
		{"group start", ScrollToken(ts(testStart)), ts(testStart.Add(time.Second))},
		{"middle group", ScrollToken(ts(testStart.Add(12 * time.Second))), ts(testStart.Add(13 * time.Second))},
		{"before everything", ScrollToken("2000-01-01T00:00:00Z"), ts(testStart)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := getPage(t, srv.URL, scroll(tt.token))
			require.NotEmpty(t, p.Data)
			assert.Equal(t, tt.wantFirst, p.Data[0].UpdatedAt)
		})
	}
	t.Run("token is base64 of the last updatedAt", func(t *testing.T) {
		p := getPage(t, srv.URL, since(ts(testStart)))
		require.Len(t, p.Data, 7)
		require.NotNil(t, p.ScrollParam)
		last := p.Data[6].UpdatedAt
		raw, err := base64.StdEncoding.DecodeString(*p.ScrollParam)
		require.NoError(t, err)
		assert.Equal(t, last, string(raw))
		next := getPage(t, srv.URL, scroll(*p.ScrollParam))
		for _, u := range next.Data {
			assert.Greater(t, u.UpdatedAt, last)
		}
	})
	t.Run("past the newest", func(t *testing.T) {
		p := getPage(t, srv.URL, scroll(ScrollToken(ts(testStart.Add(39*time.Second)))))
		assert.Empty(t, p.Data)
		assert.Nil(t, p.ScrollParam)
	})
}

func TestScrollParamNullExactlyAtTheEnd(t *testing.T) {
	tests := []struct {
		records, pageSize int
		wantSizes         []int
	}{
		{records: 100, pageSize: 50, wantSizes: []int{50, 50}},
		{records: 101, pageSize: 50, wantSizes: []int{50, 50, 1}},
		{records: 50, pageSize: 50, wantSizes: []int{50}},
		{records: 49, pageSize: 50, wantSizes: []int{49}},
		{records: 3, pageSize: 1, wantSizes: []int{1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d records by %d", tt.records, tt.pageSize), func(t *testing.T) {
			_, srv := newTestServer(t, Config{Records: tt.records, PageSize: tt.pageSize, Start: testStart})
			p := getPage(t, srv.URL, since(ts(testStart)))
			for i, want := range tt.wantSizes {
				require.Len(t, p.Data, want, "page %d", i)
				if i == len(tt.wantSizes)-1 {
					require.Nil(t, p.ScrollParam, "last page %d must have a null scroll_param", i)
					break
				}
				require.NotNil(t, p.ScrollParam, "page %d is not the last", i)
				p = getPage(t, srv.URL, scroll(*p.ScrollParam))
			}
		})
	}
	t.Run("null is JSON null", func(t *testing.T) {
		_, srv := newTestServer(t, Config{Records: 2, Start: testStart})
		a := get(t, srv.URL+KeysetPath+"?updated_since="+ts(testStart))
		assert.Contains(t, string(a.body), `"scroll_param":null`)
	})
}

// The reference scrolls with "updatedAt > last updatedAt": a page that ends inside a run of
// equal updatedAt loses the rest of the run. This test documents that deliberate behaviour.
func TestReferencePagingAndTies(t *testing.T) {
	tests := []struct {
		name      string
		tieWidth  int
		wantCount int
		wantPages int
	}{
		{"no ties: every record once", 1, 200, 4},
		// 10 groups of 20; each page of 50 ends 10 records into a group, which the scroll skips.
		{"ties of 20 with pages of 50 lose records", 20, 170, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, srv := newTestServer(t, Config{Records: 200, PageSize: 50, TieWidth: tt.tieWidth, Seed: 1, Start: testStart})
			users, pages := pass(t, srv.URL, ts(testStart))
			assert.Equal(t, tt.wantPages, pages)
			require.Len(t, users, tt.wantCount)
			ids := map[string]bool{}
			for _, u := range users {
				require.False(t, ids[u.ID], "record %s twice", u.ID)
				ids[u.ID] = true
			}
			all := s.Snapshot()
			lost := len(all) - len(ids)
			if tt.tieWidth == 1 {
				assert.Zero(t, lost)
			} else {
				assert.Positive(t, lost, "the reference algorithm must lose tied records")
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	_, srv := newTestServer(t, Config{Records: 10, Start: testStart})
	b64 := func(s string) string { return url.QueryEscape(base64.StdEncoding.EncodeToString([]byte(s))) }
	tests := []struct {
		name     string
		query    string
		wantName string // the error must name this
	}{
		{"neither parameter", "", "updated_since"},
		{"neither parameter, mentions scroll_param", "", "scroll_param"},
		{"both parameters", "updated_since=2024-01-01T00:00:00Z&scroll_param=" + b64("2024-01-01T00:00:00Z"), "not both"},
		{"unknown parameter", "updated_since=2024-01-01T00:00:00Z&per_page=10", "per_page"},
		{"unknown parameter alone", "foo=bar", "foo"},
		{"repeated updated_since", "updated_since=2024-01-01T00:00:00Z&updated_since=2024-01-02T00:00:00Z", "updated_since"},
		{"repeated scroll_param", "scroll_param=" + b64("2024-01-01T00:00:00Z") + "&scroll_param=" + b64("2024-01-01T00:00:00Z"), "scroll_param"},
		{"empty updated_since", "updated_since=", "updated_since"},
		{"date only", "updated_since=2024-01-01", "updated_since"},
		{"no Z", "updated_since=2024-01-01T00:00:00", "updated_since"},
		{"offset instead of Z", "updated_since=" + url.QueryEscape("2024-01-01T00:00:00+00:00"), "updated_since"},
		{"fractional seconds", "updated_since=2024-01-01T00:00:00.5Z", "updated_since"},
		{"not zero padded", "updated_since=2024-1-1T00:00:00Z", "updated_since"},
		{"lower-case z", "updated_since=2024-01-01T00:00:00z", "updated_since"},
		{"month 13", "updated_since=2024-13-01T00:00:00Z", "updated_since"},
		{"space separator", "updated_since=2024-01-01+00:00:00Z", "updated_since"},
		{"unix seconds", "updated_since=1704067200", "updated_since"},
		{"empty scroll_param", "scroll_param=", "scroll_param"},
		{"scroll_param not base64", "scroll_param=%21%21%21", "scroll_param"},
		{"scroll_param URL-safe base64", "scroll_param=" + url.QueryEscape(strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString([]byte("2024-01-01T00:00:00Z\xfb\xff")))), "scroll_param"},
		{"scroll_param base64 of text", "scroll_param=" + b64("hello"), "scroll_param"},
		{"scroll_param base64 of a time without Z", "scroll_param=" + b64("2024-01-01T00:00:00"), "scroll_param"},
		{"scroll_param base64 without padding", "scroll_param=" + strings.TrimRight(base64.StdEncoding.EncodeToString([]byte("2024-01-01T00:00:00Z1")), "="), "scroll_param"},
		{"scroll_param raw time", "scroll_param=2024-01-01T00:00:00Z", "scroll_param"},
		{"malformed query", "updated_since=%zz", "query"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := get(t, srv.URL+KeysetPath+"?"+tt.query)
			require.Equal(t, http.StatusBadRequest, a.status, "body: %s", a.body)
			assert.Equal(t, "application/json", a.header.Get("Content-Type"))
			var e ErrorBody
			require.NoError(t, json.Unmarshal(a.body, &e), "body: %s", a.body)
			assert.Contains(t, e.Error, tt.wantName)
		})
	}
}

func TestPathsAndMethods(t *testing.T) {
	_, srv := newTestServer(t, Config{Records: 10, Start: testStart})
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodGet, "/pagination/offset", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodPost, "/nope", http.StatusNotFound},
		{http.MethodPost, KeysetPath, http.StatusMethodNotAllowed},
		{http.MethodDelete, KeysetPath, http.StatusMethodNotAllowed},
		{http.MethodPut, SnapshotPath, http.StatusMethodNotAllowed},
		{http.MethodGet, HealthPath, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, tt.want, resp.StatusCode, "body: %s", body)
			if tt.want == http.StatusOK {
				assert.Equal(t, "ok\n", string(body))
				return
			}
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var e ErrorBody
			require.NoError(t, json.Unmarshal(body, &e))
			assert.NotEmpty(t, e.Error)
			if tt.want == http.StatusMethodNotAllowed {
				assert.Equal(t, http.MethodGet, resp.Header.Get("Allow"))
			}
		})
	}
}

func TestFailRate(t *testing.T) {
	t.Run("1 fails every page request", func(t *testing.T) {
		s, srv := newTestServer(t, Config{Records: 10, FailRate: 1, Start: testStart})
		for range 5 {
			a := get(t, srv.URL+KeysetPath+"?updated_since="+ts(testStart))
			require.Equal(t, http.StatusInternalServerError, a.status)
			assert.Equal(t, "application/json", a.header.Get("Content-Type"))
			var e ErrorBody
			require.NoError(t, json.Unmarshal(a.body, &e))
			assert.Contains(t, e.Error, "injected")
		}
		assert.Equal(t, http.StatusOK, get(t, srv.URL+HealthPath).status, "faults are for the API only")
		assert.Equal(t, http.StatusOK, get(t, srv.URL+SnapshotPath).status, "faults are for the API only")
		st := s.Stats()
		assert.Equal(t, uint64(5), st.Status5xx)
		assert.Equal(t, uint64(7), st.Requests)
		assert.Zero(t, st.Pages)
	})
	t.Run("0.5 fails some", func(t *testing.T) {
		s, srv := newTestServer(t, Config{Records: 10, FailRate: 0.5, Seed: 9, Start: testStart})
		for range 100 {
			a := get(t, srv.URL+KeysetPath+"?updated_since="+ts(testStart))
			require.Contains(t, []int{http.StatusOK, http.StatusInternalServerError}, a.status)
		}
		st := s.Stats()
		assert.InDelta(t, 50, st.Status5xx, 25)
		assert.Equal(t, uint64(100), st.Status5xx+st.Pages)
	})
}

func TestRateLimit(t *testing.T) {
	tests := []struct {
		name           string
		rate           float64
		burst          int
		wantRetryAfter string
		refill         time.Duration
	}{
		{"1 per second", 1, 1, "1", time.Second},
		{"3 per second", 3, 3, "1", 334 * time.Millisecond},
		{"1 per 4 seconds", 0.25, 1, "4", 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(testNow)
			s, srv := newTestServer(t, Config{Records: 10, RateLimit: tt.rate, Start: testStart, Clock: clock.Now})
			u := srv.URL + KeysetPath + "?updated_since=" + ts(testStart)
			for i := range tt.burst {
				require.Equal(t, http.StatusOK, get(t, u).status, "request %d is within the burst", i)
			}
			a := get(t, u)
			require.Equal(t, http.StatusTooManyRequests, a.status)
			assert.Equal(t, tt.wantRetryAfter, a.header.Get("Retry-After"))
			assert.Equal(t, "application/json", a.header.Get("Content-Type"))
			var e ErrorBody
			require.NoError(t, json.Unmarshal(a.body, &e))
			assert.Contains(t, e.Error, "rate limit")

			clock.Add(tt.refill)
			assert.Equal(t, http.StatusOK, get(t, u).status, "a token is back after %v", tt.refill)
			assert.Equal(t, http.StatusTooManyRequests, get(t, u).status)
			st := s.Stats()
			assert.Equal(t, uint64(2), st.Status429)
			assert.Equal(t, uint64(2), st.Status4xx)
		})
	}
}

func TestLatency(t *testing.T) {
	_, srv := newTestServer(t, Config{Records: 10, Latency: 30 * time.Millisecond, Start: testStart})
	begin := time.Now()
	getPage(t, srv.URL, since(ts(testStart)))
	assert.GreaterOrEqual(t, time.Since(begin), 30*time.Millisecond)
}

func TestUpdatesMoveRecordsToTheEnd(t *testing.T) {
	clock := newFakeClock(testNow)
	s, srv := newTestServer(t, Config{Records: 200, Seed: 5, Start: testStart, Clock: clock.Now})
	before, _ := pass(t, srv.URL, ts(testStart))
	require.Len(t, before, 200)
	last := before[len(before)-1].UpdatedAt

	clock.Add(1500 * time.Millisecond) // updates truncate to the second
	updated := s.Update(5)
	require.Len(t, updated, 5)
	wantAt := ts(testNow.Add(time.Second))
	old := map[string]User{}
	for _, u := range before {
		old[u.ID] = u
	}
	for i, u := range updated {
		assert.Equal(t, wantAt, u.UpdatedAt)
		prev, ok := old[u.ID]
		require.True(t, ok)
		assert.Equal(t, prev.CreatedAt, u.CreatedAt)
		assert.Equal(t, prev.Name, u.Name)
		assert.NotEqual(t, prev.Job, u.Job, "an update changes the content")
		assert.Contains(t, u.Job, "(rev 1)")
		if i > 0 {
			assert.Less(t, updated[i-1].ID, u.ID, "Update returns records sorted by id")
		}
	}

	t.Run("a full pass sees each record once, the updated ones last", func(t *testing.T) {
		after, _ := pass(t, srv.URL, ts(testStart))
		require.Len(t, after, 200)
		assert.Equal(t, updated, after[195:])
		ids := map[string]bool{}
		for _, u := range after {
			ids[u.ID] = true
		}
		assert.Len(t, ids, 200)
	})
	t.Run("an incremental pass sees exactly the updated ones", func(t *testing.T) {
		p := getPage(t, srv.URL, scroll(ScrollToken(last)))
		assert.Equal(t, updated, p.Data)
		assert.Nil(t, p.ScrollParam)
		inc, _ := pass(t, srv.URL, wantAt)
		assert.Equal(t, updated, inc)
	})
	t.Run("updating again bumps the revision", func(t *testing.T) {
		clock.Add(time.Second)
		again, err := s.UpdateIDs(updated[0].ID)
		require.NoError(t, err)
		require.Len(t, again, 1)
		assert.Contains(t, again[0].Job, "(rev 2)")
		assert.Equal(t, ts(testNow.Add(2*time.Second)), again[0].UpdatedAt)
		checkInvariants(t, s)
	})
}

func TestUpdateInTheSameSecond(t *testing.T) {
	clock := newFakeClock(testNow)
	s, srv := newTestServer(t, Config{Records: 300, PageSize: 1000, Seed: 11, Start: testStart, Clock: clock.Now})
	first := s.Update(10)
	// Same second: half of them again plus new ones, one at a time and in a batch.
	var ids []string
	for _, u := range first[:5] {
		ids = append(ids, u.ID)
	}
	again, err := s.UpdateIDs(ids...)
	require.NoError(t, err)
	more := s.Update(20)
	checkInvariants(t, s)
	for _, u := range slices.Concat(first, again, more) {
		assert.Equal(t, ts(testNow), u.UpdatedAt)
	}

	p := getPage(t, srv.URL, since(ts(testStart)))
	require.Len(t, p.Data, 300, "every record once")
	tail := p.Data[len(p.Data)-1]
	assert.Equal(t, ts(testNow), tail.UpdatedAt)
	inc := getPage(t, srv.URL, since(ts(testNow))).Data
	seen := map[string]bool{}
	for i, u := range inc {
		seen[u.ID] = true
		if i > 0 {
			assert.Less(t, inc[i-1].ID, u.ID, "ties at the tail are sorted by id")
		}
	}
	for _, u := range slices.Concat(first, more) {
		assert.True(t, seen[u.ID], "updated record %s missing from the tail", u.ID)
	}
	assert.Len(t, inc, len(seen))

	t.Run("a clock behind the data does not go back", func(t *testing.T) {
		clock.Set(testStart.Add(-time.Hour))
		u := s.Update(1)
		require.Len(t, u, 1)
		assert.Equal(t, ts(testNow), u[0].UpdatedAt, "max(newest updatedAt, clock)")
		ins := s.Insert(1)
		require.Len(t, ins, 1)
		assert.Equal(t, ts(testNow), ins[0].UpdatedAt)
		checkInvariants(t, s)
	})
}

func TestUpdateIDs(t *testing.T) {
	s, _ := newTestServer(t, Config{Records: 50, Start: testStart})
	all := s.Snapshot()
	t.Run("unknown id changes nothing", func(t *testing.T) {
		_, err := s.UpdateIDs(all[0].ID, "00000000-0000-4000-8000-000000000000")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "00000000-0000-4000-8000-000000000000")
		_, err = s.UpdateIDs("not-a-uuid")
		require.Error(t, err)
		assert.Equal(t, all, s.Snapshot())
	})
	t.Run("duplicates count once", func(t *testing.T) {
		got, err := s.UpdateIDs(all[3].ID, all[3].ID, strings.ToUpper(all[4].ID))
		require.NoError(t, err)
		require.Len(t, got, 2)
		assert.Equal(t, uint64(2), s.Stats().Updates)
	})
	t.Run("none", func(t *testing.T) {
		got, err := s.UpdateIDs()
		require.NoError(t, err)
		assert.Empty(t, got)
	})
}

func TestInsert(t *testing.T) {
	clock := newFakeClock(testNow)
	s, srv := newTestServer(t, Config{Records: 20, Start: testStart, Clock: clock.Now})
	before := s.Snapshot()
	clock.Add(time.Minute)
	ins := s.Insert(3)
	require.Len(t, ins, 3)
	for _, u := range ins {
		assert.Equal(t, ts(testNow.Add(time.Minute)), u.UpdatedAt)
		assert.Equal(t, u.UpdatedAt, u.CreatedAt)
	}
	after := s.Snapshot()
	require.Len(t, after, 23)
	assert.Equal(t, 23, s.Stats().Records)
	inc, _ := pass(t, srv.URL, ts(testNow))
	assert.Equal(t, ins, inc)
	// Inserted ids can be updated (the id index is extended).
	clock.Add(time.Second)
	up, err := s.UpdateIDs(ins[1].ID, before[0].ID)
	require.NoError(t, err)
	assert.Len(t, up, 2)
	checkInvariants(t, s)
	// Insert is deterministic too.
	s2, err := New(Config{Records: 20, Start: testStart, Clock: newFakeClock(testNow.Add(time.Minute)).Now})
	require.NoError(t, err)
	assert.Equal(t, ins, s2.Insert(3))
}

func TestSnapshotEndpoint(t *testing.T) {
	clock := newFakeClock(testNow)
	s, srv := newTestServer(t, Config{Records: 2500, TieWidth: 3, Seed: 42, Start: testStart, Clock: clock.Now})
	clock.Add(time.Second)
	s.Update(100)
	s.Insert(10)
	want := s.Snapshot()
	require.Len(t, want, 2510)

	resp, err := http.Get(srv.URL + SnapshotPath)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/x-ndjson; charset=utf-8", resp.Header.Get("Content-Type"))
	sc := bufio.NewScanner(resp.Body)
	var got []User
	for sc.Scan() {
		var u User
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&u), "line %d", len(got)+1)
		got = append(got, u)
	}
	require.NoError(t, sc.Err())
	require.Equal(t, want, got)
	assert.True(t, slices.IsSortedFunc(got, func(a, b User) int { return strings.Compare(a.ID, b.ID) }))
}

func TestDeterministicData(t *testing.T) {
	snap := func(seed uint64) []User {
		s, err := New(Config{Records: 300, TieWidth: 2, Seed: seed, Clock: newFakeClock(testNow).Now})
		require.NoError(t, err)
		return s.Snapshot()
	}
	a, b, c := snap(1), snap(1), snap(2)
	assert.Equal(t, a, b, "same seed, same data")
	assert.NotEqual(t, a[0].ID, c[0].ID, "another seed, other data")
	assert.Len(t, a, 300)
	s1, err := New(Config{Records: 300, TieWidth: 2, Seed: 1, Clock: newFakeClock(testNow).Now})
	require.NoError(t, err)
	clock2 := newFakeClock(testNow)
	s2, err := New(Config{Records: 300, TieWidth: 2, Seed: 1, Clock: clock2.Now})
	require.NoError(t, err)
	assert.Equal(t, s1.Update(7), s2.Update(7), "updates pick the same records for the same seed")
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestUserFields(t *testing.T) {
	s, _ := newTestServer(t, Config{Records: 2000, TieWidth: 3, Seed: 1})
	users := s.Snapshot()
	ids := map[string]bool{}
	nonASCII := 0
	for _, u := range users {
		require.Regexp(t, uuidRE, u.ID)
		require.False(t, ids[u.ID])
		ids[u.ID] = true
		for _, f := range []string{u.Name, u.Email, u.Address, u.Company, u.Job} {
			require.NotEmpty(t, f)
			require.True(t, utf8.ValidString(f))
		}
		assert.Contains(t, u.Address, "\n", "address is multi-line")
		assert.Regexp(t, `^[a-z0-9.]+@[a-z.]+$`, u.Email)
		created, err := time.Parse(TimeLayout, u.CreatedAt)
		require.NoError(t, err)
		updated, err := time.Parse(TimeLayout, u.UpdatedAt)
		require.NoError(t, err)
		assert.False(t, created.After(updated), "createdAt <= updatedAt")
		assert.True(t, updated.Before(testNow), "initial data is in the past")
		if strings.ContainsFunc(u.Name, func(r rune) bool { return r > 127 }) {
			nonASCII++
		}
	}
	assert.Positive(t, nonASCII, "some names exercise UTF-8")
	assert.Equal(t, ts(DefaultStart), s.Config().Start.Format(TimeLayout))

	t.Run("JSON keys and order", func(t *testing.T) {
		b, err := json.Marshal(users[0])
		require.NoError(t, err)
		keys := regexp.MustCompile(`"(\w+)":`).FindAllStringSubmatch(string(b), -1)
		var names []string
		for _, k := range keys {
			names = append(names, k[1])
		}
		assert.Equal(t, []string{"id", "name", "email", "address", "company", "job", "createdAt", "updatedAt"}, names)
	})
	t.Run("names with UTF-8 survive the API", func(t *testing.T) {
		_, srv := newTestServer(t, Config{Records: 2000, PageSize: 2000, TieWidth: 3, Seed: 1})
		p := getPage(t, srv.URL, since("2000-01-01T00:00:00Z"))
		require.ElementsMatch(t, users, p.Data)
	})
}

func TestStartIsInThePast(t *testing.T) {
	t.Run("default start moves back before a clock in 2024", func(t *testing.T) {
		now := DefaultStart.Add(100 * time.Second)
		s, err := New(Config{Records: 500, Clock: newFakeClock(now).Now})
		require.NoError(t, err)
		snap := s.Snapshot()
		for _, u := range snap {
			assert.Less(t, u.UpdatedAt, ts(now))
		}
		newest := slices.MaxFunc(snap, func(a, b User) int { return strings.Compare(a.UpdatedAt, b.UpdatedAt) })
		assert.Equal(t, ts(now.Add(-time.Second)), newest.UpdatedAt)
	})
	t.Run("explicit start reaching now is an error", func(t *testing.T) {
		_, err := New(Config{Records: 500, Start: testNow.Add(-100 * time.Second), Clock: newFakeClock(testNow).Now})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "start")
	})
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative records", Config{Records: -1}, "records"},
		{"negative page size", Config{PageSize: -5}, "page size"},
		{"negative tie width", Config{TieWidth: -2}, "tie width"},
		{"negative updates", Config{UpdatesPerSecond: -1}, "updates per second"},
		{"negative late updates", Config{LateUpdatesPerSecond: -1}, "late updates per second"},
		{"infinite late updates", Config{LateUpdatesPerSecond: math.Inf(1)}, "late updates per second"},
		{"NaN late updates", Config{LateUpdatesPerSecond: math.NaN()}, "late updates per second"},
		{"negative late by", Config{LateUpdatesPerSecond: 1, LateBy: -time.Second}, "late by"},
		{"fail rate above 1", Config{FailRate: 1.5}, "fail rate"},
		{"negative fail rate", Config{FailRate: -0.1}, "fail rate"},
		{"negative rate limit", Config{RateLimit: -3}, "rate limit"},
		{"negative latency", Config{Latency: -time.Second}, "latency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	t.Run("defaults", func(t *testing.T) {
		s, err := New(Config{})
		require.NoError(t, err)
		c := s.Config()
		assert.Equal(t, 200, c.Records)
		assert.Equal(t, 50, c.PageSize)
		assert.Equal(t, 1, c.TieWidth)
		assert.Zero(t, c.LateBy, "no late updates, no late by")
		assert.Len(t, s.Snapshot(), 200)
	})
	t.Run("late by defaults with late updates", func(t *testing.T) {
		for _, tt := range []struct {
			cfg  Config
			want time.Duration
		}{
			{Config{LateUpdatesPerSecond: 2}, DefaultLateBy},
			{Config{LateUpdatesPerSecond: 2, LateBy: time.Minute}, time.Minute},
			{Config{LateBy: time.Minute}, time.Minute},
		} {
			s, err := New(tt.cfg)
			require.NoError(t, err)
			assert.Equal(t, tt.want, s.Config().LateBy)
		}
	})
}

func TestCompaction(t *testing.T) {
	clock := newFakeClock(testNow)
	s, srv := newTestServer(t, Config{Records: 3000, PageSize: 5000, Seed: 2, Start: testStart, Clock: clock.Now})
	for range 40 {
		clock.Add(time.Second)
		s.Update(500)
		checkInvariants(t, s)
	}
	st := s.Stats()
	assert.Positive(t, st.Compactions)
	assert.Equal(t, uint64(20000), st.Updates)
	assert.LessOrEqual(t, st.Entries, 2*3000+1024+500)
	p := getPage(t, srv.URL, since(ts(testStart)))
	assert.Len(t, p.Data, 3000)
	assert.Nil(t, p.ScrollParam)
}

func TestRunUpdates(t *testing.T) {
	t.Run("rate 0 returns at once", func(t *testing.T) {
		s, _ := newTestServer(t, Config{Records: 10})
		s.RunUpdates(context.Background())
	})
	t.Run("updates until cancelled", func(t *testing.T) {
		s, srv := newTestServer(t, Config{Records: 1000, UpdatesPerSecond: 500, Clock: time.Now})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.RunUpdates(ctx)
		}()
		// Pages are served while updates run.
		require.Eventually(t, func() bool {
			getPage(t, srv.URL, since(ts(DefaultStart)))
			return s.Stats().Updates >= 50
		}, 10*time.Second, 10*time.Millisecond)
		cancel()
		<-done
		n := s.Stats().Updates
		checkInvariants(t, s)
		assert.Equal(t, n, s.Stats().Updates, "no update after RunUpdates returned")
	})
}

// TestRunUpdatesNeverPilesUpdatesOnOneSecond drives RunUpdates' ticks with a fake clock through
// what a stalled updater goroutine sees (GC, -race, a loaded machine): ticks missing for most of
// a second across a second boundary, a clock that stands still, a clock set back. However the
// ticks come, no updatedAt second gets more than ceil(rate) updates, nor a late second more than
// ceil(late rate) late ones: the catch-up is dropped and counted, so ties stay narrower than a
// page whenever the rate is (the tests syncing a live playground rely on it). On a steady clock
// nothing is dropped.
func TestRunUpdatesNeverPilesUpdatesOnOneSecond(t *testing.T) {
	const tick = time.Second / 64 // exact in floating point, so the pacer's arithmetic is too
	tests := []struct {
		name        string
		updates     float64
		lateUpdates float64
		ticks       int
		// clock returns where the clock is at tick k (elapsed k*tick), relative to testNow;
		// skip reports ticks that never come (the goroutine is not scheduled).
		clock       func(k int) time.Duration
		skip        func(k int) bool
		wantDropped bool
	}{
		{name: "steady", updates: 40, ticks: 5 * 64,
			clock: func(k int) time.Duration { return time.Duration(k) * tick }},
		{name: "stalled across a second boundary", updates: 40, ticks: 5 * 64, wantDropped: true,
			clock: func(k int) time.Duration { return time.Duration(k) * tick },
			skip:  func(k int) bool { return k > 38 && k < 96 }}, // no tick from 0.6 s to 1.5 s
		{name: "stalled for seconds", updates: 40, ticks: 8 * 64, wantDropped: true,
			clock: func(k int) time.Duration { return time.Duration(k) * tick },
			skip:  func(k int) bool { return k > 100 && k < 350 }},
		{name: "the clock stands still", updates: 40, ticks: 5 * 64, wantDropped: true,
			clock: func(int) time.Duration { return 0 }},
		{name: "the clock is set back", updates: 40, lateUpdates: 30, ticks: 4 * 64, wantDropped: true,
			clock: func(k int) time.Duration {
				if k >= 96 {
					return time.Duration(k-64) * tick
				}
				return time.Duration(k) * tick
			}},
		{name: "a fractional rate", updates: 2.5, ticks: 10 * 64,
			clock: func(k int) time.Duration { return time.Duration(k) * tick }},
		{name: "late updates stalled", updates: 40, lateUpdates: 30, ticks: 5 * 64, wantDropped: true,
			clock: func(k int) time.Duration { return time.Duration(k) * tick },
			skip:  func(k int) bool { return k > 38 && k < 96 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(testNow)
			s, _ := newTestServer(t, Config{Records: 5000, PageSize: 50, UpdatesPerSecond: tt.updates,
				LateUpdatesPerSecond: tt.lateUpdates, Clock: clock.Now})
			u := s.newUpdater()
			for k := 1; k <= tt.ticks; k++ {
				if tt.skip != nil && tt.skip(k) {
					continue
				}
				clock.Set(testNow.Add(tt.clock(k)))
				u.tick(float64(k) / 64)
			}
			checkInvariants(t, s)

			// Index entries per second, stale ones included: at least the live records there.
			// The initial records are years older than the updates' seconds.
			s.mu.RLock()
			perSecond := map[int64]int{}
			for _, at := range s.upds {
				if at >= testNow.Add(-time.Hour).Unix() {
					perSecond[at]++
				}
			}
			s.mu.RUnlock()
			late := testNow.Add(-DefaultLateBy).Unix()
			for at, n := range perSecond {
				most := int(math.Ceil(tt.updates))
				if at < testNow.Unix() {
					require.GreaterOrEqual(t, at, late-1, "a late update before the clock's earliest late time")
					most = int(math.Ceil(tt.lateUpdates))
				}
				assert.LessOrEqual(t, n, most, "updates stamped with %s", formatTime(at))
			}
			st := s.Stats()
			if tt.wantDropped {
				assert.Positive(t, st.UpdatesDropped, "the catch-up was dropped")
			} else {
				assert.Zero(t, st.UpdatesDropped)
				assert.EqualValues(t, math.Floor(tt.updates*float64(tt.ticks)/64), st.Updates, "every update the rate asks for")
			}
			if tt.lateUpdates > 0 {
				assert.Positive(t, st.LateUpdates)
			}
		})
	}
}

// passErr is pass for goroutines other than the test's: it reports instead of failing.
func passErr(base, from string) (int, error) {
	q := since(from)
	n := 0
	for pages := 0; pages < 1_000_000; pages++ {
		resp, err := http.Get(base + KeysetPath + "?" + q.Encode())
		if err != nil {
			return n, err
		}
		var p Page
		err = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if err != nil {
			return n, err
		}
		if resp.StatusCode != http.StatusOK {
			return n, fmt.Errorf("status %d", resp.StatusCode)
		}
		n += len(p.Data)
		if p.ScrollParam == nil {
			return n, nil
		}
		q = scroll(*p.ScrollParam)
	}
	return n, fmt.Errorf("paging does not end")
}

// Pages, updates, inserts and snapshots at once; run with -race.
func TestConcurrentUse(t *testing.T) {
	clock := newFakeClock(testNow)
	s, srv := newTestServer(t, Config{Records: 5000, PageSize: 100, TieWidth: 2, Start: testStart, LateBy: 20 * time.Second, Clock: clock.Now})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 30 {
				switch (w + i) % 3 {
				case 0:
					n, err := passErr(srv.URL, ts(testStart.Add(time.Duration(i*100)*time.Second)))
					assert.NoError(t, err)
					assert.Positive(t, n)
				case 1:
					clock.Add(time.Second)
					s.Update(300)
					s.Insert(2)
					s.updateLate(5, nil)
				default:
					assert.GreaterOrEqual(t, len(s.Snapshot()), 5000)
				}
			}
		})
	}
	wg.Wait()
	checkInvariants(t, s)
}

func TestLiveSet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 63, 64, 65, 4095, 4096, 4097, 20000} {
		var l liveSet
		l.fill(n)
		model := make([]bool, n+300)
		for i := range n {
			model[i] = true
		}
		for range 3000 {
			i := r.IntN(len(model))
			if r.IntN(2) == 0 {
				l.set(i)
				model[i] = true
			} else {
				l.clear(i)
				model[i] = false
			}
			from := r.IntN(len(model) + 10)
			want := -1
			for j := from; j < len(model); j++ {
				if model[j] {
					want = j
					break
				}
			}
			require.Equal(t, want, l.next(from), "n=%d next(%d)", n, from)
		}
		// Clear a long run and skip it.
		for i := range model {
			l.clear(i)
			model[i] = false
		}
		l.set(len(model) - 1)
		require.Equal(t, len(model)-1, l.next(0))
		require.True(t, l.has(len(model)-1))
	}
}

func TestStatsCountRequests(t *testing.T) {
	s, srv := newTestServer(t, Config{Records: 60, Start: testStart})
	pass(t, srv.URL, ts(testStart))
	get(t, srv.URL+KeysetPath)
	get(t, srv.URL+"/nope")
	st := s.Stats()
	assert.Equal(t, uint64(4), st.Requests)
	assert.Equal(t, uint64(2), st.Pages)
	assert.Equal(t, uint64(60), st.RecordsServed)
	assert.Equal(t, uint64(2), st.Status4xx)
	assert.Zero(t, st.Status5xx)
}

// BenchmarkPage serves random first pages and next pages through the handler (no network).
// The cost must not grow with the number of records: compare the sizes.
func BenchmarkPage(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			s, err := New(Config{Records: n, TieWidth: 3, Seed: 1, Clock: newFakeClock(testNow).Now})
			require.NoError(b, err)
			// A fifth of the records updated: stale entries to skip, as while updates run.
			s.update(n/5, nil)
			h := s.Handler()
			r := rand.New(rand.NewPCG(1, 1))
			start := s.Config().Start
			groups := n / 3
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				at := start.Add(time.Duration(r.IntN(groups)) * time.Second)
				var target string
				if i%2 == 0 {
					target = KeysetPath + "?updated_since=" + ts(at)
				} else {
					target = KeysetPath + "?scroll_param=" + url.QueryEscape(ScrollToken(ts(at)))
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

func BenchmarkNew(b *testing.B) {
	for _, n := range []int{1_000_000, 2_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := New(Config{Records: n, TieWidth: 1, Seed: 1}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUpdate(b *testing.B) {
	clock := newFakeClock(testNow)
	s, err := New(Config{Records: 1_000_000, Seed: 1, Clock: clock.Now})
	require.NoError(b, err)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%100 == 0 {
			clock.Add(time.Second)
		}
		s.update(10, nil)
	}
}
