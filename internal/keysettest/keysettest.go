// Package keysettest is a keyset API whose every rule a test sets: records of the users shape
// with whole-second update times, served sorted by (updatedAt, id), with or without an after-id
// parameter, and with a next token that is exclusive by time (the reference API's), compound
// (time and id), or absent (has_more only). A hook runs before each request is answered, so a
// test can change the data between two pages of one pass.
//
// It holds a million records without trouble: a page is found by binary search.
package keysettest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// TimeLayout is how update times are written: the playground's whole seconds.
const TimeLayout = "2006-01-02T15:04:05Z"

// Token says what the next token of an answer is.
type Token int

const (
	// Exclusive: the last record's time; the next page holds records strictly later (the
	// reference API, which cannot page through a tie wider than a page).
	Exclusive Token = iota
	// Compound: the last record's (time, id); the next page goes on after it, inside a tie too.
	Compound
	// HasMore: no token, only `"scroll_param": true` while more records follow.
	HasMore
)

// Record is one record of the API.
type Record struct {
	ID        string
	UpdatedAt time.Time
	Name      string
	// Invalid serves the record with a name that is an object, not a string: a record the
	// walk refuses (a dead letter with a dead-letter topic), its id and updatedAt readable.
	Invalid bool
}

// Request is one request the API answered: its query and how many records it returned.
type Request struct {
	Query   url.Values
	Records int
}

// API is the server. Its methods are safe for concurrent use.
type API struct {
	PageSize int
	AfterID  bool  // the after_id parameter is honoured (else it is an error to send it)
	Token    Token // what scroll_param is

	mu       sync.Mutex
	recs     []Record // sorted by (UpdatedAt, ID)
	byID     map[string]int
	requests []Request
	onPage   func(n int, q url.Values)
	URL      string
}

// New serves an API with pages of pageSize records until the test ends.
func New(t testing.TB, pageSize int, afterID bool, token Token) *API {
	a := &API{PageSize: pageSize, AfterID: afterID, Token: token, byID: map[string]int{}}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	a.URL = srv.URL + "/pagination/keyset"
	return a
}

// Contract is the source.Contract that reads this API.
func (a *API) Contract() source.Contract {
	c := source.DefaultContract()
	if a.AfterID {
		c.AfterIDParam = "after_id"
	}
	return c
}

// OnPage sets a hook run before request n (1-based, counted over the API's life) is answered.
func (a *API) OnPage(f func(n int, q url.Values)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onPage = f
}

// Put adds or replaces records.
func (a *API) Put(recs ...Record) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range recs {
		r.UpdatedAt = r.UpdatedAt.UTC().Truncate(time.Second)
		if i, ok := a.byID[r.ID]; ok {
			a.recs = slices.Delete(a.recs, i, i+1)
		}
		i, _ := slices.BinarySearchFunc(a.recs, r, cmp)
		a.recs = slices.Insert(a.recs, i, r)
	}
	clear(a.byID)
	for i, r := range a.recs {
		a.byID[r.ID] = i
	}
}

// Tie adds n records sharing one update time, with ids prefix0000000..., sorted by id.
func (a *API) Tie(prefix string, at time.Time, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at = at.UTC().Truncate(time.Second)
	for i := range n {
		a.recs = append(a.recs, Record{ID: fmt.Sprintf("%s%09d", prefix, i), UpdatedAt: at, Name: "v1"})
	}
	slices.SortFunc(a.recs, cmp)
	clear(a.byID)
	for i, r := range a.recs {
		a.byID[r.ID] = i
	}
}

// Snapshot returns every record, sorted by (UpdatedAt, ID).
func (a *API) Snapshot() []Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.recs)
}

// Requests returns the requests answered so far.
func (a *API) Requests() []Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.requests)
}

func cmp(x, y Record) int {
	if c := x.UpdatedAt.Compare(y.UpdatedAt); c != 0 {
		return c
	}
	return strings.Compare(x.ID, y.ID)
}

