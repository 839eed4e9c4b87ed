package pipeline

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/source"
)

// TestBackfillCursorWithinMaxBytes fills every range of the largest backfill a concurrency
// allows (2N+1 ranges) with what its walk may list at most, with ids that JSON escapes the
// most, times with nanoseconds and the longest LastID kept: the cursor stays within
// cursor.MaxBytes, which the broker and every loader rely on.
func TestBackfillCursorWithinMaxBytes(t *testing.T) {
	t0 := time.Date(2024, 3, 1, 0, 0, 0, 123456789, time.UTC)
	for _, n := range []int{1, 2, 8, 16, 32} {
		t.Run(fmt.Sprint(n, " workers"), func(t *testing.T) {
			ranges := 2*n + 1
			m := fullModel(t, t0, n)
			c := m.cursor()
			c.Pipeline = strings.Repeat("p", 200)
			c.Seq, c.Records, c.CommittedAt = cursor.MaxSeq, 1<<62, t0
			b, err := cursor.Marshal(c)
			require.NoError(t, err)
			assert.LessOrEqual(t, len(b), cursor.MaxBytes, "%d ranges", ranges)
			assert.Greater(t, len(b), cursor.MaxBytes/2, "the bound is used, not wasted")
			back, err := cursor.Unmarshal(b)
			require.NoError(t, err)
			assert.Len(t, back.Backfill.Ranges, ranges-1)
			assert.False(t, back.DeliveredPartial, "what every walk lists fits: none is made partial")
			for i, r := range back.Backfill.Ranges {
				assert.False(t, r.DeliveredPartial, "range %d: what every walk lists fits: none is made partial", i)
			}
		})
	}
}

// fullModel is the largest backfill n workers make (2n+1 ranges, every other one done, see
// rangeCursorBytes), each unfinished range, hours apart, standing at its start with what its
// walk may list at most (fullPosition).
func fullModel(t *testing.T, t0 time.Time, n int) model {
	ranges := 2*n + 1
	m := model{horizon: t0.Add(time.Duration(ranges) * time.Hour), prec: time.Nanosecond}
	for r := range ranges {
		// Every other range done: done ranges between unfinished ones are never merged.
		at := t0.Add(time.Duration(r) * time.Hour)
		m.ranges = append(m.ranges, modelRange{from: at, done: r%2 == 1 && r > 0, pos: fullPosition(t, at, rangeCursorBytes(n))})
	}
	return m
}

// fullPosition is a position at `at` listing as much as a walk of maxCursorBytes lists, with
// ids that JSON escapes the most and the longest LastID a range keeps.
func fullPosition(t *testing.T, at time.Time, maxCursorBytes int) cursor.Cursor {
	share := maxCursorBytes - source.CursorReserve
	require.Positive(t, share)
	c := cursor.Cursor{LastUpdatedAt: at, Delivered: map[string]string{}, TieSettled: true,
		LastID: strings.Repeat("<", maxRangeLastIDBytes/6)}
	used := 0
	for i := 0; ; i++ {
		id := fmt.Sprintf("<&>%d\u2028", i)
		e := cursor.EntryBytes(id, 16)
		if used+e > share {
			return c
		}
		used += e
		c.Delivered[id] = "0123456789abcdef"
	}
}

// TestBackfillResumedCursorWithinMaxBytes: a backfill of few workers stops with its ranges
// listing all their share of the cursor allows, and is resumed with more workers
// (--fetch-concurrency raised, or the default after a run with a low one). The extra workers
// split the unfinished ranges at once, and their walks list their own share (what resume gives
// each walker) while the loaded ranges, not yet read again, still list what the old share
// allowed: every cursor committed meanwhile stays within cursor.MaxBytes.
func TestBackfillResumedCursorWithinMaxBytes(t *testing.T) {
	t0 := time.Date(2024, 3, 1, 0, 0, 0, 123456789, time.UTC)
	for _, tc := range []struct{ was, now int }{{2, 8}, {4, 8}, {2, 32}, {8, 16}, {8, 8}, {8, 1}} {
		t.Run(fmt.Sprintf("%d then %d workers", tc.was, tc.now), func(t *testing.T) {
			old := fullModel(t, t0, tc.was)
			c := old.cursor()
			c.Pipeline, c.Seq, c.Records, c.CommittedAt = strings.Repeat("p", 200), cursor.MaxSeq, 1<<62, t0
			b, err := cursor.Marshal(c)
			require.NoError(t, err)
			require.LessOrEqual(t, len(b), cursor.MaxBytes, "the cursor that was committed")
			m, walks := resumeModel(c, time.Nanosecond)
			share := rangeCursorBytes(max(tc.now, len(walks))) // each resumed walker's MaxCursorBytes (resume)
			for k := range max(tc.now-len(walks), 0) {
				// Idle workers split the unfinished ranges, round robin: the k-th split of a
				// range starts k+1 minutes into it, its first page standing in a tie.
				w := walks[k%len(walks)]
				from := w.from.Add(time.Duration(k/len(walks)+1) * time.Minute)
				require.NoError(t, m.apply(item{from: from, pos: fullPosition(t, from.Add(time.Second), share)}))
				next := m.cursor()
				next.Pipeline, next.Seq, next.Records, next.CommittedAt = c.Pipeline, c.Seq, c.Records, c.CommittedAt
				b, err := cursor.Marshal(next)
				require.NoError(t, err)
				assert.LessOrEqual(t, len(b), cursor.MaxBytes, "after %d splits, %d ranges", k+1, len(next.Backfill.Ranges))
			}
		})
	}
}

