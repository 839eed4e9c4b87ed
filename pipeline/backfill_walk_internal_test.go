package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/source"
)

// simServer serves recs, sorted by (time, id), as a keyset API: pages of pageSize from
// updated_since (inclusive), after (time, after_id), or a compound scroll_param "time|id".
type simServer struct {
	mu       sync.Mutex
	recs     []simRecord
	pageSize int
}

// move updates the record id: it moves to time at, after every other.
func (s *simServer) move(id string, at int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.recs, func(r simRecord) bool { return r.id == id })
	s.recs = append(slices.Delete(s.recs, i, i+1), simRecord{at: at, id: id})
}

// snapshot is the records now.
func (s *simServer) snapshot() []simRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.recs)
}

func (s *simServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	defer s.mu.Unlock()
	var from int
	if tok := q.Get("scroll_param"); tok != "" {
		ts, id, _ := strings.Cut(tok, "|")
		at, err := strconv.Atoi(ts)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		from = s.after(at, id)
	} else {
		since, err := time.Parse(cursor.TimeLayout, q.Get("updated_since"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		at := int(since.Sub(simT0) / time.Second) // saturates before year 1700: before every record
		if q.Has("after_id") {
			from = s.after(at, q.Get("after_id"))
		} else {
			from, _ = slices.BinarySearchFunc(s.recs, at, func(r simRecord, at int) int { return r.at - at })
		}
	}
	page := s.recs[from:min(from+s.pageSize, len(s.recs))]
	data := make([]map[string]any, len(page))
	for i, r := range page {
		data[i] = map[string]any{"id": r.id, "name": "n", "updatedAt": simTime(r.at).Format(cursor.TimeLayout)}
	}
	var next any
	if from+len(page) < len(s.recs) {
		last := page[len(page)-1]
		next = fmt.Sprintf("%d|%s", last.at, last.id)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": data, "scroll_param": next})
}

// after is the index of the first record after (at, id).
func (s *simServer) after(at int, id string) int {
	i, found := slices.BinarySearchFunc(s.recs, simRecord{at, id}, func(r, k simRecord) int {
		if r.at != k.at {
			return r.at - k.at
		}
		return strings.Compare(r.id, k.id)
	})
	if found {
		i++
	}
	return i
}

// TestBackfillWalkersResumeExactly is TestBackfillCursorResumesExactly with the real parts:
// source.Walkers bounded by backfill spans (pages that straddle a range's end, probes of wide
// ties, positions made partial by a small share of the cursor, LastIDs too long to keep), split
// by backfill.take, their pages queued and taken by the model later (a queue in between, as in
// a pass). After crashes at random points, the committed cursor is resumed by walkers too: every
// record the crashed passes did not deliver is read once, none is lost, and a record read again
// is one its walk counted as resent (without a small share, none is).
func TestBackfillWalkersResumeExactly(t *testing.T) {
	ctx := t.Context()
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	crashes := 0
	for seed := range uint64(60) {
		rnd := rand.New(rand.NewPCG(seed, 11))
		const width = 24
		page := 2 + rnd.IntN(3)
		srv := &simServer{pageSize: page}
		for s := range width + 3 { // the last 3 seconds at or after the horizon: the final walk's
			n := []int{0, 0, 1, 1, 2, 3, page + 1, 2*page + 1}[rnd.IntN(8)]
			long := rnd.IntN(5) == 0 // a LastID over maxRangeLastIDBytes: left out of the cursor
			for k := range n {
				id := fmt.Sprintf("s%02d-%02d", s, k)
				if long {
					id = fmt.Sprintf("s%02d-%s%02d", s, strings.Repeat("L", maxRangeLastIDBytes), k)
				}
				srv.recs = append(srv.recs, simRecord{at: s, id: id})
			}
		}
		api := httptest.NewServer(srv)
		afterID := seed%2 == 0
		contract := source.DefaultContract()
		if afterID {
			contract.AfterIDParam = "after_id"
		}
		src, err := source.NewSource(source.SourceConfig{URL: api.URL, Contract: contract, MaxAttempts: 1})
		require.NoError(t, err)
		// The API's newest records are its clock: a tie with nothing after it may still grow.
		// Records updated during the pass move there, one second later each.
		clock := width + 3
		now := func() time.Time { return simTime(clock) }
		s := &Pipeline{cfg: Config{Source: src, Codec: codec, Walk: source.WalkOptions{Now: now}, FetchConcurrency: 4, Observer: observerOrNop(nil)},
			log: slog.New(slog.DiscardHandler)}
		share := rangeCursorBytes(4)
		small := seed%3 == 0
		if small {
			share = source.CursorReserve + 64 // two or three ids: wider ties make positions partial
		}
		horizon := simTime(width)
		desc := fmt.Sprintf("seed %d (page %d, after-id %v, small share %v)", seed, page, afterID, small)

		// The pass's sequential walk reads a page or two, then backfills from where it stands.
		delivered := map[string]int{}        // by version (id and time)
		latest := map[string]time.Time{}     // by id: the time of the version delivered last
		ids := make([]string, len(srv.recs)) // what may be updated
		for i, r := range srv.recs {
			ids[i] = r.id
		}
		w0 := source.NewWalker(src, codec, cursor.Cursor{}, s.cfg.Walk, nil)
		for range rnd.IntN(3) {
			recs, err := w0.Next(ctx)
			require.NoError(t, err, desc)
			for _, r := range recs {
				delivered[version(r)]++
				latest[r.ID] = r.UpdatedAt
			}
		}
		pos := w0.Position()
		if !pos.LastUpdatedAt.Before(horizon) {
			api.Close()
			continue
		}
		newBF := func() *backfill {
			bf := s.newBackfill(ctx, horizon, 4)
			bf.cursorBytes = share
			return bf
		}
		bf := newBF()
		bf.add(pos.LastUpdatedAt, horizon, pos.LastUpdatedAt, w0)
		walkers := []*source.Walker{w0} // every walk of the passes: what they count as resent
		dups := 0
		m := model{horizon: horizon, prec: time.Second, ranges: []modelRange{{from: pos.LastUpdatedAt, pos: pos}}, top: pos, base: pos}
		var queue []item
		for step := 0; len(bf.spans) > 0 || len(queue) > 0; step++ {
			require.Less(t, step, 5000, desc)
			if rnd.IntN(10) == 0 {
				// A record is updated during the backfill: its new version is after the
				// horizon, for the final walk.
				clock++
				srv.move(ids[rnd.IntN(len(ids))], clock)
			}
			switch r := rnd.IntN(12); {
			case rnd.IntN(30) == 0 && step > 0:
				// A crash: the next pass resumes the committed cursor; what was queued is lost.
				crashes++
				c := m.cursor()
				requireWalkersResume(t, s, share, c, srv, delivered, rnd, false, fmt.Sprintf("%s, step %d", desc, step))
				if c.Backfill == nil {
					bf.spans, queue = nil, nil
					break
				}
				var walks []rangeWalk
				m, walks = resumeModel(c, time.Second)
				bf, queue = newBF(), nil
				for _, w := range walks {
					walkers = append(walkers, bf.add(w.from, w.to, w.pos.LastUpdatedAt, s.rangeWalker(w.pos, share)).walker)
				}
			case r <= 2:
				bf.pending = nil // every range has its worker: an idle one splits
				if len(bf.spans) < 6 {
					if sp := bf.take(); sp != nil {
						walkers = append(walkers, sp.walker)
					}
				}
			case r <= 7 && len(bf.spans) > 0:
				// One page of a range, as backfill.walk takes it.
				sp := bf.spans[rnd.IntN(len(bf.spans))]
				recs, err := sp.walker.Next(ctx)
				if errors.Is(err, io.EOF) {
					sp.mu.Lock()
					sp.finished, sp.fetched = true, sp.to
					sp.mu.Unlock()
					bf.spans = slices.DeleteFunc(bf.spans, func(x *span) bool { return x == sp })
					queue = append(queue, item{span: sp.id, from: sp.from, done: true, to: sp.to,
						pos: sp.walker.PositionWithin(cursor.MaxBytes), held: sp.walker.PositionWithin(math.MaxInt)})
					break
				}
				require.NoError(t, err, desc)
				queue = append(queue, item{span: sp.id, from: sp.from, recs: recs, pos: sp.walker.Position()})
			case len(queue) > 0:
				it := queue[0]
				queue = queue[1:]
				require.NoError(t, m.apply(it), desc)
				for _, r := range it.recs {
					if delivered[version(r)]++; delivered[version(r)] > 1 {
						dups++
					}
					require.False(t, r.UpdatedAt.Before(latest[r.ID]), "%s: %s's version of %s delivered after that of %s",
						desc, r.ID, cursor.FormatTime(r.UpdatedAt), cursor.FormatTime(latest[r.ID]))
					latest[r.ID] = r.UpdatedAt
				}
			}
		}
		resent := 0
		for _, w := range walkers {
			resent += w.Stats().Resent
		}
		require.LessOrEqual(t, dups, resent, "%s: records delivered again that no walk counted as resent", desc)
		if !small {
			require.Zero(t, dups, "%s: every range's position fits its share: nothing is delivered twice", desc)
		}
		c := m.cursor()
		require.Nil(t, c.Backfill, "%s: every range done", desc)
		requireWalkersResume(t, s, share, c, srv, delivered, rnd, false, desc+", committed at the end")
		// No crash at the end: the pass walks on from where its ranges' walks stood, which
		// re-sends nothing, unless the newest one's walk itself started from a partial
		// position, loaded, and so never knew its tie exactly.
		requireWalkersResume(t, s, share, m.final(), srv, delivered, rnd, !m.topHeld.DeliveredPartial, desc+", walking on at the end")
		api.Close()
	}
	require.Greater(t, crashes, 200, "backfills resumed, and resumed again")
}

// version identifies a record's version: its id and update time.
func version(r source.Record) string { return r.ID + "@" + cursor.FormatTime(r.UpdatedAt) }

// requireWalkersResume resumes c with walkers as a pass does (its unfinished ranges walked to
// their ends, then the final walk from where the model leaves them) and fails unless every
// record of srv not in delivered is read once, and those in it not at all, but (unless exact)
// for records the walks counted as resent.
func requireWalkersResume(t *testing.T, s *Pipeline, share int, c cursor.Cursor, srv *simServer, delivered map[string]int, rnd *rand.Rand, exact bool, desc string) {
	t.Helper()
	ctx := t.Context()
	read := map[string]int{}
	resent := 0
	committed, err := cursor.Marshal(c)
	require.NoError(t, err, desc)
	drain := func(w *source.Walker) []item {
		var its []item
		for {
			recs, err := w.Next(ctx)
			if errors.Is(err, io.EOF) {
				resent += w.Stats().Resent
				return its
			}
			require.NoError(t, err, desc)
			for _, r := range recs {
				read[version(r)]++
			}
			its = append(its, item{recs: recs, pos: w.Position()})
		}
	}
	if c.Backfill != nil {
		m, walks := resumeModel(c, time.Second)
		var items [][]item
		for _, w := range walks {
			wk := s.rangeWalker(w.pos, share)
			wk.SetBound(&span{from: w.from, to: w.to, fetched: w.pos.LastUpdatedAt}, share)
			its := drain(wk)
			for i := range its {
				its[i].from = w.from
			}
			items = append(items, append(its, item{from: w.from, done: true, to: w.to,
				pos: wk.PositionWithin(cursor.MaxBytes), held: wk.PositionWithin(math.MaxInt)}))
		}
		for _, k := range rnd.Perm(len(items)) { // ranges end in any order
			for _, it := range items[k] {
				require.NoError(t, m.apply(it), desc)
			}
		}
		require.Nil(t, m.cursor().Backfill, "%s: every resumed range done", desc)
		c = m.final()
	}
	drain(source.NewWalker(s.cfg.Source, s.cfg.Codec, c, s.cfg.Walk, nil))
	extra := 0
	for _, r := range srv.snapshot() {
		v := r.id + "@" + cursor.FormatTime(simTime(r.at))
		want := 1
		if delivered[v] > 0 {
			want = 0
		}
		require.GreaterOrEqual(t, read[v], want, "%s: record %s (at %d) lost; cursor %s", desc, r.id, r.at, committed)
		extra += read[v] - want
	}
	require.LessOrEqual(t, extra, resent, "%s: records read again that no walk counted as resent; cursor %s", desc, committed)
	if exact {
		require.Zero(t, extra, "%s: records read again; cursor %s", desc, committed)
	}
}