// ServeHTTP answers GET ?updated_since=T[&after_id=X] or ?scroll_param=TOKEN.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a.mu.Lock()
	hook, n := a.onPage, len(a.requests)+1
	a.mu.Unlock()
	if hook != nil {
		hook(n, q)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	from, err := a.start(q)
	if err != nil {
		a.requests = append(a.requests, Request{Query: q})
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	end := min(from+a.PageSize, len(a.recs))
	page := a.recs[from:end]
	a.requests = append(a.requests, Request{Query: q, Records: len(page)})
	data := make([]map[string]any, len(page))
	for i, rec := range page {
		data[i] = map[string]any{"id": rec.ID, "name": rec.Name, "updatedAt": rec.UpdatedAt.Format(TimeLayout)}
		if rec.Invalid {
			data[i]["name"] = map[string]any{"not": "a string"}
		}
	}
	var next any
	if end < len(a.recs) {
		last := page[len(page)-1]
		switch a.Token {
		case Exclusive:
			next = last.UpdatedAt.Format(TimeLayout)
		case Compound:
			next = last.UpdatedAt.Format(TimeLayout) + "|" + last.ID
		case HasMore:
			next = true
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"data": data, "scroll_param": next})
}

// start is the index of the first record a query asks for.
func (a *API) start(q url.Values) (int, error) {
	if tok := q.Get("scroll_param"); tok != "" {
		ts, id, compound := strings.Cut(tok, "|")
		at, err := time.Parse(TimeLayout, ts)
		if err != nil {
			return 0, fmt.Errorf("scroll_param %q: %w", tok, err)
		}
		if !compound {
			return a.after(Record{UpdatedAt: at, ID: "\xff\xff\xff\xff"}), nil
		}
		return a.after(Record{UpdatedAt: at, ID: id}), nil
	}
	at, err := time.Parse(TimeLayout, q.Get("updated_since"))
	if err != nil {
		return 0, fmt.Errorf("updated_since %q: %w", q.Get("updated_since"), err)
	}
	if id := q.Get("after_id"); q.Has("after_id") {
		if !a.AfterID {
			return 0, fmt.Errorf("after_id is not a parameter of this API")
		}
		return a.after(Record{UpdatedAt: at, ID: id}), nil
	}
	i, _ := slices.BinarySearchFunc(a.recs, Record{UpdatedAt: at}, cmp)
	return i, nil
}

// after is the index of the first record after r in (UpdatedAt, ID) order.
func (a *API) after(r Record) int {
	i, found := slices.BinarySearchFunc(a.recs, r, cmp)
	if found {
		i++
	}
	return i
}

// Env is a Pipeline over an API, writing to kfake, with its cursors kept in memory and
// every commit's encoded size recorded.
type Env struct {
	API      *API
	Target   kafkatest.Target
	Topic    string
	Store    *SizedStore
	Sink     *FailingSink
	Pipeline *pipeline.Pipeline
	codec    *avro.Codec
}

// NewPipeline builds a Pipeline reading api with walk's options, in batches of batchRecords;
// each of with changes its config before it is built.
func NewPipeline(t testing.TB, api *API, walk source.WalkOptions, batchRecords int, with ...func(*pipeline.Config)) *Env {
	p := &Env{API: api, Target: kafkatest.NewFake(t), Store: &SizedStore{MemStore: cursor.NewMemStore()}}
	p.Sink = &FailingSink{Sink: p.Target.Sink(t, batchRecords)}
	src, err := source.NewSource(source.SourceConfig{URL: api.URL, Contract: api.Contract(), MaxAttempts: 1})
	require.NoError(t, err)
	p.Topic = kafkatest.Topic(t, "users")
	kafkatest.CreateTopic(t, p.Target, p.Topic, 1, nil)
	p.codec, err = avro.NewCodec()
	require.NoError(t, err)
	cfg := pipeline.Config{Pipeline: "p", Source: src, Store: p.Store, Codec: p.codec, Topic: p.Topic, Walk: walk,
		BatchRecords: batchRecords, Sink: p.Sink}
	for _, f := range with {
		f(&cfg)
	}
	p.Pipeline, err = pipeline.New(cfg)
	require.NoError(t, err)
	return p
}

// Latest returns the topic's latest value per id, and how many messages it holds.
func (p *Env) Latest(t testing.TB) (map[string]avro.User, int) {
	t.Helper()
	msgs := kafkatest.ReadAll(t, p.Target, p.Topic)
	out := make(map[string]avro.User, len(msgs))
	for _, m := range msgs {
		u, err := p.codec.Decode(m.Value)
		require.NoError(t, err, "offset %d", m.Offset)
		out[u.ID] = u
	}
	return out, len(msgs)
}

// Duplicates is how many messages of the topic repeat a version (id, updatedAt and content)
// written before them.
func (p *Env) Duplicates(t testing.TB) int {
	t.Helper()
	seen := map[string]bool{}
	dups := 0
	for _, m := range kafkatest.ReadAll(t, p.Target, p.Topic) {
		k := string(m.Key) + "\x00" + string(m.Value)
		if seen[k] {
			dups++
		}
		seen[k] = true
	}
	return dups
}

// RequireInSync fails unless the topic's latest value of every id is the API's record.
func (p *Env) RequireInSync(t testing.TB) {
	t.Helper()
	got, _ := p.Latest(t)
	want := p.API.Snapshot()
	var stale []string
	for _, r := range want {
		u, ok := got[r.ID]
		if !ok || !u.UpdatedAt.Equal(r.UpdatedAt) || u.Name == nil || *u.Name != r.Name {
			stale = append(stale, r.ID)
		}
	}
	require.Empty(t, stale[:min(len(stale), 10)], "%d of %d records missing or stale in the topic", len(stale), len(want))
	require.Len(t, got, len(want))
}

// FailingSink fails, unwritten, every batch from the FailAt-th Send on (0: none): a batch the
// broker never acknowledged.
type FailingSink struct {
	sink.Sink
	mu     sync.Mutex
	sends  int
	FailAt int
}

// Send implements sink.Sink.
func (s *FailingSink) Send(ctx context.Context, msgs []sink.Message, done func(error)) {
	s.mu.Lock()
	s.sends++
	fail := s.FailAt > 0 && s.sends >= s.FailAt
	s.mu.Unlock()
	if fail {
		done(errors.New("keysettest: batch not acknowledged"))
		return
	}
	s.Sink.Send(ctx, msgs, done)
}

// SetFailAt fails every batch from the n-th Send from now on (0: none).
func (s *FailingSink) SetFailAt(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sends, s.FailAt = 0, n
}

// SizedStore is a MemStore that records the largest cursor committed, as encoded.
type SizedStore struct {
	*cursor.MemStore
	mu      sync.Mutex
	Max     int
	Commits int
	// FailAfter, when positive, fails every commit after that many.
	FailAfter int
	// Back lists the commits whose LastUpdatedAt was before the previous commit's.
	Back []string
	last time.Time
}

// Commit implements cursor.Store.
func (s *SizedStore) Commit(ctx context.Context, c cursor.Cursor) error {
	b, err := cursor.Marshal(c)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.FailAfter > 0 && s.Commits >= s.FailAfter {
		s.mu.Unlock()
		return errors.New("keysettest: commit refused")
	}
	s.Commits++
	s.Max = max(s.Max, len(b))
	if c.LastUpdatedAt.Before(s.last) {
		s.Back = append(s.Back, fmt.Sprintf("seq %d: %s after %s", c.Seq, cursor.FormatTime(c.LastUpdatedAt), cursor.FormatTime(s.last)))
	}
	s.last = c.LastUpdatedAt
	s.mu.Unlock()
	return s.MemStore.Commit(ctx, c)
}

var _ cursor.Store = (*SizedStore)(nil)
