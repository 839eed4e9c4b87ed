package main

import (
	"context"
	"errors"
	"flag"
	"time"

	"github.com/keysetsync/keysetsync/producer"
)

func runRun(ctx context.Context, e *env, args []string) error {
	var interval time.Duration
	f, log, p, err := startSync(ctx, e, args, "run", "Sync from the committed cursor every --interval until SIGINT or SIGTERM.\nA failed pass is logged and the next one starts again from the committed cursor.",
		func(fs *flag.FlagSet) {
			fs.DurationVar(&interval, "interval", 30*time.Second, "pause between the end of one pass and the start of the next")
		})
	if err != nil {
		return err
	}
	defer p.close()
	log.Info("running", "interval", interval)
	failures := 0
	for {
		err := syncPass(ctx, p.syncer, f, log)
		if ctx.Err() != nil {
			log.Info("stopping on signal; the cursor covers every acknowledged batch")
			return nil
		}
		if errors.Is(err, producer.ErrConfig) {
			return err
		}
		if err != nil {
			failures++
			log.Error("pass failed; the next pass resumes from the committed cursor", "err", err, "retryable", producer.IsRetryable(err), "consecutive_failures", failures)
		} else {
			failures = 0
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			log.Info("stopping on signal; the cursor covers every acknowledged batch")
			return nil
		case <-t.C:
		}
	}
}
