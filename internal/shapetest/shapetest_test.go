package shapetest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a settable Config.Clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s, err := New(cfg)
	require.NoError(t, err)
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return s, hs.URL
}

// rec is the part of a record the paging tests look at.
type rec struct {
	OrderID int64 `json:"order_id"`
	Meta    struct {
		Modified json.RawMessage `json:"modified"`
		Deleted  bool            `json:"deleted"`
	} `json:"meta"`
	raw json.RawMessage
}

// T is meta.modified as modified_since takes it.
func (r rec) T() string {
	var s string
	if json.Unmarshal(r.Meta.Modified, &s) == nil {
		return s
	}
	return string(r.Meta.Modified)
}

func get(t *testing.T, base string, q url.Values) (int, []byte) {
	t.Helper()
	return getRaw(t, base+Path+"?"+q.Encode())
}

func getRaw(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	return resp.StatusCode, body
}

func getPage(t *testing.T, base string, q url.Values) (Page, []rec) {
	t.Helper()
	status, body := get(t, base, q)
	require.Equal(t, http.StatusOK, status, "query %s: %s", q.Encode(), body)
	var p Page
	require.NoError(t, json.Unmarshal(body, &p))
	require.NotNil(t, p.Result.Orders, "orders must be an array, never null: %s", body)
	recs := make([]rec, len(p.Result.Orders))
	for i, o := range p.Result.Orders {
		require.NoError(t, json.Unmarshal(o, &recs[i]))
		recs[i].raw = o
	}
	return p, recs
}

func vals(kv ...string) url.Values {
	q := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	return q
}

// key is (meta.modified, order_id) of a record, for order checks.
type key struct {
	mod time.Time
	id  int64
}

func (k key) less(o key) bool {
	if !k.mod.Equal(o.mod) {
		return k.mod.Before(o.mod)
	}
	return k.id < o.id
}

func keyOf(t *testing.T, s *Server, r rec) key {
	t.Helper()
	mod, err := s.ParseTime(r.T())
	require.NoError(t, err)
	return key{mod, r.OrderID}
}

// pass reads from first until next_cursor is null, continuing with the cursor token or with
// modified_since and after_id, and checks page sizes, next_cursor and (when static, i.e. no
// concurrent changes) total_matching.
func pass(t *testing.T, s *Server, base string, first url.Values, useCursor, static bool) []rec {
	t.Helper()
	limit := s.Config().PageSize
	if v := first.Get(ParamLimit); v != "" {
		limit, _ = strconv.Atoi(v)
	}
	var all []rec
	q := first
	remaining := -1
	for pages := 0; ; pages++ {
		require.Less(t, pages, 100000, "pass does not end")
		p, recs := getPage(t, base, q)
		require.LessOrEqual(t, len(recs), limit)
		if static {
			if remaining >= 0 {
				require.Equal(t, remaining, p.Paging.TotalMatching, "total_matching after %d records", len(all))
			}
			remaining = p.Paging.TotalMatching - len(recs)
		}
		all = append(all, recs...)
		if p.Paging.NextCursor == nil {
			if static {
				require.Equal(t, len(recs), p.Paging.TotalMatching, "no next_cursor but more records match")
			}
			return all
		}
		require.Len(t, recs, limit, "a page with a next_cursor is full")
		if static {
			require.Greater(t, p.Paging.TotalMatching, len(recs))
		}
		last := recs[len(recs)-1]
		require.Equal(t, EncodeCursor(last.T(), last.OrderID), *p.Paging.NextCursor)
		q = url.Values{}
		if v := first.Get(ParamLimit); v != "" {
			q.Set(ParamLimit, v)
		}
		if useCursor {
			q.Set(ParamCursor, *p.Paging.NextCursor)
		} else {
			q.Set(ParamModifiedSince, last.T())
			q.Set(ParamAfterID, strconv.FormatInt(last.OrderID, 10))
		}
	}
}

func fromStart(s *Server) url.Values {
	return vals(ParamModifiedSince, s.FormatTime(s.Config().Start))
}

// requireStrictlyAscending checks the (modified, id) order, which also proves no record repeats.
func requireStrictlyAscending(t *testing.T, s *Server, recs []rec) {
	t.Helper()
	for i := 1; i < len(recs); i++ {
		a, b := keyOf(t, s, recs[i-1]), keyOf(t, s, recs[i])
		require.True(t, a.less(b), "records %d (%v) and %d (%v) out of order", i-1, a, i, b)
	}
}

