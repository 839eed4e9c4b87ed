package pipeline_test

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/keysettest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/source"
)

var t0 = time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC)

// TestCursorStaysBounded: whatever the width of a tie or the records of a lookback window,
// every committed cursor fits cursor.MaxBytes, nothing is lost, and what the walk could not
// hold exactly is re-sent and counted, never skipped.
func TestCursorStaysBounded(t *testing.T) {
	cases := []struct {
		name     string
		afterID  bool
		token    keysettest.Token
		page     int
		lookback time.Duration
		now      time.Time // keysetsync's clock (zero: two hours after the data)
		load     func(a *keysettest.API)
		// second is what the second pass (nothing changed) may send: records it cannot tell
		// apart, all counted as resent.
		second func(t *testing.T, st pipeline.Stats)
	}{
		{
			name: "after-id tie of 25,000 at one second", afterID: true, token: keysettest.Compound, page: 1000,
			load: func(a *keysettest.API) {
				a.Tie("t", t0, 25_000)
				a.Put(keysettest.Record{ID: "z-later", UpdatedAt: t0.Add(time.Second), Name: "v1"})
			},
			second: func(t *testing.T, st pipeline.Stats) { assert.Zero(t, st.Produced) },
		},
		{
			name: "after-id tie of 25,000 that ends the data, long ago", afterID: true, token: keysettest.Compound, page: 1000,
			load:   func(a *keysettest.API) { a.Tie("t", t0, 25_000) },
			second: func(t *testing.T, st pipeline.Stats) { assert.Zero(t, st.Produced) },
		},
		{
			name: "after-id tie of 25,000 that ends the data, now", afterID: true, token: keysettest.Compound, page: 1000, now: t0,
			load: func(a *keysettest.API) { a.Tie("t", t0, 25_000) },
			// The tie may still grow (nothing later exists, and its time is now): it is read
			// again and, being past what a cursor lists, re-sent and counted.
			second: func(t *testing.T, st pipeline.Stats) {
				assert.Equal(t, 25_000, st.Produced)
				assert.Equal(t, 25_000, st.Resent)
			},
		},
		{
			name: "lookback of 1h over 15,000 records", token: keysettest.Exclusive, page: 500, lookback: time.Hour,
			load: func(a *keysettest.API) {
				for i := range 15_000 {
					a.Put(keysettest.Record{ID: fmt.Sprintf("r%05d", i), UpdatedAt: t0.Add(time.Duration(i) * 240 * time.Millisecond), Name: "v1"})
				}
			},
			second: func(t *testing.T, st pipeline.Stats) {
				assert.Equal(t, st.Resent, st.Produced, "only records the cursor could not list are sent again")
				assert.Less(t, st.Produced, 15_000, "the newest part of the window is held exactly")
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api := keysettest.New(t, c.page, c.afterID, c.token)
			c.load(api)
			now := func() time.Time { return t0.Add(2 * time.Hour) }
			if !c.now.IsZero() {
				now = func() time.Time { return c.now }
			}
			p := keysettest.NewPipeline(t, api, source.WalkOptions{Lookback: c.lookback, Now: now}, 1000)
			st, err := p.Pipeline.Pass(t.Context())
			require.NoError(t, err)
			assert.Equal(t, len(api.Snapshot()), st.Produced, "one pass, each record once")
			assert.Zero(t, st.Resent)
			p.RequireInSync(t)
			assert.LessOrEqual(t, p.Store.Max, cursor.MaxBytes, "the largest cursor committed")

			st, err = p.Pipeline.Pass(t.Context())
			require.NoError(t, err)
			c.second(t, st)
			p.RequireInSync(t)
			assert.LessOrEqual(t, p.Store.Max, cursor.MaxBytes, "the largest cursor committed")
		})
	}
}

// TestRestartInsideASettledTieResumesFromItsPosition: a pass that stops in the middle of a
// 30,000-record tie (its cursor lists only part of it) resumes from (time, last id): it does
// not read the tie from its start again, and re-sends at most the batch that was not committed.
func TestRestartInsideASettledTieResumesFromItsPosition(t *testing.T) {
	api := keysettest.New(t, 1000, true, keysettest.Compound)
	api.Tie("t", t0, 30_000)
	api.Put(keysettest.Record{ID: "later", UpdatedAt: t0.Add(time.Second), Name: "v1"})
	p := keysettest.NewPipeline(t, api, source.WalkOptions{}, 1000)
	p.Store.FailAfter = 5
	_, err := p.Pipeline.Pass(t.Context())
	require.ErrorIs(t, err, pipeline.ErrCommit)
	c, err := p.Store.Load(t.Context(), "p")
	require.NoError(t, err)
	require.True(t, c.DeliveredPartial, "5,000 ids at one time are more than a cursor lists")
	require.True(t, c.TieSettled)
	require.NotEmpty(t, c.LastID)

	p.Store.FailAfter = 0
	before := len(api.Requests())
	st, err := p.Pipeline.Pass(t.Context())
	require.NoError(t, err)
	first := api.Requests()[before].Query
	assert.Equal(t, url.Values{"updated_since": {"2024-05-01T08:00:00Z"}, "after_id": {c.LastID}}, first, "the pass goes on from the cursor's position")
	for _, r := range api.Requests()[before:] {
		assert.False(t, r.Query.Get("after_id") == "" && r.Query.Get("updated_since") == "2024-05-01T08:00:00Z", "the tie is not read from its start again: %v", r.Query)
	}
	assert.Zero(t, st.Resent)
	assert.Equal(t, 30_001-5_000, st.Produced, "the rest of the tie and the later record, once")
	p.RequireInSync(t)
}

