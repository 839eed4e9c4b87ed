package cursor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
)

func TestBackfillMatchesGolden(t *testing.T) {
	at := func(m int) time.Time { return time.Date(2024, 1, 15, 10, m, 0, 0, time.UTC) }
	c := cursor.Cursor{
		Pipeline:      "users",
		LastUpdatedAt: at(1),
		Delivered:     map[string]string{"a-id": "00000000000000aa"},
		Seq:           7,
		Records:       100,
		Backfill: &cursor.Backfill{Horizon: at(50), Ranges: []cursor.Range{
			{From: at(10), Done: true},
			{From: at(20), LastUpdatedAt: at(25), Delivered: map[string]string{"b-id": "00000000000000bb"}},
			{From: at(30), LastUpdatedAt: at(31), DeliveredPartial: true, LastID: "c-id", TieSettled: true},
			{From: at(40), LastUpdatedAt: at(40)},
		}},
	}
	back := requireGolden(t, "backfill.golden.json", c)
	assert.Equal(t, at(40), back.Backfill.End(2))
	assert.Equal(t, at(50), back.Backfill.End(3))
}

// TestUnmarshalRefusesABrokenBackfill: ranges out of order, or a position outside its range,
// would resume a range where it never stood: skipping records or re-walking the wrong span.
func TestUnmarshalRefusesABrokenBackfill(t *testing.T) {
	for _, tc := range []struct{ name, backfill, err string }{
		{"bad horizon", `{"horizon":"soon"}`, `horizon "soon"`},
		{"horizon before the position", `{"horizon":"2024-01-15T10:00:00Z"}`, "is not before the backfill horizon"},
		{"range before the position", `{"horizon":"2024-01-15T11:00:00Z","ranges":[{"from":"2024-01-15T10:00:00Z","done":true}]}`, "range 0 starts at 2024-01-15T10:00:00Z, not after"},
		{"ranges out of order", `{"horizon":"2024-01-15T11:00:00Z","ranges":[{"from":"2024-01-15T10:40:00Z","done":true},{"from":"2024-01-15T10:35:00Z","done":true}]}`, "range 0 starts at 2024-01-15T10:40:00Z, not before its end 2024-01-15T10:35:00Z"},
		{"range past the horizon", `{"horizon":"2024-01-15T11:00:00Z","ranges":[{"from":"2024-01-15T11:00:00Z","done":true}]}`, "not before its end"},
		{"position outside its range", `{"horizon":"2024-01-15T11:00:00Z","ranges":[{"from":"2024-01-15T10:40:00Z","last_updated_at":"2024-01-15T11:00:00Z"}]}`, "is outside it"},
		{"range without a position", `{"horizon":"2024-01-15T11:00:00Z","ranges":[{"from":"2024-01-15T10:40:00Z"}]}`, "range 0: last_updated_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cursor.Unmarshal([]byte(`{"version":1,"pipeline":"p","last_updated_at":"2024-01-15T10:30:00Z","backfill":` + tc.backfill + `}`))
			require.ErrorIs(t, err, cursor.ErrCorrupt)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
}
