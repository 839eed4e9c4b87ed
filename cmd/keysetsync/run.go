package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"
)

// minInterval is the shortest --interval accepted: below it an idle pipeline would start a
// pass (a cursor load and an API request) hundreds of times a second, about 1,000 at 0s, for
// no fresher data than a pass every 100ms gives.
const minInterval = 100 * time.Millisecond

func registerInterval(fs *flag.FlagSet, interval *time.Duration) {
	fs.DurationVar(interval, "interval", 30*time.Second, "pause between the end of one pass and the start of the next (at least "+minInterval.String()+")")
}

// checkInterval refuses an --interval below minInterval.
func checkInterval(interval time.Duration) error {
	if interval < minInterval {
		return fmt.Errorf("%w: --interval %s: below the floor of %s (a pass would start about %d times a second)",
			errUsage, interval, minInterval, time.Second/max(interval, time.Millisecond))
	}
	return nil
}

func runRun(ctx context.Context, e *env, args []string) error {
	var interval time.Duration
	set, err := startJobs(ctx, e, args, "run", "Sync from the committed cursor every --interval until SIGINT or SIGTERM, then exit 0.\nA failed pass is logged and the next one starts again from the committed cursor. A pass that\nended with records the API cannot serve (a tie wider than a page) is logged as an ERROR and\nmarks the pipeline degraded on /readyz and keysetsync_degraded until the process restarts.\nA pipeline fenced by another instance of it (exactly-once) stops, and the process exits 4.\nWith a config file listing pipelines, all of them run concurrently in this process.", &interval)
	if err != nil {
		if interruptedBySignal(ctx) != nil && !errors.Is(err, errUsage) {
			// Stopped while connecting: nothing was written, and run stops on a signal with 0.
			stderrLogger(e).Info("stopping on signal before the pipelines were open", "err", err)
			return nil
		}
		return err
	}
	defer set.close()
	// A configuration error of one pipeline stops them all.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	return eachJob(set.jobs, func(j *job) error {
		err := j.runner.Run(ctx, j.interval)
		if err != nil {
			cancel()
		}
		return err
	})
}
