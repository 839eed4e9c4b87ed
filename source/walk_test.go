package source_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/keysettest"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/source"
)

// TestMillionRecordTieInOnePass walks a tie of 200,000 records at one second by (time, id) in
// one pass: every record once, and what the walk holds stays at its limit however wide the
// tie (bench/tie measures the memory of a million).
func TestMillionRecordTieInOnePass(t *testing.T) {
	const n = 200_000
	t0 := time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC)
	api := keysettest.New(t, 1000, true, keysettest.Compound)
	api.Tie("t", t0, n)
	api.Put(keysettest.Record{ID: "later", UpdatedAt: t0.Add(time.Second), Name: "v1"})
	src, err := source.NewSource(source.SourceConfig{URL: api.URL, Contract: api.Contract(), MaxAttempts: 1})
	require.NoError(t, err)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{StateLimit: 1000}, nil)
	seen := make(map[string]bool, n+1)
	maxHeld := 0
	for {
		recs, err := w.Next(context.Background())
		for _, r := range recs {
			require.False(t, seen[r.ID], "%s twice", r.ID)
			seen[r.ID] = true
		}
		maxHeld = max(maxHeld, source.WalkerHeld(w))
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		b, err := cursor.Marshal(w.Position())
		require.NoError(t, err)
		require.LessOrEqual(t, len(b), cursor.MaxBytes)
	}
	assert.Len(t, seen, n+1)
	assert.LessOrEqual(t, maxHeld, 1000, "records held exactly, whatever the tie's width")
	st := w.Stats()
	assert.Zero(t, st.Resent)
	assert.Equal(t, 1, st.Probes, "one probe: the tie has later records, so it is settled")
}

// TestDrain: every record of every page, in order, then nil at the end; the first error, of the
// API or of fn, ends the walk, after fn saw the valid records before a bad one.
func TestDrain(t *testing.T) {
	rec := sourcetest.Rec
	errStop := errors.New("enough")
	cases := []struct {
		name    string
		answers []sourcetest.Answer
		stopAt  string // fn fails at this id
		want    []string
		wantErr error
	}{
		{name: "to the end", answers: []sourcetest.Answer{
			sourcetest.Page("t1", rec("a", "2024-01-01T00:00:01Z"), rec("b", "2024-01-01T00:00:02Z")),
			sourcetest.Page("", rec("c", "2024-01-01T00:00:03Z"))},
			want: []string{"a", "b", "c"}},
		{name: "an empty API", answers: []sourcetest.Answer{sourcetest.Page("")}},
		{name: "fn stops it", answers: []sourcetest.Answer{
			sourcetest.Page("t1", rec("a", "2024-01-01T00:00:01Z"), rec("b", "2024-01-01T00:00:02Z")),
			sourcetest.Page("", rec("c", "2024-01-01T00:00:03Z"))},
			stopAt: "b", want: []string{"a", "b"}, wantErr: errStop},
		{name: "an invalid record, after the valid ones before it", answers: []sourcetest.Answer{
			sourcetest.Page("t1", rec("a", "2024-01-01T00:00:01Z")),
			sourcetest.Page("", rec("b", "2024-01-01T00:00:02Z"), `{"id":"c","updatedAt":"yesterday"}`, rec("d", "2024-01-01T00:00:03Z"))},
			want: []string{"a", "b"}, wantErr: source.ErrInvalidRecord},
		{name: "an API error", answers: []sourcetest.Answer{
			sourcetest.Page("t1", rec("a", "2024-01-01T00:00:01Z")),
			{Status: 500, Body: "down"}},
			want: []string{"a"}, wantErr: source.ErrAPI},
	}
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := sourcetest.NewSource(t, &sourcetest.Scripted{Answers: c.answers}, 1)
			w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{Now: fixedNow}, nil)
			var got []string
			err := w.Drain(t.Context(), func(r source.Record) error {
				got = append(got, r.ID)
				if r.ID == c.stopAt {
					return errStop
				}
				return nil
			})
			if c.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, c.wantErr)
			}
			assert.Equal(t, c.want, got)
		})
	}
}