// requireWholeSnapshot checks that recs are every record exactly once, as Snapshot renders them.
func requireWholeSnapshot(t *testing.T, s *Server, recs []rec) {
	t.Helper()
	snap := s.Snapshot()
	require.Len(t, recs, len(snap))
	for _, r := range recs {
		want, ok := snap[strconv.FormatInt(r.OrderID, 10)]
		require.True(t, ok, "order %d not in the snapshot", r.OrderID)
		require.JSONEq(t, string(want), string(r.raw))
		delete(snap, strconv.FormatInt(r.OrderID, 10))
	}
	require.Empty(t, snap)
}

func TestPagingReturnsEveryRecordOnceInOrder(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		limit string // empty: the server's PageSize
	}{
		{"defaults", Config{}, ""},
		{"ties wider than a page", Config{Records: 1000, TieWidth: 60, PageSize: 25}, ""},
		{"ties as wide as a page", Config{Records: 500, TieWidth: 25, PageSize: 25, TimeFormat: EpochSeconds}, ""},
		{"limit below the page size", Config{Records: 300, TieWidth: 60, TimeFormat: RFC3339}, "7"},
		{"limit of one", Config{Records: 50, TieWidth: 3}, "1"},
		{"every record at one time", Config{Records: 130, TieWidth: 1000, PageSize: 25}, ""},
		{"maximum limit", Config{Records: 5000, TieWidth: 60, Seed: 7}, "500"},
		{"large, ties and small pages", Config{Records: 20000, TieWidth: 60, PageSize: 25, Seed: 9, TimeFormat: RFC3339}, ""},
	}
	for _, c := range cases {
		for _, useCursor := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/cursor=%v", c.name, useCursor), func(t *testing.T) {
				if testing.Short() && c.cfg.Records > 1000 {
					t.Skip("large")
				}
				s, base := newServer(t, c.cfg)
				first := fromStart(s)
				if c.limit != "" {
					first.Set(ParamLimit, c.limit)
				}
				recs := pass(t, s, base, first, useCursor, true)
				requireStrictlyAscending(t, s, recs)
				requireWholeSnapshot(t, s, recs)
			})
		}
	}
}

// sortedRecords is every record in (modified, id) order, read in one go.
func sortedRecords(t *testing.T, s *Server, base string) []rec {
	t.Helper()
	recs := pass(t, s, base, vals(ParamModifiedSince, beforeAll(s), ParamLimit, "500"), false, true)
	requireStrictlyAscending(t, s, recs)
	return recs
}

// beforeAll is a modified_since before every record in any format.
func beforeAll(s *Server) string {
	return s.FormatTime(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC))
}

func ids(recs []rec) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.OrderID
	}
	return out
}

func TestModifiedSinceAndAfterIDFilters(t *testing.T) {
	for _, f := range []TimeFormat{EpochMillis, EpochSeconds, RFC3339} {
		t.Run(string(f), func(t *testing.T) {
			s, base := newServer(t, Config{Records: 300, TieWidth: 60, PageSize: 25, TimeFormat: f, Seed: 3})
			all := sortedRecords(t, s, base)
			require.Len(t, all, 300)
			// Groups of 60 share a time: records 120..179 are the third group.
			T := all[130].T()
			require.Equal(t, T, all[120].T())
			require.NotEqual(t, T, all[119].T())
			require.NotEqual(t, T, all[180].T())
			idsAt := ids(all[120:180])
			require.True(t, slices.IsSorted(idsAt), "ties are ordered by numeric id")

			cases := []struct {
				name      string
				q         url.Values
				wantFirst int // index in all of the first record returned
			}{
				{"inclusive time re-returns the whole tie", vals(ParamModifiedSince, T), 120},
				{"after an id inside the tie", vals(ParamModifiedSince, T, ParamAfterID, strconv.FormatInt(all[130].OrderID, 10)), 131},
				{"after the last id of the tie", vals(ParamModifiedSince, T, ParamAfterID, strconv.FormatInt(all[179].OrderID, 10)), 180},
				{"after an id below every id of the tie", vals(ParamModifiedSince, T, ParamAfterID, "0"), 120},
				{"after a negative id", vals(ParamModifiedSince, T, ParamAfterID, "-5"), 120},
				{"after an id above every id", vals(ParamModifiedSince, T, ParamAfterID, "9223372036854775807"), 180},
				{"before every record", vals(ParamModifiedSince, beforeAll(s)), 0},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					p, recs := getPage(t, base, c.q)
					require.Equal(t, len(all)-c.wantFirst, p.Paging.TotalMatching)
					require.Equal(t, ids(all[c.wantFirst:c.wantFirst+25]), ids(recs))
					require.NotNil(t, p.Paging.NextCursor)
				})
			}
		})
	}
}

