package main

import (
	"context"
	"errors"
)

func runOnce(ctx context.Context, e *env, args []string) error {
	f, log, p, err := startSync(ctx, e, args, "once", "Sync from the committed cursor until the API has nothing newer, then exit.\nExit status 0 when everything fetched was acknowledged and committed, 1 on failure.", nil)
	if err != nil {
		return err
	}
	defer p.close()
	err = syncPass(ctx, p.syncer, f, log)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		log.Info("interrupted; the cursor covers every acknowledged batch")
		return nil
	}
	return err
}