// TestSameSecondChangeBehindThePosition: a record changed again within the time unit the walk
// is reading, after the walk read it, is delivered in the same pass even when the walk then
// moves on to later times.
func TestSameSecondChangeBehindThePosition(t *testing.T) {
	cases := []struct {
		name string
		page int
		load func(a *keysettest.API)
		// at is the request before which "a" changes (within t0) and "late" appears at t0+1.
		at int
	}{
		// Page 1 spans t0-1 and t0; the change comes before page 2.
		{"narrow tie", 3, func(a *keysettest.API) {
			a.Put(keysettest.Record{ID: "x", UpdatedAt: t0.Add(-time.Second), Name: "v1"})
			a.Tie("", t0, 4)
		}, 2},
		// A tie wider than a page that has later records already: it is settled, but page 1
		// was read before the probe showed it.
		{"settled wide tie", 3, func(a *keysettest.API) {
			a.Tie("", t0, 7)
			a.Put(keysettest.Record{ID: "y", UpdatedAt: t0.Add(5 * time.Second), Name: "v1"})
		}, 2},
		// A tie wider than a page with nothing later: it may still grow, and does while it is
		// paged through.
		{"growing wide tie", 3, func(a *keysettest.API) { a.Tie("", t0, 7) }, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api := keysettest.New(t, c.page, true, keysettest.Compound)
			c.load(api)
			first := api.Snapshot()
			changed := first[len(first)-1]
			for _, r := range first {
				if r.UpdatedAt.Equal(t0) {
					changed = r // the lowest id at t0: behind every position inside t0
					break
				}
			}
			api.OnPage(func(n int, _ url.Values) {
				if n == c.at {
					api.Put(keysettest.Record{ID: changed.ID, UpdatedAt: t0, Name: "v2"},
						keysettest.Record{ID: "late", UpdatedAt: t0.Add(time.Second), Name: "v1"})
				}
			})
			// The clock says t0 is now: the tie is live.
			p := keysettest.NewPipeline(t, api, source.WalkOptions{Now: func() time.Time { return t0 }}, 100)
			_, err := p.Pipeline.Pass(t.Context())
			require.NoError(t, err)
			got, _ := p.Latest(t)
			require.Contains(t, got, "late", "the pass moved on past t0")
			require.NotNil(t, got[changed.ID].Name)
			assert.Equal(t, "v2", *got[changed.ID].Name, "the change within t0 behind the position is delivered")
			p.RequireInSync(t)
		})
	}
}

// TestCompoundTokenThroughATieAtTheCursor: without an after-id parameter but with a token that
// pages through ties, a tie of three pages at the cursor's time is skipped page by page (each
// new token is progress), and what comes after it is delivered. It is not a tie overflow.
func TestCompoundTokenThroughATieAtTheCursor(t *testing.T) {
	api := keysettest.New(t, 50, false, keysettest.Compound)
	api.Tie("t", t0, 150)
	p := keysettest.NewPipeline(t, api, source.WalkOptions{}, 100)
	st, err := p.Pipeline.Pass(t.Context())
	require.NoError(t, err, "a token that goes on inside the tie loses nothing")
	assert.Zero(t, st.TieOverflows)
	assert.Equal(t, 150, st.Produced)

	api.Put(keysettest.Record{ID: "newer", UpdatedAt: t0.Add(time.Second), Name: "v1"})
	for range 2 {
		st, err = p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
	}
	p.RequireInSync(t)
	assert.Zero(t, st.Produced)
}

// TestLookbackFinerThanTheAPI: a lookback that is not a whole number of the API's time units
// asks from the unit before, and passes keep working.
func TestLookbackFinerThanTheAPI(t *testing.T) {
	api := keysettest.New(t, 50, false, keysettest.Exclusive)
	for i := range 20 {
		api.Put(keysettest.Record{ID: fmt.Sprintf("r%02d", i), UpdatedAt: t0.Add(time.Duration(i) * time.Second), Name: "v1"})
	}
	p := keysettest.NewPipeline(t, api, source.WalkOptions{Lookback: 1500 * time.Millisecond}, 100)
	for range 3 {
		_, err := p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
	}
	p.RequireInSync(t)
	last := api.Requests()[len(api.Requests())-1].Query
	assert.Equal(t, "2024-05-01T08:00:17Z", last.Get("updated_since"), "19 s less 1.5 s, down to the whole second")
}