// simRecord is one record of a simulated API: its time (seconds after simT0) and id.
type simRecord struct {
	at int
	id string
}

var simT0 = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)

func simTime(s int) time.Time { return simT0.Add(time.Duration(s) * time.Second) }

// simAPI is records in keyset order (time, then id).
type simAPI []simRecord

// after is the records a walk standing at pos reads next, up to n, and whether the API has
// more after them: those after pos's time, and those at it pos does not list as delivered.
func (a simAPI) after(pos cursor.Cursor, n int) ([]simRecord, bool) {
	var out []simRecord
	for _, r := range a {
		t := simTime(r.at)
		if t.Before(pos.LastUpdatedAt) {
			continue
		}
		if _, ok := pos.Delivered[r.id]; ok && t.Equal(pos.LastUpdatedAt) {
			continue
		}
		if len(out) == n {
			return out, true
		}
		out = append(out, r)
	}
	return out, false
}

// advance is pos after recs were returned: at the last one's time, listing the ids returned
// at that time (and those listed before, at the same time).
func advance(pos cursor.Cursor, recs []simRecord) cursor.Cursor {
	if len(recs) == 0 {
		return pos
	}
	last := simTime(recs[len(recs)-1].at)
	next := cursor.Cursor{LastUpdatedAt: last, Delivered: map[string]string{}}
	if last.Equal(pos.LastUpdatedAt) {
		for id, fp := range pos.Delivered {
			next.Delivered[id] = fp
		}
	}
	for _, r := range recs {
		if simTime(r.at).Equal(last) {
			next.Delivered[r.id] = "fp"
		}
	}
	return next
}

// readTo is every record a walk from pos reads before end.
func (a simAPI) readTo(pos cursor.Cursor, end time.Time) []simRecord {
	recs, _ := a.after(pos, len(a)+1)
	var out []simRecord
	for _, r := range recs {
		if !simTime(r.at).Before(end) {
			break
		}
		out = append(out, r)
	}
	return out
}

// simSpan is a simulated worker's range, as backfill's span.
type simSpan struct {
	from, to, fetched time.Time
	pos               cursor.Cursor
	ended             bool
}

