package playground

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// byKey orders users as pages do: by (updatedAt, id).
func byKey(a, b User) int {
	if c := strings.Compare(a.UpdatedAt, b.UpdatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// sortedByKey returns users sorted by (updatedAt, id).
func sortedByKey(users []User) []User {
	out := slices.Clone(users)
	slices.SortFunc(out, byKey)
	return out
}

// modelPass is what pass must return for records (sorted by key), computed from the documented
// contract alone: updated_since inclusive, then scroll_param exclusive of the last updatedAt.
func modelPass(sorted []User, from string, pageSize int) []User {
	var out []User
	i, _ := slices.BinarySearchFunc(sorted, from, func(u User, t string) int { return strings.Compare(u.UpdatedAt, t) })
	for {
		end := min(i+pageSize, len(sorted))
		out = append(out, sorted[i:end]...)
		if end == len(sorted) || end == i {
			return out
		}
		last := sorted[end-1].UpdatedAt
		for i = end; i < len(sorted) && sorted[i].UpdatedAt <= last; i++ {
		}
		if i == len(sorted) {
			return out
		}
	}
}

func assertStrictlySorted(t *testing.T, users []User) {
	t.Helper()
	for i := 1; i < len(users); i++ {
		require.Negative(t, byKey(users[i-1], users[i]), "records %d and %d not sorted by (updatedAt, id)", i-1, i)
	}
}

func indexOfID(users []User, id string) int {
	return slices.IndexFunc(users, func(u User) bool { return u.ID == id })
}

func TestUpdateLate(t *testing.T) {
	t0, t10, t60 := testNow, testNow.Add(10*time.Second), testNow.Add(60*time.Second)
	oldest := func(snap []User) User { return sortedByKey(snap)[0] }
	// firstFrom picks the first record, by key, with updatedAt >= at.
	firstFrom := func(at time.Time) func([]User) User {
		return func(snap []User) User {
			sorted := sortedByKey(snap)
			i := slices.IndexFunc(sorted, func(u User) bool { return u.UpdatedAt >= ts(at) })
			return sorted[i]
		}
	}
	tests := []struct {
		name     string
		tieWidth int
		pageSize int
		pick     func(snap []User) User
		by       time.Duration
		wantAt   time.Time
	}{
		{"into a gap between updates", 1, 50, oldest, 30 * time.Second, testNow.Add(30 * time.Second)},
		{"into a gap, small pages", 1, 4, oldest, 30 * time.Second, testNow.Add(30 * time.Second)},
		{"into a run sharing its second", 1, 50, oldest, 50 * time.Second, t10},
		{"into the run right after the first updates", 1, 50, firstFrom(testStart.Add(100 * time.Second)), 60 * time.Second, t0},
		{"among the initial tie groups", 3, 50, oldest, t60.Sub(testStart.Add(50 * time.Second)), testStart.Add(50 * time.Second)},
		{"fractional by is truncated to the second", 1, 50, oldest, 29500 * time.Millisecond, testNow.Add(30 * time.Second)},
		{"at its own updatedAt: new content in place", 1, 50, firstFrom(t10), 50 * time.Second, t10},
		{"by 0 joins the newest run", 1, 50, oldest, 0, t60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(t0)
			s, srv := newTestServer(t, Config{Records: 300, TieWidth: tt.tieWidth, PageSize: tt.pageSize, Seed: 5, Start: testStart, Clock: clock.Now})
			s.Update(10)
			clock.Add(10 * time.Second)
			s.Update(10)
			clock.Add(50 * time.Second)
			s.Update(5)
			require.Equal(t, t60, clock.Now())

			// A client reads everything up to now: its cursor is the newest updatedAt.
			read, _ := pass(t, srv.URL, ts(testStart))
			require.NotEmpty(t, read)
			cursor := read[len(read)-1].UpdatedAt
			require.Equal(t, ts(t60), cursor)

			before := s.Snapshot()
			old := tt.pick(before)
			got, err := s.UpdateLate(tt.by, old.ID)
			require.NoError(t, err)
			require.Len(t, got, 1)
			late := got[0]
			checkInvariants(t, s)

			assert.Equal(t, old.ID, late.ID)
			assert.Equal(t, ts(tt.wantAt), late.UpdatedAt)
			assert.Equal(t, old.CreatedAt, late.CreatedAt)
			assert.Equal(t, []string{old.Name, old.Email, old.Address}, []string{late.Name, late.Email, late.Address})
			assert.NotEqual(t, old.Job, late.Job, "new content")
			assert.Contains(t, late.Job, "(rev ")
			st := s.Stats()
			assert.Equal(t, uint64(1), st.LateUpdates)
			assert.Equal(t, uint64(26), st.Updates, "late updates count as updates too")

			// The snapshot reflects it.
			after := s.Snapshot()
			want := slices.Clone(before)
			want[indexOfID(want, late.ID)] = late
			assert.Equal(t, want, after)
			sorted := sortedByKey(after)

			// Every page is sorted and holds what the contract says, from any starting point.
			for _, from := range []string{ts(testStart), ts(tt.wantAt), ts(tt.wantAt.Add(time.Second)), cursor} {
				users, _ := pass(t, srv.URL, from)
				assertStrictlySorted(t, users)
				assert.Equal(t, modelPass(sorted, from, tt.pageSize), users, "pass from %s", from)
			}
			all, _ := pass(t, srv.URL, ts(testStart))
			if i := indexOfID(all, late.ID); tt.wantAt.Before(t60) && i >= 0 {
				newest := slices.IndexFunc(all, func(u User) bool { return u.UpdatedAt == ts(t60) })
				assert.Less(t, i, newest, "the late update lands before the newest records")
			}

			// The client that goes on from its cursor misses it; re-reading a window of LateBy finds it.
			inc, _ := pass(t, srv.URL, cursor)
			if tt.wantAt.Before(t60) {
				assert.Equal(t, -1, indexOfID(inc, late.ID), "updated_since=now misses the late update")
			}
			window, _ := pass(t, srv.URL, ts(t60.Add(-tt.by)))
			if i := indexOfID(window, late.ID); assert.GreaterOrEqual(t, i, 0, "updated_since=now-LateBy sees it") {
				assert.Equal(t, late, window[i])
			}
		})
	}
}

func TestUpdateLateErrors(t *testing.T) {
	clock := newFakeClock(testNow)
	s, _ := newTestServer(t, Config{Records: 50, Start: testStart, Clock: clock.Now})
	fresh := s.Update(2)
	require.Len(t, fresh, 2)
	clock.Add(10 * time.Second)
	all := s.Snapshot()
	var initial User
	for _, u := range all {
		if u.ID != fresh[0].ID && u.ID != fresh[1].ID {
			initial = u
			break
		}
	}
	const unknown = "00000000-0000-4000-8000-000000000000"
	tests := []struct {
		name   string
		by     time.Duration
		ids    []string
		want   []string // in the error
		unwant []string // not in the error
	}{
		{"negative by", -time.Second, []string{initial.ID}, []string{"negative", "-1s"}, nil},
		{"unknown id", time.Second, []string{initial.ID, unknown}, []string{unknown}, nil},
		{"malformed id", time.Second, []string{"not-a-uuid"}, []string{"not-a-uuid"}, nil},
		{"record newer than the late time", 11 * time.Second, []string{fresh[0].ID}, []string{fresh[0].ID, ts(testNow), ts(testNow.Add(-time.Second))}, nil},
		{"several newer records are all named", 20 * time.Second, []string{initial.ID, fresh[1].ID, fresh[0].ID},
			[]string{fresh[0].ID, fresh[1].ID}, []string{initial.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.UpdateLate(tt.by, tt.ids...)
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			for _, w := range tt.unwant {
				assert.NotContains(t, err.Error(), w)
			}
			assert.Equal(t, all, s.Snapshot(), "nothing updated")
			assert.Zero(t, s.Stats().LateUpdates)
			assert.Equal(t, uint64(2), s.Stats().Updates)
		})
	}
	t.Run("none", func(t *testing.T) {
		got, err := s.UpdateLate(time.Second)
		require.NoError(t, err)
		assert.Empty(t, got)
	})
	t.Run("duplicates count once", func(t *testing.T) {
		got, err := s.UpdateLate(10*time.Second, fresh[0].ID, strings.ToUpper(fresh[0].ID), initial.ID)
		require.NoError(t, err)
		require.Len(t, got, 2)
		assert.True(t, slices.IsSortedFunc(got, func(a, b User) int { return strings.Compare(a.ID, b.ID) }), "sorted by id")
		for _, u := range got {
			assert.Equal(t, ts(testNow), u.UpdatedAt)
		}
		assert.Equal(t, uint64(2), s.Stats().LateUpdates)
		checkInvariants(t, s)
	})
}

// Random updates, inserts and late updates, checking the index and the pages against the
// contract as they go; enough updates to compact the index several times.
func TestLateUpdatesKeepPagesSorted(t *testing.T) {
	clock := newFakeClock(testNow)
	const pageSize = 37
	s, srv := newTestServer(t, Config{Records: 2000, TieWidth: 2, PageSize: pageSize, Seed: 9, Start: testStart, LateBy: 45 * time.Second, Clock: clock.Now})
	r := rand.New(rand.NewPCG(3, 4))
	ids := make([]string, 0, 2100)
	for _, u := range s.Snapshot() {
		ids = append(ids, u.ID)
	}
	var lateOK, lateRefused int
	for step := range 300 {
		clock.Add(time.Duration(r.IntN(4)) * time.Second)
		s.Update(1 + r.IntN(40))
		for _, u := range s.Insert(r.IntN(3)) {
			ids = append(ids, u.ID)
		}
		by := time.Duration(r.IntN(120_000)) * time.Millisecond
		id := ids[r.IntN(len(ids))]
		if _, err := s.UpdateLate(by, id); err != nil {
			require.Contains(t, err.Error(), id)
			lateRefused++
		} else {
			lateOK++
		}
		s.updateLate(r.IntN(4), nil)
		if step%25 == 0 {
			checkInvariants(t, s)
			sorted := sortedByKey(s.Snapshot())
			from := ts(clock.Now().Add(-time.Duration(r.IntN(300)) * time.Second))
			users, _ := pass(t, srv.URL, from)
			assertStrictlySorted(t, users)
			require.Equal(t, modelPass(sorted, from, pageSize), users, "step %d, pass from %s", step, from)
		}
	}
	checkInvariants(t, s)
	st := s.Stats()
	assert.Positive(t, st.Compactions)
	assert.Positive(t, lateOK)
	assert.Positive(t, lateRefused)
	assert.GreaterOrEqual(t, st.LateUpdates, uint64(lateOK))
	sorted := sortedByKey(s.Snapshot())
	users, _ := pass(t, srv.URL, ts(testStart))
	assert.Equal(t, modelPass(sorted, ts(testStart), pageSize), users)
}

func TestUpdateLateRandom(t *testing.T) {
	tests := []struct {
		name    string
		lateBy  time.Duration
		n       int
		wantMax int // records eligible
	}{
		{"every record eligible", 30 * time.Second, 25, 25},
		{"only the oldest eleven eligible", testNow.Sub(testStart.Add(10 * time.Second)), 50, 11},
		{"none eligible: skipped", testNow.Sub(testStart.Add(-time.Second)), 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestServer(t, Config{Records: 500, Seed: 4, Start: testStart, LateBy: tt.lateBy})
			items := s.updateLate(tt.n, nil)
			assert.LessOrEqual(t, len(items), tt.wantMax)
			if tt.wantMax > 0 {
				assert.Positive(t, len(items))
			}
			wantAt := testNow.Add(-tt.lateBy).Unix()
			seen := map[uint32]bool{}
			for _, it := range items {
				assert.Equal(t, wantAt, it.updated)
				assert.False(t, seen[it.rec], "record %d updated twice", it.rec)
				seen[it.rec] = true
			}
			assert.Equal(t, uint64(len(items)), s.Stats().LateUpdates)
			checkInvariants(t, s)
		})
	}
}

