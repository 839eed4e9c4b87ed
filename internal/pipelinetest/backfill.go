package pipelinetest

import (
	"sync"

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
