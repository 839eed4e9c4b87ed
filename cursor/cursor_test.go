package cursor_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/cursortest"
)

func TestMemStoreConformance(t *testing.T) {
	cursortest.Run(t, func(t *testing.T) cursortest.Opener {
		s := cursor.NewMemStore()
		return func(t *testing.T) cursor.Store { return s }
	})
}

func TestUnmarshal(t *testing.T) {
	cases := []struct {
		name, in string
		want     cursor.Cursor
		err      string
	}{
		{name: "fivetran example state", in: `{"last_updated_at": "2024-01-15T10:30:00Z"}`,
			want: cursor.Cursor{LastUpdatedAt: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)}},
		{name: "not json", in: `{`, err: "corrupt cursor record"},
		{name: "bad time", in: `{"last_updated_at": "2024-01-15 10:30:00"}`, err: `last_updated_at "2024-01-15 10:30:00"`},
		{name: "missing time", in: `{"version": 1}`, err: `last_updated_at ""`},
		{name: "future version", in: `{"version": 99, "last_updated_at": "2024-01-15T10:30:00Z"}`, err: "version 99 is newer"},
		{name: "largest seq", in: `{"last_updated_at": "2024-01-15T10:30:00Z", "seq": 9007199254740992}`,
			want: cursor.Cursor{LastUpdatedAt: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC), Seq: cursor.MaxSeq}},
		{name: "seq beyond 2^53", in: `{"last_updated_at": "2024-01-15T10:30:00Z", "seq": 9007199254740993}`, err: "seq 9007199254740993 is outside 0..2^53"},
		{name: "seq that would wrap", in: `{"last_updated_at": "2024-01-15T10:30:00Z", "seq": 9223372036854775807}`, err: "seq 9223372036854775807 is outside 0..2^53"},
		{name: "negative seq", in: `{"last_updated_at": "2024-01-15T10:30:00Z", "seq": -1}`, err: "seq -1 is outside 0..2^53"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := cursor.Unmarshal([]byte(c.in))
			if c.err != "" {
				require.ErrorIs(t, err, cursor.ErrCorrupt)
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}

func TestMarshalMatchesGolden(t *testing.T) {
	c := cursor.Cursor{
		Pipeline:         "users",
		LastUpdatedAt:    time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC),
		Delivered:        map[string]string{"b-id": "00000000000000bb", "a-id": "00000000000000aa"},
		Lookback:         map[uint64]time.Time{cursor.Digest("late-id", time.Date(2024, 1, 15, 10, 29, 30, 0, time.UTC), "00000000000000cc"): time.Date(2024, 1, 15, 10, 29, 30, 0, time.UTC), 42: time.Date(2024, 1, 15, 10, 29, 30, 0, time.UTC), 7: time.Date(2024, 1, 15, 10, 29, 0, 0, time.UTC)},
		DeliveredPartial: true,
		LastID:           "b-id",
		TieSettled:       true,
		LookbackFrom:     time.Date(2024, 1, 15, 10, 29, 0, 0, time.UTC),
		Seq:              42,
		CommittedAt:      time.Date(2026, 11, 25, 22, 0, 0, 5000, time.UTC),
		Records:          12345,
	}
	requireGolden(t, "cursor.golden.json", c)
}

// requireGolden requires c to marshal as testdata/file holds it (UPDATE_GOLDEN=1 rewrites it)
// and to read back unchanged; it returns what it read back.
func requireGolden(t *testing.T, file string, c cursor.Cursor) cursor.Cursor {
	t.Helper()
	got, err := cursor.Marshal(c)
	require.NoError(t, err)
	golden := filepath.Join("testdata", file)
	if os.Getenv("UPDATE_GOLDEN") != "" {
		require.NoError(t, os.WriteFile(golden, append(got, '\n'), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, strings.TrimSpace(string(want)), string(got), "the cursor format is a public contract (README): a change must stay safe for older builds to read, or bump Version")
	back, err := cursor.Unmarshal(got)
	require.NoError(t, err)
	assert.Equal(t, c, back)
	return back
}

func TestMarshalRefusesASeqOutOfRange(t *testing.T) {
	for _, seq := range []int64{-1, cursor.MaxSeq + 1, math.MaxInt64} {
		_, err := cursor.Marshal(cursor.Cursor{Pipeline: "p", LastUpdatedAt: cursor.Start, Seq: seq})
		require.Error(t, err, "seq %d", seq)
		assert.Contains(t, err.Error(), fmt.Sprintf("seq %d is outside 0..2^53", seq))
	}
	_, err := cursor.Marshal(cursor.Cursor{Pipeline: "p", LastUpdatedAt: cursor.Start, Seq: cursor.MaxSeq})
	require.NoError(t, err)
}
