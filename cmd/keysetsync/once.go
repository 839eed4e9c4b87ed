package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/keysetsync/keysetsync/source"
)

const onceSummary = `Sync from the committed cursor until the API has nothing newer, then exit.
Exit status: 0 when everything fetched was acknowledged and committed; 1 on failure; 2 on a
usage error; 3 when everything readable was committed but the API could not serve every record
(a tie wider than a page, see --accept-tie-overflow); 4 when another instance of the pipeline
took over (fenced, exactly-once); 130/143 when SIGINT/SIGTERM stopped it first (after a clean
stop: the cursor covers every acknowledged batch).
With a config file listing pipelines, all of them run concurrently; 4 wins over 1, which wins
over 130/143, which win over 3.`

func runOnce(ctx context.Context, e *env, args []string) error {
	set, err := startJobs(ctx, e, args, "once", onceSummary, nil)
	if err != nil {
		if sig := interruptedBySignal(ctx); sig != nil && !errors.Is(err, errUsage) {
			return fmt.Errorf("%w while opening the pipeline: %w", sig, err)
		}
		return err
	}
	defer set.close()
	// Each pipeline's outcome decides the exit status: a failure (1) wins over an interrupted
	// pass (130/143), which wins over records the API cannot serve (3).
	var mu sync.Mutex
	failed, stopped, mayBeMissing := 0, 0, 0
	err = eachJob(set.jobs, func(j *job) error {
		err := j.runner.Pass(ctx)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			// Whatever the pass returned, it ended because of the stop (a cancelled request, a
			// retry cut short); its cursor covers every acknowledged batch.
			stopped++
			j.log.Info("interrupted; the cursor covers every acknowledged batch", "err", err)
			return errors.New("stopped before the API had nothing newer; the cursor covers every acknowledged batch")
		case errors.Is(err, source.ErrTieOverflow):
			mayBeMissing++
			return err
		default:
			failed++
			return err
		}
	})
	switch {
	case failed > 0:
		return err
	case stopped > 0:
		if sig := interruptedBySignal(ctx); sig != nil {
			return fmt.Errorf("%w: %w", sig, err)
		}
		return fmt.Errorf("%w: %w", context.Cause(ctx), err)
	case mayBeMissing > 0:
		return fmt.Errorf("%w: %w", errMayBeMissing, err)
	}
	return nil
}
