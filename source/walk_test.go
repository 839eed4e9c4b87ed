package source_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/keysettest"
	"github.com/keysetsync/keysetsync/source"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// t0 is when the crafted APIs' ties happen.
var t0 = time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC)

// TestMillionRecordTieInOnePass walks a tie of 200,000 records at one second by (time, id) in
// one pass: every record once, and what the walk holds stays at its limit however wide the
// tie (bench/tie measures the memory of a million).
func TestMillionRecordTieInOnePass(t *testing.T) {
	const n = 200_000
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