func TestAfterIDBetweenIDsOfTheTie(t *testing.T) {
	s, base := newServer(t, Config{Records: 120, TieWidth: 60, PageSize: 100, Seed: 5})
	all := sortedRecords(t, s, base)
	// An id that is not in the data still splits the tie by numeric order.
	var k int
	for k = 1; k < 60 && all[k].OrderID == all[k-1].OrderID+1; k++ {
	}
	require.Less(t, k, 60, "ids are sparse")
	between := all[k-1].OrderID + 1
	_, recs := getPage(t, base, vals(ParamModifiedSince, all[0].T(), ParamAfterID, strconv.FormatInt(between, 10)))
	require.Equal(t, all[k].OrderID, recs[0].OrderID)
}

func TestCursorTokenMeansModifiedSinceAndAfterID(t *testing.T) {
	for _, f := range []TimeFormat{EpochMillis, EpochSeconds, RFC3339} {
		t.Run(string(f), func(t *testing.T) {
			s, base := newServer(t, Config{Records: 200, TieWidth: 30, PageSize: 20, TimeFormat: f, Seed: 11})
			all := sortedRecords(t, s, base)
			for _, k := range []int{0, 1, 19, 29, 30, 100, 198, 199} {
				T, id := all[k].T(), strconv.FormatInt(all[k].OrderID, 10)
				for _, limit := range []string{"", "3"} {
					byParams, byCursor := vals(ParamModifiedSince, T, ParamAfterID, id), vals(ParamCursor, EncodeCursor(T, all[k].OrderID))
					if limit != "" {
						byParams.Set(ParamLimit, limit)
						byCursor.Set(ParamLimit, limit)
					}
					st1, b1 := get(t, base, byParams)
					st2, b2 := get(t, base, byCursor)
					require.Equal(t, http.StatusOK, st1)
					require.Equal(t, http.StatusOK, st2)
					require.Equal(t, string(b1), string(b2), "record %d, limit %q", k, limit)
				}
			}
			// A token needs no escaping in a URL.
			tok := EncodeCursor(all[5].T(), all[5].OrderID)
			require.Equal(t, tok, url.QueryEscape(tok))
		})
	}
}

