package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/playground"
)

// TestBackfillCursorShowResumeSet: `cursor show` prints a cursor with a backfill in flight as
// stored; `once` resumes its ranges where they stood (a range marked done is not read again,
// even though, crafted here, its records were never sent); `cursor set` replaces it with a plain
// position and says it dropped the backfill.
func TestBackfillCursorShowResumeSet(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		// 90 records, 3 per second from 2024-01-01T00:00:00Z to 00:00:29Z.
		f := newToolsFixture(t, tg, playground.Config{Records: 90, TieWidth: 3}, 1)
		at := func(s int) time.Time { return time.Date(2024, 1, 1, 0, 0, s, 0, time.UTC) }
		store, err := kafka.NewCursorStore(t.Context(), kafka.CursorStoreConfig{Client: tg.Kafka(t), Topic: f.cursors, ReplicationFactor: 1})
		require.NoError(t, err)
		t.Cleanup(func() { store.Close() })
		c := cursor.Cursor{Pipeline: "tools", LastUpdatedAt: at(0), Seq: 5, Backfill: &cursor.Backfill{Horizon: at(20), Ranges: []cursor.Range{
			{From: at(10), LastUpdatedAt: at(10)},
			{From: at(15), Done: true},
		}}}
		require.NoError(t, store.Commit(t.Context(), c))

		code, out, stderr := f.run(t, "cursor", "show")
		require.Equal(t, 0, code, stderr)
		want, err := cursor.Marshal(c)
		require.NoError(t, err)
		assert.Equal(t, string(want)+"\n", out)

		f.once(t)
		codec, err := avro.NewCodec()
		require.NoError(t, err)
		sent := map[int]int{} // second -> messages
		for _, r := range f.scan(t) {
			u, err := codec.Decode(r.Value)
			require.NoError(t, err)
			sent[u.UpdatedAt.Second()]++
		}
		for s := range 30 {
			want := 3
			if s >= 15 && s < 20 {
				want = 0 // the range [15s, 20s) was done
			}
			assert.Equal(t, want, sent[s], "messages of second %d", s)
		}
		resumed := kafkatest.Cursor(t, tg, f.cursors, "tools")
		assert.Nil(t, resumed.Backfill)
		assert.Equal(t, at(29), resumed.LastUpdatedAt)

		c.Seq = resumed.Seq + 1
		require.NoError(t, store.Commit(t.Context(), c))
		code, _, stderr = f.run(t, "cursor", "set", "--to", "2024-01-01T00:00:00Z")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "dropped the parallel backfill in flight (horizon 2024-01-01T00:00:20Z, 2 ranges after the cursor's)")
		assert.Nil(t, kafkatest.Cursor(t, tg, f.cursors, "tools").Backfill)
	})
}