func TestRunUpdatesLate(t *testing.T) {
	tests := []struct {
		name        string
		updates     float64
		lateUpdates float64
	}{
		{"late updates only", 0, 300},
		{"both", 200, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, srv := newTestServer(t, Config{Records: 1000, UpdatesPerSecond: tt.updates, LateUpdatesPerSecond: tt.lateUpdates, Clock: time.Now})
			assert.Equal(t, DefaultLateBy, s.Config().LateBy)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { s.RunUpdates(ctx) })
			require.Eventually(t, func() bool {
				users, _ := pass(t, srv.URL, ts(DefaultStart))
				assertStrictlySorted(t, users)
				st := s.Stats()
				return st.LateUpdates >= 30 && st.Updates-st.LateUpdates >= uint64(math.Min(tt.updates, 30))
			}, 10*time.Second, 10*time.Millisecond)
			cancel()
			wg.Wait()
			checkInvariants(t, s)
			st := s.Stats()
			if tt.updates == 0 {
				assert.Equal(t, st.LateUpdates, st.Updates, "no other update")
			}
			assert.Equal(t, st, s.Stats(), "no update after RunUpdates returned")
		})
	}
}

func TestPacer(t *testing.T) {
	tests := []struct {
		name    string
		rate    float64
		elapsed []float64
		want    []int
	}{
		{"zero rate", 0, []float64{1, 2}, []int{0, 0}},
		{"steady", 10, []float64{0.05, 0.1, 0.35, 1}, []int{0, 1, 2, 7}},
		{"fractional rate", 0.5, []float64{1, 2, 3, 4}, []int{0, 1, 0, 1}},
		{"a stall gives one second's worth, once", 10, []float64{0.1, 100, 100.05, 101}, []int{1, 10, 0, 10}},
		{"a stall at a fractional rate", 0.5, []float64{1, 2, 60, 61, 62}, []int{0, 1, 1, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pacer{rate: tt.rate}
			var got []int
			for _, e := range tt.elapsed {
				got = append(got, p.due(e))
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestLiveSetInsert(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 63, 64, 65, 4095, 4096, 4097, 9000} {
		var l liveSet
		l.fill(n)
		model := make([]bool, n)
		for i := range model {
			model[i] = r.IntN(3) > 0
			if !model[i] {
				l.clear(i)
			}
		}
		for range 300 {
			i := r.IntN(len(model) + 1)
			if r.IntN(8) == 0 {
				i = len(model) + r.IntN(130) // beyond the end
			}
			for len(model) < i {
				model = append(model, false)
			}
			l.insert(i)
			model = slices.Insert(model, i, true)
			if c := r.IntN(len(model)); r.IntN(2) == 0 {
				l.clear(c)
				model[c] = false
			}
		}
		for from := range len(model) + 70 {
			want := -1
			for j := from; j < len(model); j++ {
				if model[j] {
					want = j
					break
				}
			}
			require.Equal(t, want, l.next(from), "n=%d next(%d)", n, from)
		}
		for i, v := range model {
			require.Equal(t, v, l.has(i), "n=%d has(%d)", n, i)
		}
	}
}

// BenchmarkUpdateLate measures the O(n) cost of a late insert in the middle of a large index.
func BenchmarkUpdateLate(b *testing.B) {
	clock := newFakeClock(testNow)
	// The late time falls among the initial records, half of them after it.
	lateBy := testNow.Sub(DefaultStart.Add(500_000 * time.Second))
	s, err := New(Config{Records: 1_000_000, Seed: 1, LateBy: lateBy, Clock: clock.Now})
	require.NoError(b, err)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%100 == 0 {
			clock.Add(time.Second)
		}
		s.updateLate(1, nil)
	}
}