// TestBackfillCursorResumesExactly simulates parallel backfills over random data (gaps, single
// records, ties), with random page reads, splits and range ends in random order, and after
// every item the model takes checks the cursor it would commit: resumed the way a loaded
// cursor is (every unfinished range walked to its end, then the final walk from where the
// model leaves it), it reads every record not delivered yet exactly once and none delivered
// already. One read twice is a duplicate that exactly-once forbids; one never read, a loss.
func TestBackfillCursorResumesExactly(t *testing.T) {
	crashes := 0
	for seed := range uint64(2000) {
		rnd := rand.New(rand.NewPCG(seed, 7))
		const span = 40
		var api simAPI
		for s := range span {
			n := []int{0, 0, 0, 1, 1, 1, 2, 3, 5}[rnd.IntN(9)]
			for k := range n {
				api = append(api, simRecord{at: s, id: fmt.Sprintf("s%02d-%d", s, k)})
			}
		}
		horizon := simTime(span)
		page := 1 + rnd.IntN(3)
		// The pass's sequential walk reads a page or two, then backfills from where it stands.
		pos := cursor.Cursor{Delivered: map[string]string{}}
		delivered := map[string]bool{}
		for range rnd.IntN(3) {
			recs, _ := api.after(pos, page)
			for _, r := range recs {
				delivered[r.id] = true
			}
			pos = advance(pos, recs)
		}
		m := model{horizon: horizon, prec: time.Second, ranges: []modelRange{{from: pos.LastUpdatedAt, pos: pos}}, top: pos, base: pos}
		spans := []*simSpan{{from: pos.LastUpdatedAt, to: horizon, fetched: pos.LastUpdatedAt, pos: pos}}
		check := func(step int) {
			c := m.cursor()
			if !requireResumesExactly(t, api, c, delivered, rnd) {
				t.Fatalf("seed %d step %d: page %d, cursor %+v backfill %+v", seed, step, page, c, c.Backfill)
			}
		}
		for step := 0; len(spans) > 0; step++ {
			if rnd.IntN(25) == 0 {
				// A crash: the next pass resumes the committed cursor, and its ranges go on
				// being split and walked (and may crash again).
				crashes++
				c := m.cursor()
				if c.Backfill == nil {
					break // every range done: the final walk reads on from c, checked below
				}
				var walks []rangeWalk
				m, walks = resumeModel(c, time.Second)
				spans = spans[:0]
				for _, w := range walks {
					spans = append(spans, &simSpan{from: w.from, to: w.to, fetched: w.pos.LastUpdatedAt, pos: w.pos})
				}
				continue
			}
			if rnd.IntN(4) == 0 && len(spans) < 8 {
				// An idle worker splits the range with the most time left, as take does.
				var best *simSpan
				most := time.Duration(0)
				for _, sp := range spans {
					if l := sp.to.Sub(sp.fetched); l > most {
						best, most = sp, l
					}
				}
				if best == nil {
					continue
				}
				at, ok := splitAt(best.fetched, best.to, time.Second)
				if !ok {
					continue
				}
				sp := &simSpan{from: at, to: best.to, fetched: at, pos: cursor.Cursor{LastUpdatedAt: at, Delivered: map[string]string{}}}
				best.to = at
				spans = append(spans, sp)
				continue
			}
			i := rnd.IntN(len(spans))
			sp := spans[i]
			var it item
			if sp.ended {
				spans = append(spans[:i], spans[i+1:]...)
				it = item{from: sp.from, done: true, to: sp.to}
			} else {
				recs, more := api.after(sp.pos, page)
				var in []simRecord
				for _, r := range recs {
					if !simTime(r.at).Before(sp.to) {
						break
					}
					in = append(in, r)
				}
				sp.ended = len(in) < len(recs) || !more
				sp.pos = advance(sp.pos, in)
				if len(in) > 0 {
					sp.fetched = sp.pos.LastUpdatedAt
				}
				if sp.ended {
					sp.fetched = sp.to
				}
				for _, r := range in {
					require.False(t, delivered[r.id], "seed %d: the simulation read %s twice", seed, r.id)
					delivered[r.id] = true
				}
				it = item{from: sp.from, pos: sp.pos}
			}
			require.NoError(t, m.apply(it), "seed %d step %d", seed, step)
			check(step)
		}
		if len(spans) == 0 {
			require.Len(t, m.ranges, 0, "seed %d: every range done", seed)
		}
		check(-1)
	}
	assert.Greater(t, crashes, 1000, "backfills resumed, and resumed again")
}

// requireResumesExactly resumes c (see TestBackfillCursorResumesExactly) and reports whether
// it reads exactly the records not in delivered, each once.
func requireResumesExactly(t *testing.T, api simAPI, c cursor.Cursor, delivered map[string]bool, rnd *rand.Rand) bool {
	t.Helper()
	read := map[string]int{}
	if c.Backfill != nil {
		m, walks := resumeModel(c, time.Second)
		var items []item
		for _, w := range walks {
			recs := api.readTo(w.pos, w.to)
			for _, r := range recs {
				read[r.id]++
			}
			items = append(items, item{from: w.from, pos: advance(w.pos, recs)}, item{from: w.from, done: true, to: w.to})
		}
		// Ranges end in any order; each one's page comes before its end.
		order := rnd.Perm(len(walks))
		for _, k := range order {
			for _, it := range items[2*k : 2*k+2] {
				if err := m.apply(it); err != nil {
					t.Errorf("resumed: %v", err)
					return false
				}
			}
		}
		c = m.cursor()
		if c.Backfill != nil {
			t.Errorf("every resumed range done, yet the cursor lists ranges: %+v", c.Backfill)
			return false
		}
	}
	for _, r := range api.readTo(c, simTime(1<<20)) {
		read[r.id]++
	}
	ok := true
	for _, r := range api {
		want := 1
		if delivered[r.id] {
			want = 0
		}
		if read[r.id] != want {
			t.Errorf("record %s (at %d): read %d times on resume, want %d", r.id, r.at, read[r.id], want)
			ok = false
		}
	}
	return ok
}
