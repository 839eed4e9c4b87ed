package pipeline_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/keysettest"
	"github.com/keysetsync/keysetsync/internal/pipelinetest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/source"
)

// backfilled sets a pipeline's config for a parallel backfill of n workers, observed by obs.
func backfilled(n int, obs pipeline.Observer) func(*pipeline.Config) {
	return func(c *pipeline.Config) {
		c.FetchConcurrency = n
		c.Observer = obs
	}
}

// TestBackfillTiesStraddlingRanges: an initial sync through a parallel backfill of an API
// whose wide ties (more than a page at one second) sit where ranges get split delivers every
// record exactly once, with and without the after-id parameter, and ends with a plain cursor
// at the newest record.
func TestBackfillTiesStraddlingRanges(t *testing.T) {
	t0 := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		afterID bool
	}{{"after-id", true}, {"compound token", false}} {
		t.Run(tc.name, func(t *testing.T) {
			api := keysettest.New(t, 100, tc.afterID, keysettest.Compound)
			for i := range 3000 {
				api.Put(keysettest.Record{ID: fmt.Sprintf("r%05d", i), UpdatedAt: t0.Add(time.Duration(i%2048) * time.Second), Name: "v1"})
			}
			// Ties at midpoints of the span, where the splits fall, each wider than a page.
			for i, s := range []int{1024, 512, 1536, 256, 768, 1280, 1792} {
				api.Tie(fmt.Sprintf("tie%d-", i), t0.Add(time.Duration(s)*time.Second), 250)
			}
			obs := &pipelinetest.BackfillObserver{}
			p := keysettest.NewPipeline(t, api, source.WalkOptions{}, 500, backfilled(8, obs))
			st, err := p.Pipeline.Pass(t.Context())
			require.NoError(t, err)
			assert.Greater(t, obs.MaxActive(), 2, "ranges were walked concurrently")
			p.RequireInSync(t)
			_, n := p.Latest(t)
			assert.Equal(t, len(api.Snapshot()), n, "each record once: no duplicates at the boundaries")
			assert.Equal(t, n, st.Produced)
			c, err := p.Store.Load(t.Context(), "p")
			require.NoError(t, err)
			assert.Nil(t, c.Backfill, "the backfill is over")
			assert.Equal(t, t0.Add(2047*time.Second), c.LastUpdatedAt, "the newest record, as a sequential pass leaves it")
		})
	}
}
