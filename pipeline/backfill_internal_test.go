package pipeline

import (
	"fmt"
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
			share := rangeCursorBytes(n) - source.CursorReserve
			require.Positive(t, share)
			full := func(r int) cursor.Cursor {
				at := t0.Add(time.Duration(r) * time.Hour)
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
			m := model{horizon: t0.Add(time.Duration(ranges) * time.Hour)}
			for r := range ranges {
				// Every other range done: done ranges between unfinished ones are never merged.
				m.ranges = append(m.ranges, modelRange{from: t0.Add(time.Duration(r) * time.Hour), done: r%2 == 1 && r > 0, pos: full(r)})
			}
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
		})
	}
}
