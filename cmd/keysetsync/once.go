package main

import (
	"context"
	"errors"
)

func runOnce(ctx context.Context, e *env, args []string) error {
	runs, err := startSync(ctx, e, args, "once", "Sync from the committed cursor until the API has nothing newer, then exit.\nExit status 0 when everything fetched was acknowledged and committed, 1 on failure.\nWith a config file listing pipelines, all of them run concurrently; 1 if any failed.", nil)
	if err != nil {
		return err
	}
	defer closeSyncs(runs)
	return eachSync(runs, func(r *syncRun) error {
		err := syncPass(ctx, r.p.syncer, r.f, r.log)
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			r.log.Info("interrupted; the cursor covers every acknowledged batch")
			return nil
		}
		return err
	})
}
