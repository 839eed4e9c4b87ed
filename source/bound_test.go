package source_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/keysettest"
	"github.com/keysetsync/keysetsync/source"
)

// fixedBound is a range end that never moves; it records what the walk said it returned.
type fixedBound struct {
	end     time.Time
	upTo    time.Time
	ended   bool
	pages   int
	locked  bool
	lockErr error
}

func (b *fixedBound) Lock() time.Time {
	if b.locked {
		b.lockErr = errors.New("Lock twice without Unlock")
	}
	b.locked = true
	return b.end
}

func (b *fixedBound) Unlock(upTo time.Time, ended bool) {
	if !b.locked {
		b.lockErr = errors.New("Unlock without Lock")
	}
	b.locked = false
	b.pages++
	if !upTo.IsZero() {
		b.upTo = upTo
	}
	b.ended = b.ended || ended
}

// TestBoundedWalkSplitsATieAtItsEnd walks two ranges [start, m) and [m, ∞) of an API whose tie
// at exactly m is wider than a page and straddles page boundaries: the first range returns
// nothing at or after m and ends at its first record there; the second, started like a backfill
// range (LastUpdatedAt m, exact, nothing delivered), returns the whole tie. Together they
// deliver every record exactly once, with and without the after-id parameter.
func TestBoundedWalkSplitsATieAtItsEnd(t *testing.T) {
	t0 := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	m := t0.Add(time.Minute)
	for _, tc := range []struct {
		name    string
		afterID bool
		token   keysettest.Token
		tie     int
	}{
		{"after-id, tie of 2.5 pages", true, keysettest.Compound, 250},
		{"compound token, tie of 2.5 pages", false, keysettest.Compound, 250},
		{"exclusive token, tie across a page boundary", false, keysettest.Exclusive, 70},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := keysettest.New(t, 100, tc.afterID, tc.token)
			for i := range 130 { // before m: the first page ends inside the tie
				api.Put(keysettest.Record{ID: fmt.Sprintf("a%03d", i), UpdatedAt: t0.Add(time.Duration(i%59) * time.Second), Name: "v1"})
			}
			api.Tie("m", m, tc.tie)
			for i := range 40 {
				api.Put(keysettest.Record{ID: fmt.Sprintf("z%03d", i), UpdatedAt: m.Add(time.Duration(1+i%3) * time.Second), Name: "v1"})
			}
			src, err := source.NewSource(source.SourceConfig{URL: api.URL, Contract: api.Contract(), MaxAttempts: 1})
			require.NoError(t, err)
			codec, err := avro.NewCodec()
			require.NoError(t, err)

			got := map[string]int{}
			walk := func(from time.Time, end time.Time) *fixedBound {
				w := source.NewWalker(src, codec, cursor.Cursor{LastUpdatedAt: from}, source.WalkOptions{}, nil)
				var b *fixedBound
				if !end.IsZero() {
					b = &fixedBound{end: end}
					w.SetBound(b, 0)
				}
				for {
					recs, err := w.Next(context.Background())
					for _, r := range recs {
						got[r.ID]++
						if b != nil {
							assert.True(t, r.UpdatedAt.Before(end), "%s at %s returned by the range ending at %s", r.ID, r.UpdatedAt, end)
							assert.False(t, r.UpdatedAt.After(b.upTo), "%s at %s returned after the walk said up to %s", r.ID, r.UpdatedAt, b.upTo)
						}
					}
					if errors.Is(err, io.EOF) {
						return b
					}
					require.NoError(t, err)
				}
			}
			b := walk(cursor.Start, m)
			require.NoError(t, b.lockErr)
			assert.True(t, b.ended, "the range said it ended")
			walk(m, time.Time{})

			for _, r := range api.Snapshot() {
				assert.Equal(t, 1, got[r.ID], "record %s at %s delivered %d times", r.ID, r.UpdatedAt, got[r.ID])
			}
			assert.Len(t, got, len(api.Snapshot()))
		})
	}
}

// TestBoundedWalkStopsAtItsEnd: a range that reaches its end asks for no page after the one
// holding its first record at or after the end, even though the API holds many more, and does
// not count that page's records from the end on as fetched (the next range does).
func TestBoundedWalkStopsAtItsEnd(t *testing.T) {
	t0 := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	api := keysettest.New(t, 50, true, keysettest.Compound)
	for i := range 1000 {
		api.Put(keysettest.Record{ID: fmt.Sprintf("r%04d", i), UpdatedAt: t0.Add(time.Duration(i) * time.Second), Name: "v1"})
	}
	src, err := source.NewSource(source.SourceConfig{URL: api.URL, Contract: api.Contract(), MaxAttempts: 1})
	require.NoError(t, err)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	end := t0.Add(120 * time.Second)
	w := source.NewWalker(src, codec, cursor.Cursor{LastUpdatedAt: t0}, source.WalkOptions{}, nil)
	b := &fixedBound{end: end}
	w.SetBound(b, 0)
	n := 0
	for {
		recs, err := w.Next(context.Background())
		n += len(recs)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
	}
	assert.Equal(t, 120, n)
	st := w.Stats()
	assert.Equal(t, n+st.Skipped, st.Fetched, "records fetched: those returned and those read again (%d), not the third page's records at or after the end, the next range's", st.Skipped)
	assert.True(t, b.ended)
	assert.LessOrEqual(t, len(api.Requests()), 4, "pages of 50 for 120 records, the third holding the end")
	assert.Equal(t, end, w.Position().LastUpdatedAt.Add(time.Second), "the position is the last record before the end")
}
