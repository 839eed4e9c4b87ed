package pipeline_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/source"
)

// TestSyncRefusesACursorItCannotStartFrom: a committed cursor far in the future would make a
// pass skip every record and succeed; one whose seq cannot increase would make every commit
// fail to move it. Both stop the pass before any request, with an error that cannot heal by
// retrying and that says how to replace the cursor.
func TestSyncRefusesACursorItCannotStartFrom(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		at        time.Time
		seq       int64
		maxFuture time.Duration
		err       error    // nil: the pass runs
		msg       []string // in the error
		wantSeq   int64    // with err == nil: the seq committed by the pass
	}{
		{name: "beyond the default 24h", at: now.Add(25 * time.Hour), seq: 4, err: cursor.ErrFuture,
			msg: []string{`pipeline "p"`, "read at the cursor store", "last_updated_at 2025-01-02T01:00:00Z, more than 24h0m0s after now (2025-01-01T00:00:00Z)", "keysetsync cursor set --pipeline p --to <time>"}},
		{name: "beyond a configured max-future", at: now.Add(3 * time.Hour), seq: 4, maxFuture: 2 * time.Hour, err: cursor.ErrFuture, msg: []string{"more than 2h0m0s after now"}},
		{name: "ahead, within the allowed skew", at: now.Add(23 * time.Hour), seq: 4, wantSeq: 5},
		{name: "seq at its maximum", at: now.Add(-time.Hour), seq: cursor.MaxSeq, err: cursor.ErrCorrupt, msg: []string{"seq 9007199254740992, the largest a cursor may have", "tombstone"}},
		{name: "seq one below its maximum", at: now.Add(-time.Hour), seq: cursor.MaxSeq - 1, wantSeq: cursor.MaxSeq},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// One record newer than any of the cursors, so a pass that runs commits once.
			sp := newScriptedPipeline(t, []sourcetest.Answer{sourcetest.Page("", sourcetest.Rec("a", "2025-01-01T23:30:00Z"))},
				scriptedOptions{walk: source.WalkOptions{MaxFuture: c.maxFuture, Now: func() time.Time { return now }}})
			require.NoError(t, sp.store.Commit(t.Context(), cursor.Cursor{Pipeline: "p", LastUpdatedAt: c.at, Seq: c.seq}))
			_, err := sp.pipeline.Pass(t.Context())
			if c.err == nil {
				require.NoError(t, err)
				got, err := sp.store.Load(t.Context(), "p")
				require.NoError(t, err)
				assert.Equal(t, c.wantSeq, got.Seq)
				return
			}
			require.ErrorIs(t, err, c.err)
			assert.False(t, retry.IsRetryable(err), "retrying cannot change the committed cursor")
			for _, m := range c.msg {
				assert.Contains(t, err.Error(), m)
			}
			assert.Empty(t, sp.api.Requests(), "nothing is read from a cursor that is refused")
			got, err := sp.store.Load(t.Context(), "p")
			require.NoError(t, err)
			assert.Equal(t, c.seq, got.Seq, "the cursor is left as it was")
		})
	}
}
