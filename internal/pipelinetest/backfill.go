package pipelinetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/pipeline"
)

// BackfillObserver records what a pipeline's parallel backfills did.
type BackfillObserver struct {
	pipeline.NopObserver
	mu                       sync.Mutex
	maxActive, maxUnfinished int
	calls                    int
}

// BackfillRanges implements pipeline.Observer.
func (o *BackfillObserver) BackfillRanges(active, unfinished int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	o.maxActive = max(o.maxActive, active)
	o.maxUnfinished = max(o.maxUnfinished, unfinished)
}

// MaxActive is the most ranges walked at once so far (0: no backfill ran).
func (o *BackfillObserver) MaxActive() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.maxActive
}

// RequireVersionsInOrder fails unless every id's messages in the data topic carry
// non-decreasing updatedAt: a key's versions were written in the order the API had them, so
// the latest message per key is the latest version.
func (p *Env) RequireVersionsInOrder(t *testing.T) {
	t.Helper()
	last := map[string]time.Time{}
	var back []string
	for _, m := range kafkatest.ReadAll(t, p.Target, p.Topic) {
		u, err := p.Codec.Decode(m.Value)
		require.NoError(t, err, "offset %d", m.Offset)
		if prev, ok := last[u.ID]; ok && u.UpdatedAt.Before(prev) {
			back = append(back, fmt.Sprintf("%s: %s after %s (offset %d)", u.ID, u.UpdatedAt.Format(time.RFC3339), prev.Format(time.RFC3339), m.Offset))
		}
		last[u.ID] = u.UpdatedAt
	}
	require.Empty(t, back[:min(len(back), 10)], "%d messages older than a version of their id written before them", len(back))
}