func TestBadRequests(t *testing.T) {
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		name   string
		format TimeFormat
		query  string // raw, so that malformed ones can be sent
		want   []string
	}{
		{"no parameters", EpochMillis, "", []string{"missing", ParamModifiedSince, ParamCursor}},
		{"unknown parameter", EpochMillis, "modified_since=0&foo=1", []string{"unknown", `"foo"`}},
		{"unknown parameters are all listed", EpochMillis, "zz=1&modified_since=0&bar=2", []string{`"bar", "zz"`}},
		{"playground's parameter", EpochMillis, "updated_since=2024-01-01T00:00:00Z", []string{`"updated_since"`}},
		{"repeated modified_since", EpochMillis, "modified_since=0&modified_since=1", []string{ParamModifiedSince, "2 times"}},
		{"repeated limit", EpochMillis, "modified_since=0&limit=1&limit=1", []string{ParamLimit, "2 times"}},
		{"malformed query", EpochMillis, "modified_since=%zz", []string{"malformed"}},
		{"empty modified_since", EpochMillis, "modified_since=", []string{ParamModifiedSince}},
		{"word as modified_since", EpochMillis, "modified_since=yesterday", []string{ParamModifiedSince, "yesterday"}},
		{"fraction in epoch_ms", EpochMillis, "modified_since=1704067200000.5", []string{ParamModifiedSince}},
		{"plus sign", EpochMillis, "modified_since=%2B5", []string{ParamModifiedSince}},
		{"leading zero", EpochMillis, "modified_since=05", []string{ParamModifiedSince}},
		{"space", EpochMillis, "modified_since=%205", []string{ParamModifiedSince}},
		{"overflow", EpochMillis, "modified_since=9223372036854775808", []string{ParamModifiedSince}},
		{"RFC 3339 in epoch_ms", EpochMillis, "modified_since=2024-01-01T00:00:00Z", []string{ParamModifiedSince}},
		{"RFC 3339 in epoch_s", EpochSeconds, "modified_since=2024-01-01T00:00:00Z", []string{ParamModifiedSince, "seconds"}},
		{"epoch in rfc3339", RFC3339, "modified_since=1704067200000", []string{ParamModifiedSince, "RFC 3339"}},
		{"offset instead of Z", RFC3339, "modified_since=2024-01-01T00:00:00%2B00:00", []string{ParamModifiedSince}},
		{"space instead of T", RFC3339, "modified_since=2024-01-01%2000:00:00Z", []string{ParamModifiedSince}},
		{"lower-case z", RFC3339, "modified_since=2024-01-01T00:00:00z", []string{ParamModifiedSince}},
		{"month 13", RFC3339, "modified_since=2024-13-01T00:00:00Z", []string{ParamModifiedSince}},
		{"30 February", RFC3339, "modified_since=2024-02-30T00:00:00Z", []string{ParamModifiedSince}},
		{"comma fraction", RFC3339, "modified_since=2024-01-01T00:00:00,5Z", []string{ParamModifiedSince}},
		{"empty fraction", RFC3339, "modified_since=2024-01-01T00:00:00.Z", []string{ParamModifiedSince}},
		{"ten fraction digits", RFC3339, "modified_since=2024-01-01T00:00:00.1234567890Z", []string{ParamModifiedSince}},
		{"date only", RFC3339, "modified_since=2024-01-01", []string{ParamModifiedSince}},
		{"word as after_id", EpochMillis, "modified_since=0&after_id=abc", []string{ParamAfterID, "abc"}},
		{"fraction as after_id", EpochMillis, "modified_since=0&after_id=1.0", []string{ParamAfterID}},
		{"empty after_id", EpochMillis, "modified_since=0&after_id=", []string{ParamAfterID}},
		{"after_id alone", EpochMillis, "after_id=5", []string{ParamAfterID, "needs", ParamModifiedSince}},
		{"cursor and modified_since", EpochMillis, "modified_since=0&cursor=" + b64("0:1"), []string{ParamCursor, ParamModifiedSince, "not both"}},
		{"cursor and after_id", EpochMillis, "after_id=1&cursor=" + b64("0:1"), []string{ParamCursor, "not both"}},
		{"cursor not base64", EpochMillis, "cursor=%21%21%21", []string{ParamCursor}},
		{"cursor with padding", EpochMillis, "cursor=" + base64.URLEncoding.EncodeToString([]byte("0:12")), []string{ParamCursor}},
		{"cursor without colon", EpochMillis, "cursor=" + b64("1704067200000"), []string{ParamCursor}},
		{"cursor with bad time", EpochMillis, "cursor=" + b64("abc:1"), []string{ParamCursor}},
		{"cursor with bad id", EpochMillis, "cursor=" + b64("0:x"), []string{ParamCursor}},
		{"cursor of another format", RFC3339, "cursor=" + b64("1704067200000:1"), []string{ParamCursor}},
		{"empty cursor", EpochMillis, "cursor=", []string{ParamCursor}},
		{"limit 0", EpochMillis, "modified_since=0&limit=0", []string{ParamLimit, "500"}},
		{"limit over the maximum", EpochMillis, "modified_since=0&limit=501", []string{ParamLimit}},
		{"negative limit", EpochMillis, "modified_since=0&limit=-1", []string{ParamLimit}},
		{"word as limit", EpochMillis, "modified_since=0&limit=ten", []string{ParamLimit}},
		{"empty limit", EpochMillis, "modified_since=0&limit=", []string{ParamLimit}},
		{"bad limit with a cursor", EpochMillis, "limit=0&cursor=" + b64("0:1"), []string{ParamLimit}},
	}
	servers := map[TimeFormat]string{}
	for _, f := range []TimeFormat{EpochMillis, EpochSeconds, RFC3339} {
		_, servers[f] = newServer(t, Config{Records: 10, TimeFormat: f})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := getRaw(t, servers[c.format]+Path+"?"+c.query)
			require.Equal(t, http.StatusBadRequest, status, "body: %s", body)
			var e ErrorBody
			require.NoError(t, json.Unmarshal(body, &e), "body: %s", body)
			for _, w := range c.want {
				assert.Contains(t, e.Error, w)
			}
		})
	}
}

