package producer_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/producer"
)

// answer is one scripted API response.
type answer struct {
	status int
	body   string
	header map[string]string
}

// scripted serves answers in order (the last one repeats) and records the queries it got.
type scripted struct {
	mu      sync.Mutex
	answers []answer
	queries []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = append(s.queries, r.URL.RawQuery)
	a := s.answers[min(len(s.queries), len(s.answers))-1]
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.status)
	fmt.Fprint(w, a.body)
}

func (s *scripted) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

func newSource(t *testing.T, h http.Handler, attempts int) *producer.Source {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	src, err := producer.NewSource(producer.SourceConfig{URL: srv.URL + "/pagination/keyset", MaxAttempts: attempts,
		BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond, MaxRetryAfter: 5 * time.Millisecond})
	require.NoError(t, err)
	return src
}

const okPage = `{"data":[{"id":"a","updatedAt":"2024-01-01T00:00:00Z"}],"scroll_param":null}`

func TestSourceRetriesWhatCanSucceed(t *testing.T) {
	cases := []struct {
		name    string
		answers []answer
		tries   int
	}{
		{"5xx then ok", []answer{{status: 500, body: `{"error":"boom"}`}, {status: 503, body: "unavailable"}, {status: 200, body: okPage}}, 3},
		{"429 with Retry-After then ok", []answer{{status: 429, body: `{"error":"slow down"}`, header: map[string]string{"Retry-After": "1"}}, {status: 200, body: okPage}}, 2},
		{"408 then ok", []answer{{status: 408}, {status: 200, body: okPage}}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &scripted{answers: c.answers}
			p, err := newSource(t, h, 5).Fetch(t.Context(), 1, producer.Query{Since: cursor.Start})
			require.NoError(t, err)
			assert.Equal(t, 1, p.Len())
			assert.Len(t, h.requests(), c.tries)
		})
	}
}

func TestSourceErrorsNameWhatWentWrong(t *testing.T) {
	cases := []struct {
		name      string
		answer    answer
		is        error
		tries     int
		msg       []string
		retryable bool
	}{
		{"server error after every attempt", answer{status: 500, body: `{"error":"database down"}`}, producer.ErrAPI, 3,
			[]string{"page 7", "HTTP 500", "database down", "after 3 of 3 attempts"}, true},
		{"bad request is not retried", answer{status: 400, body: `{"error":"Cannot use both updated_since and scroll_param"}`}, producer.ErrAPI, 1,
			[]string{"page 7", "HTTP 400", "Cannot use both", "after 1 of 3 attempts"}, false},
		{"not JSON", answer{status: 200, body: `<html>`}, producer.ErrBadPage, 1, []string{"page 7", "body is not a page"}, false},
		{"no data array", answer{status: 200, body: `{"items":[]}`}, producer.ErrBadPage, 1, []string{"page 7", `no "data" array`}, false},
		{"scroll_param an object", answer{status: 200, body: `{"data":[],"scroll_param":{"a":1}}`}, producer.ErrBadPage, 1, []string{"page 7", `next token at "scroll_param"`, "want a string, a number, a boolean or null"}, false},
		{"truncated body", answer{status: 200, body: `{"data":[{"id":"a"`}, producer.ErrBadPage, 1, []string{"page 7", "unexpected end of JSON"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &scripted{answers: []answer{c.answer}}
			_, err := newSource(t, h, 3).Fetch(t.Context(), 7, producer.Query{Since: cursor.Start})
			require.ErrorIs(t, err, c.is)
			for _, m := range c.msg {
				assert.Contains(t, err.Error(), m)
			}
			assert.Len(t, h.requests(), c.tries)
			assert.Equal(t, c.retryable, producer.IsRetryable(err))
		})
	}
}

func TestSourceRefusesAnOversizedPage(t *testing.T) {
	big := `{"data":[{"id":"` + strings.Repeat("x", 2000) + `","updatedAt":"2024-01-01T00:00:00Z"}],"scroll_param":null}`
	srv := httptest.NewServer(&scripted{answers: []answer{{status: 200, body: big}}})
	t.Cleanup(srv.Close)
	src, err := producer.NewSource(producer.SourceConfig{URL: srv.URL, MaxPageBytes: 1000})
	require.NoError(t, err)
	_, err = src.Fetch(t.Context(), 2, producer.Query{Since: cursor.Start})
	require.ErrorIs(t, err, producer.ErrBadPage)
	assert.Contains(t, err.Error(), "larger than the limit of 1000 bytes")
}

func TestSourceSendsTheContractsParameters(t *testing.T) {
	h := &scripted{answers: []answer{{status: 200, body: okPage}}}
	src := newSource(t, h, 1)
	_, err := src.Fetch(t.Context(), 1, producer.Query{Since: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)})
	require.NoError(t, err)
	tok := "MjAyNC0wMS0xNVQxMDozMDowMFo="
	_, err = src.Fetch(t.Context(), 2, producer.Query{Token: &tok})
	require.NoError(t, err)
	assert.Equal(t, []string{"updated_since=2024-01-15T10%3A30%3A00Z", "scroll_param=MjAyNC0wMS0xNVQxMDozMDowMFo%3D"}, h.requests())
}

// badPipeline runs one pass of a Syncer over scripted pages into kfake and returns the error
// and the cursor it left.
func badPipeline(t *testing.T, pages []answer) (error, cursor.Cursor, error, []string) {
	sp := newScriptedPipeline(t, pages, scriptedOptions{})
	_, syncErr := sp.syncer.Sync(t.Context())
	c, loadErr := sp.store.Load(t.Context(), "p")
	return syncErr, c, loadErr, sp.api.requests()
}

type scriptedOptions struct {
	dlq  bool
	walk producer.WalkOptions
}

// scriptedPipeline is a Syncer over a scripted API, writing to kfake.
type scriptedPipeline struct {
	api        *scripted
	tg         kafkatest.Target
	topic, dlq string
	store      *cursor.MemStore
	syncer     *producer.Syncer
}

func newScriptedPipeline(t *testing.T, pages []answer, o scriptedOptions) *scriptedPipeline {
	sp := &scriptedPipeline{api: &scripted{answers: pages}, tg: kafkatest.NewFake(t), store: cursor.NewMemStore()}
	src := newSource(t, sp.api, 1)
	client := sp.tg.Client(t)
	sp.topic = kafkatest.Topic(t, "users")
	kafkatest.CreateTopic(t, sp.tg, sp.topic, 1, nil)
	if o.dlq {
		sp.dlq = kafkatest.Topic(t, "dlq")
		kafkatest.CreateTopic(t, sp.tg, sp.dlq, 1, nil)
	}
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	sp.syncer, err = producer.New(producer.Config{Pipeline: "p", Source: src, Store: sp.store, Codec: codec, Topic: sp.topic, DLQTopic: sp.dlq, Walk: o.walk,
		NewWriter: func() *kafka.Writer { return producer.NewWriter(client, 100) }})
	require.NoError(t, err)
	t.Cleanup(func() { sp.syncer.Close() })
	return sp
}

func page(next string, records ...string) answer {
	n := "null"
	if next != "" {
		n = `"` + next + `"`
	}
	return answer{status: 200, body: `{"data":[` + strings.Join(records, ",") + `],"scroll_param":` + n + `}`}
}

func rec(id, updated string) string {
	return fmt.Sprintf(`{"id":%q,"name":"n","updatedAt":%q}`, id, updated)
}