func TestAcceptedEdgeValues(t *testing.T) {
	cases := []struct {
		name      string
		format    TimeFormat
		query     url.Values
		wantTotal int
	}{
		{"zero", EpochMillis, vals(ParamModifiedSince, "0"), 10},
		{"negative", EpochMillis, vals(ParamModifiedSince, "-1000"), 10},
		{"largest int64", EpochMillis, vals(ParamModifiedSince, "9223372036854775807"), 0},
		{"smallest int64 with after_id", EpochSeconds, vals(ParamModifiedSince, "-9223372036854775808", ParamAfterID, "1"), 10},
		{"year 1", RFC3339, vals(ParamModifiedSince, "0001-01-01T00:00:00Z"), 10},
		{"year 9999", RFC3339, vals(ParamModifiedSince, "9999-12-31T23:59:59.999999999Z"), 0},
		{"no fraction", RFC3339, vals(ParamModifiedSince, "2024-01-01T00:00:00Z"), 10},
		{"limit 1", EpochMillis, vals(ParamModifiedSince, "0", ParamLimit, "1"), 10},
		{"limit 500", EpochMillis, vals(ParamModifiedSince, "0", ParamLimit, "500"), 10},
	}
	servers := map[TimeFormat]string{}
	for _, f := range []TimeFormat{EpochMillis, EpochSeconds, RFC3339} {
		_, servers[f] = newServer(t, Config{Records: 10, TimeFormat: f})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, _ := getPage(t, servers[c.format], c.query)
			require.Equal(t, c.wantTotal, p.Paging.TotalMatching)
		})
	}
	// An empty page is still an array, with a null next_cursor.
	status, body := get(t, servers[EpochMillis], vals(ParamModifiedSince, "9223372036854775807"))
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"result":{"orders":[]},"paging":{"next_cursor":null,"total_matching":0}}`, string(body))
}

func TestPathAndMethod(t *testing.T) {
	s, base := newServer(t, Config{Records: 10})
	status, body := getRaw(t, base+"/pagination/keyset?modified_since=0")
	require.Equal(t, http.StatusNotFound, status, "%s", body)
	resp, err := http.Post(base+Path+"?modified_since=0", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, http.MethodGet, resp.Header.Get("Allow"))
	st := s.Stats()
	require.Equal(t, uint64(2), st.Requests)
	require.Equal(t, uint64(2), st.BadRequests)
	require.Zero(t, st.Pages)
}

func TestTimeFormats(t *testing.T) {
	rfcMillis := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	start := time.Date(2023, 11, 14, 22, 13, 20, 123_456_789, time.UTC)
	cases := []struct {
		format    TimeFormat
		wantStart string
		isNumber  bool
		unit      time.Duration
	}{
		{EpochMillis, "1700000000123", true, time.Millisecond},
		{EpochSeconds, "1700000000", true, time.Second},
		{RFC3339, "2023-11-14T22:13:20.123Z", false, time.Millisecond},
	}
	for _, c := range cases {
		t.Run(string(c.format), func(t *testing.T) {
			s, base := newServer(t, Config{Records: 100, TimeFormat: c.format, Start: start, Seed: 2})
			require.Equal(t, start.Truncate(c.unit), s.Config().Start)
			all := sortedRecords(t, s, base)
			require.Equal(t, c.wantStart, all[0].T())
			nonZeroMillis := 0
			for i, r := range all {
				require.Equal(t, c.isNumber, r.Meta.Modified[0] != '"', "meta.modified %s", r.Meta.Modified)
				if !c.isNumber {
					require.Regexp(t, rfcMillis, r.T())
				}
				mod, err := s.ParseTime(r.T())
				require.NoError(t, err)
				require.Equal(t, r.T(), s.FormatTime(mod), "round trip")
				require.Equal(t, mod, mod.Truncate(c.unit))
				if mod.Nanosecond()/int(time.Millisecond) != 0 {
					nonZeroMillis++
				}
				var full struct {
					Meta struct {
						Created string `json:"created"`
					} `json:"meta"`
				}
				require.NoError(t, json.Unmarshal(r.raw, &full))
				require.Regexp(t, rfcMillis, full.Meta.Created)
				created, err := time.Parse(time.RFC3339Nano, full.Meta.Created)
				require.NoError(t, err)
				require.False(t, created.After(mod), "created %s after modified %s", created, mod)

				// The record's own time given back as modified_since starts the page with it.
				if i%17 == 0 {
					_, page := getPage(t, base, vals(ParamModifiedSince, r.T(), ParamLimit, "1"))
					require.Equal(t, r.OrderID, page[0].OrderID)
				}
			}
			if c.unit == time.Millisecond {
				require.Greater(t, nonZeroMillis, len(all)/2, "times must carry milliseconds")
			}
		})
	}
	t.Run("rfc3339 query precision", func(t *testing.T) {
		s, base := newServer(t, Config{Records: 10, TimeFormat: RFC3339})
		all := sortedRecords(t, s, base)
		T := all[3].T() // e.g. 2024-01-01T00:00:01.011Z
		mod, err := s.ParseTime(T)
		require.NoError(t, err)
		for q, want := range map[string]int{
			strings.TrimSuffix(T, "Z") + "000000Z":             3, // same instant, more digits
			mod.Add(time.Nanosecond).Format(time.RFC3339Nano):  4,
			mod.Add(-time.Nanosecond).Format(time.RFC3339Nano): 3,
		} {
			_, page := getPage(t, base, vals(ParamModifiedSince, q, ParamLimit, "1"))
			require.Equal(t, all[want].OrderID, page[0].OrderID, "modified_since=%s", q)
		}
	})
}

// changes reads the records changed after the key (T, id) of a record read before.
func changesAfter(t *testing.T, s *Server, base string, T string, id int64) []rec {
	t.Helper()
	return pass(t, s, base, vals(ParamModifiedSince, T, ParamAfterID, strconv.FormatInt(id, 10)), false, true)
}

func TestUpdate(t *testing.T) {
	for _, f := range []TimeFormat{EpochMillis, EpochSeconds, RFC3339} {
		t.Run(string(f), func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 987_654_321, time.UTC)}
			s, base := newServer(t, Config{Records: 500, TieWidth: 60, PageSize: 25, TimeFormat: f, Clock: clock.Now, Seed: 4})
			first := sortedRecords(t, s, base)
			last := first[len(first)-1]
			before := s.Snapshot()

			updated := s.Update(10)
			require.Len(t, updated, 10)
			require.True(t, slices.IsSortedFunc(updated, func(a, b Order) int { return cmpInt(a.OrderID, b.OrderID) }))
			unit := time.Duration(f.unit())
			for _, o := range updated {
				require.Equal(t, clock.Now().Truncate(unit), o.Modified)
				var old, cur struct {
					Status string `json:"status"`
					Total  string `json:"total"`
					Items  []Item `json:"items"`
				}
				id := strconv.FormatInt(o.OrderID, 10)
				require.NoError(t, json.Unmarshal(before[id], &old))
				require.NoError(t, json.Unmarshal(s.Snapshot()[id], &cur))
				require.NotEqual(t, old.Status, cur.Status)
				require.NotEqual(t, old.Total, cur.Total)
				require.Equal(t, totalOf(cur.Items), cur.Total)
				require.Equal(t, o.Status, cur.Status)
			}

			// A client that had read everything sees exactly the updates after its last key.
			changed := changesAfter(t, s, base, last.T(), last.OrderID)
			require.Equal(t, idsOfOrders(updated), ids(changed))
			// A new pass from the old start sees every record once, the updated ones last.
			again := pass(t, s, base, fromStart(s), true, true)
			requireStrictlyAscending(t, s, again)
			requireWholeSnapshot(t, s, again)
			require.Equal(t, idsOfOrders(updated), ids(again[len(again)-10:]))

			// With the clock standing still, the next batch still comes strictly after.
			newest := changed[len(changed)-1]
			second := s.Update(3)
			require.Len(t, second, 3)
			require.Equal(t, clock.Now().Truncate(unit).Add(unit), second[0].Modified)
			require.Equal(t, idsOfOrders(second), ids(changesAfter(t, s, base, newest.T(), newest.OrderID)))

			// A clock behind the data does not put updates before the newest record.
			clock.Set(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))
			third := s.Update(2)
			require.Equal(t, second[0].Modified.Add(unit), third[0].Modified)
			requireStrictlyAscending(t, s, sortedRecords(t, s, base))
			require.Equal(t, uint64(15), s.Stats().Updates)
		})
	}
}

func idsOfOrders(os []Order) []int64 {
	out := make([]int64, len(os))
	for i, o := range os {
		out[i] = o.OrderID
	}
	return out
}

func TestUpdateMoreThanExist(t *testing.T) {
	s, base := newServer(t, Config{Records: 20, TieWidth: 5})
	require.Nil(t, s.Update(0))
	require.Nil(t, s.Update(-1))
	require.Len(t, s.Update(100), 20)
	all := sortedRecords(t, s, base)
	require.Len(t, all, 20)
	// One batch shares one time, ordered by id.
	for _, r := range all {
		require.Equal(t, all[0].T(), r.T())
	}
}

func TestDelete(t *testing.T) {
	clock := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, base := newServer(t, Config{Records: 50, Clock: clock.Now, Seed: 8})
	all := sortedRecords(t, s, base)
	last := all[len(all)-1]

	deleted := s.Delete(3)
	require.Len(t, deleted, 3)
	changed := changesAfter(t, s, base, last.T(), last.OrderID)
	require.Equal(t, idsOfOrders(deleted), ids(changed))
	for i, r := range changed {
		require.True(t, r.Meta.Deleted)
		require.True(t, deleted[i].Deleted)
		require.Equal(t, clock.Now(), deleted[i].Modified)
	}
	// Soft deletes stay in the API and in the snapshot.
	require.Len(t, s.Snapshot(), 50)
	requireWholeSnapshot(t, s, sortedRecords(t, s, base))

	// Deleted records are not picked again, by Delete or by Update.
	require.Len(t, s.Update(100), 47)
	require.Len(t, s.Delete(100), 47)
	require.Nil(t, s.Delete(1))
	require.Nil(t, s.Update(1))
	for _, r := range sortedRecords(t, s, base) {
		require.True(t, r.Meta.Deleted)
	}
	st := s.Stats()
	require.Equal(t, uint64(50), st.Deletes)
	require.Equal(t, uint64(47), st.Updates)
	require.Equal(t, 50, st.Orders)
}

func TestUpdateReturnsCopies(t *testing.T) {
	s, _ := newServer(t, Config{Records: 5, Seed: 1})
	before := s.Snapshot()
	got := s.Update(1)
	after := s.Snapshot()
	got[0].Items[0].Qty = 99
	got[0].Attrs["x"] = "y"
	require.Equal(t, after, s.Snapshot())
	require.NotEqual(t, before, after)
}

func TestDeterministic(t *testing.T) {
	clock := func() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }
	run := func(seed uint64) map[string]json.RawMessage {
		s, err := New(Config{Records: 300, TieWidth: 7, Seed: seed, Clock: clock})
		require.NoError(t, err)
		s.Update(20)
		s.Delete(5)
		return s.Snapshot()
	}
	require.Equal(t, run(42), run(42))
	require.NotEqual(t, run(42), run(43))
}

func TestDataShape(t *testing.T) {
	s, err := New(Config{Records: 1000, Seed: 6})
	require.NoError(t, err)
	var noTags, emptyTags, nullEmail, attrs0, attrs2 int
	seenItems := map[int]bool{}
	for id, raw := range s.Snapshot() {
		var o map[string]any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		require.NoError(t, dec.Decode(&o))
		require.Equal(t, id, o["order_id"].(json.Number).String())
		require.Contains(t, Statuses(), o["status"])
		items := o["items"].([]any)
		require.True(t, len(items) >= 1 && len(items) <= 4)
		seenItems[len(items)] = true
		var sum int64
		for _, it := range items {
			it := it.(map[string]any)
			require.Regexp(t, `^\d+\.\d\d$`, it["price"])
			q, err := it["qty"].(json.Number).Int64()
			require.NoError(t, err)
			sum += q * parseCents(it["price"].(string))
		}
		require.Equal(t, formatCents(sum), o["total"])
		if tags, ok := o["tags"]; !ok {
			noTags++
		} else {
			require.LessOrEqual(t, len(tags.([]any)), 3)
			if len(tags.([]any)) == 0 {
				emptyTags++
			}
		}
		cust := o["customer"].(map[string]any)
		if cust["email"] == nil {
			require.Contains(t, cust, "email", "a missing email is null, not absent")
			nullEmail++
		}
		switch len(o["attrs"].(map[string]any)) {
		case 0:
			attrs0++
		case 2:
			attrs2++
		}
		require.NotEmpty(t, cust["address"].(map[string]any)["city"])
		require.Equal(t, false, o["meta"].(map[string]any)["deleted"])
	}
	for name, n := range map[string]int{"no tags": noTags, "empty tags": emptyTags, "null email": nullEmail, "no attrs": attrs0, "two attrs": attrs2} {
		assert.Positive(t, n, name)
	}
	assert.Len(t, seenItems, 4)
}

func TestNewValidatesConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative records", Config{Records: -1}, "records"},
		{"too many records", Config{Records: MaxRecords + 1}, "records"},
		{"negative page size", Config{PageSize: -1}, "page size"},
		{"page size over the maximum", Config{PageSize: MaxPageSize + 1}, "page size"},
		{"negative tie width", Config{TieWidth: -2}, "tie width"},
		{"unknown time format", Config{TimeFormat: "iso"}, "time format"},
		{"start too early", Config{Start: time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC)}, "start"},
		{"start too late", Config{Start: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, "start"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg)
			require.ErrorContains(t, err, c.want)
		})
	}
	s, err := New(Config{})
	require.NoError(t, err)
	cfg := s.Config()
	require.Equal(t, DefaultRecords, cfg.Records)
	require.Equal(t, DefaultPageSize, cfg.PageSize)
	require.Equal(t, 1, cfg.TieWidth)
	require.Equal(t, EpochMillis, cfg.TimeFormat)
	require.Equal(t, DefaultStart(), cfg.Start)
}

func TestConcurrentUpdatesAndPasses(t *testing.T) {
	s, base := newServer(t, Config{Records: 2000, TieWidth: 40, PageSize: 50, Seed: 10})
	// Readers are parallel subtests rather than bare goroutines, so that require may stop one;
	// the writer is a goroutine because it needs no test slot (there may be fewer slots than
	// readers) and cannot fail.
	done := make(chan struct{})
	var writer sync.WaitGroup
	writer.Go(func() {
		defer close(done)
		for i := range 200 {
			if i%10 == 9 {
				s.Delete(2)
			} else {
				s.Update(10)
			}
			if i%50 == 0 { // rendering every record is slow under -race
				_ = s.Snapshot()
			}
			_ = s.Stats()
			time.Sleep(time.Millisecond)
		}
	})
	t.Run("readers", func(t *testing.T) {
		for r := range 4 {
			t.Run(fmt.Sprintf("reader%d", r), func(t *testing.T) {
				t.Parallel()
				for {
					// Keys only grow along a pass, even while records move to the end.
					recs := pass(t, s, base, fromStart(s), r%2 == 0, false)
					requireStrictlyAscending(t, s, recs)
					select {
					case <-done:
						return
					default:
					}
				}
			})
		}
	})
	writer.Wait()
	recs := sortedRecords(t, s, base)
	requireWholeSnapshot(t, s, recs)
	st := s.Stats()
	require.Equal(t, uint64(180*10), st.Updates)
	require.Equal(t, uint64(20*2), st.Deletes)
	require.Equal(t, st.Pages, st.Requests)
}

func TestSchemaCompilesAndFitsTheRecords(t *testing.T) {
	file, err := os.ReadFile("testdata/order.avsc")
	require.NoError(t, err)
	require.Equal(t, string(file), Schema())
	codec, err := goavro.NewCodec(Schema())
	require.NoError(t, err)

	s, err := New(Config{Records: 300, Seed: 12})
	require.NoError(t, err)
	s.Delete(5)
	for id, raw := range s.Snapshot() {
		native := toNative(t, raw)
		bin, err := codec.BinaryFromNative(nil, native)
		require.NoError(t, err, "order %s: %s", id, raw)
		back, rest, err := codec.NativeFromBinary(bin)
		require.NoError(t, err)
		require.Empty(t, rest)
		got := back.(map[string]any)
		require.EqualValues(t, native["order_id"], got["order_id"])
		require.Equal(t, "web", got["channel"], "the field the API lacks takes its default")
		if _, ok := native["tags"]; !ok {
			require.Empty(t, got["tags"])
		}
		require.Equal(t, 0, native["total"].(*big.Rat).Cmp(got["total"].(*big.Rat)))
		require.Equal(t, native["meta"].(map[string]any)["modified"], got["meta"].(map[string]any)["modified"].(time.Time).UTC())
	}
}

// toNative maps a record to goavro's native form by field name, the way keysetsync's generic
// mapper is meant to: absent fields are left out for the schema defaults to fill in.
func toNative(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var o map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&o))
	num := func(v any) int64 {
		n, err := v.(json.Number).Int64()
		require.NoError(t, err)
		return n
	}
	dec2 := func(v any) *big.Rat {
		r, ok := new(big.Rat).SetString(v.(string))
		require.True(t, ok, "decimal %v", v)
		return r
	}
	meta := o["meta"].(map[string]any)
	created, err := time.Parse(time.RFC3339Nano, meta["created"].(string))
	require.NoError(t, err)
	cust := o["customer"].(map[string]any)
	var email any
	if e, ok := cust["email"].(string); ok {
		email = goavro.Union("string", e)
	}
	var items []any
	for _, it := range o["items"].([]any) {
		it := it.(map[string]any)
		items = append(items, map[string]any{"sku": it["sku"], "qty": int32(num(it["qty"])), "price": dec2(it["price"])})
	}
	out := map[string]any{
		"order_id": num(o["order_id"]),
		"meta": map[string]any{
			"modified": time.UnixMilli(num(meta["modified"])).UTC(),
			"created":  created,
			"deleted":  meta["deleted"],
		},
		"customer": map[string]any{"name": cust["name"], "email": email, "address": cust["address"]},
		"status":   o["status"],
		"items":    items,
		"total":    dec2(o["total"]),
		"attrs":    o["attrs"],
	}
	if tags, ok := o["tags"]; ok {
		out["tags"] = tags
	}
	return out
}