func TestBadInputStopsTheCursorBeforeIt(t *testing.T) {
	cases := []struct {
		name       string
		pages      []answer
		msg        []string
		wantCursor string // "" means no cursor committed
		wantIDs    []string
	}{
		{
			name: "record without updatedAt on page 2",
			pages: []answer{
				page("t1", rec("a", "2024-01-01T00:00:01Z"), rec("b", "2024-01-01T00:00:02Z")),
				page("", rec("c", "2024-01-01T00:00:03Z"), `{"id":"d"}`, rec("e", "2024-01-01T00:00:05Z")),
			},
			msg:        []string{"page 2, record 1", `(id "d")`, "field updatedAt", "missing"},
			wantCursor: "2024-01-01T00:00:03Z", wantIDs: []string{"c"},
		},
		{
			name:  "records out of updatedAt order",
			pages: []answer{page("", rec("a", "2024-01-01T00:00:05Z"), rec("b", "2024-01-01T00:00:04Z"))},
			msg:   []string{"page 1, record 1", `(id "b")`, "field updatedAt", "before the previous record"}, wantCursor: "2024-01-01T00:00:05Z", wantIDs: []string{"a"},
		},
		{
			name: "a page older than the cursor",
			pages: []answer{
				page("t1", rec("a", "2024-01-01T00:00:05Z"), rec("b", "2024-01-01T00:00:06Z")),
				page("", rec("c", "2024-01-01T00:00:01Z")),
			},
			msg: []string{"page 2, record 0", `(id "c")`, "older than the cursor 2024-01-01T00:00:06Z"}, wantCursor: "2024-01-01T00:00:06Z", wantIDs: []string{"b"},
		},
		{
			name:  "malformed JSON on the first page",
			pages: []answer{{status: 200, body: `{"data": [`}},
			msg:   []string{"invalid page 1", "updated_since=0001-01-01T00%3A00%3A00Z", "unexpected end of JSON input"},
		},
		{
			name: "a scroll_param that loops",
			pages: []answer{
				page("t1", rec("a", "2024-01-01T00:00:05Z"), rec("b", "2024-01-01T00:00:05Z")),
				page("t1", rec("a", "2024-01-01T00:00:05Z"), rec("b", "2024-01-01T00:00:05Z")),
			},
			msg: []string{"makes no progress", "did not move past 2024-01-01T00:00:05Z"}, wantCursor: "2024-01-01T00:00:05Z", wantIDs: []string{"a", "b"},
		},
		{
			name: "a wrong type on page 2",
			pages: []answer{
				page("t1", rec("a", "2024-01-01T00:00:01Z")),
				page("", rec("b", "2024-01-01T00:00:02Z"), `{"id":"c","name":["x"],"updatedAt":"2024-01-01T00:00:03Z"}`),
			},
			msg:        []string{"page 2, record 1", `(id "c")`, "field name", "got JSON array, want string"},
			wantCursor: "2024-01-01T00:00:02Z", wantIDs: []string{"b"},
		},
		{
			name:       "a time that is not UTC",
			pages:      []answer{page("", rec("a", "2024-01-01T00:00:01Z"), rec("b", "2024-01-01T02:00:00+02:00"))},
			msg:        []string{"page 1, record 1", `(id "b")`, "field updatedAt", "not a UTC time"},
			wantCursor: "2024-01-01T00:00:01Z", wantIDs: []string{"a"},
		},
		{
			name:       "a record without id",
			pages:      []answer{page("", rec("a", "2024-01-01T00:00:01Z"), `{"updatedAt":"2024-01-01T00:00:02Z"}`)},
			msg:        []string{"page 1, record 1", "field id", "missing or null"},
			wantCursor: "2024-01-01T00:00:01Z", wantIDs: []string{"a"},
		},
		{
			name: "a body that is not the contract's shape on page 2",
			pages: []answer{
				page("t1", rec("a", "2024-01-01T00:00:01Z")),
				{status: 200, body: `{"items":[{"id":"b"}],"next":"x"}`},
			},
			msg:        []string{"invalid page 2", `no "data" array`},
			wantCursor: "2024-01-01T00:00:01Z", wantIDs: []string{"a"},
		},
		{
			name: "an endless pass running into the future",
			pages: []answer{
				page("t1", rec("a", "2024-01-01T00:00:01Z")),
				page("t2", rec("b", "2024-06-01T00:00:00Z")),
				page("t3", rec("c", "2999-01-01T00:00:00Z")),
			},
			msg:        []string{"page 3, record 0", `(id "c")`, "2999-01-01T00:00:00Z is more than 24h0m0s in the future"},
			wantCursor: "2024-06-01T00:00:00Z", wantIDs: []string{"b"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err, cur, loadErr, _ := badPipeline(t, c.pages)
			require.Error(t, err)
			for _, m := range c.msg {
				assert.Contains(t, err.Error(), m)
			}
			assert.False(t, producer.IsRetryable(err), "bad input does not heal by retrying: %v", err)
			if c.wantCursor == "" {
				require.ErrorIs(t, loadErr, cursor.ErrNotFound)
				return
			}
			require.NoError(t, loadErr)
			assert.Equal(t, c.wantCursor, cur.LastUpdatedAt.Format(cursor.TimeLayout))
			var ids []string
			for id := range cur.Delivered {
				ids = append(ids, id)
			}
			assert.ElementsMatch(t, c.wantIDs, ids, "ids delivered at the cursor's second")
		})
	}
}
