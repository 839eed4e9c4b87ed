package retry

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// The default backoff of Do: doubling from firstDelay up to maxDelay, each wait drawn from the
// upper half of the current delay so that many callers failing together do not retry in step.
const (
	firstDelay = 500 * time.Millisecond
	maxDelay   = 30 * time.Second
)

// Policy says what Do retries and for how long.
type Policy struct {
	// Budget is how long an operation is retried from its first failure (see Do); 0: not at all,
	// the first error is returned as it is (unless Attempts is set); negative: no time limit,
	// until ctx ends or Attempts.
	Budget time.Duration
	// Attempts, when positive, bounds the calls of fn; the last error is returned as it is.
	Attempts int
	// FirstDelay and MaxDelay bound the doubling backoff (defaults 500 ms and 30 s): a protocol
	// exchange that heals in milliseconds (a coordinator moving, a leader elected) starts lower
	// than a pass that waits for a broker to restart.
	FirstDelay, MaxDelay time.Duration
	// Retryable decides whether an error may heal (nil: IsRetryable). Callers whose errors need
	// classifying first (Kafka's codes) pass their own.
	Retryable func(error) bool
	// What names the operation in the log and in the error once the budget is spent.
	What string
	// Log gets a warning per retry (nil: nothing is logged).
	Log *slog.Logger
	// OnRetry, when set, is called before each wait with the error and the attempt that failed.
	OnRetry func(err error, attempt int)
}

// Do calls fn until it succeeds, fails with an error that is not retryable, ctx ends, or it has
// kept failing for p.Budget (or p.Attempts calls); backoff doubles from p.FirstDelay to
// p.MaxDelay (500 ms to 30 s by default), jittered.
//   - The budget starts at the first failure, not at the first call: an operation that runs
//     for an hour and then meets a broker restart is retried for the whole budget.
//   - An attempt that failed after making progress (fn says so, e.g. a pass that committed
//     batches) starts the budget again, from its failure, with the backoff back at 500 ms.
//   - The last wait is cut short so that one attempt falls at the end of the budget: a budget
//     of 60 s keeps trying for 60 s, not until a doubled wait would overshoot it.
//
// It returns fn's last error, wrapped to say the budget was spent when it was. Package source's
// per-page retry is another policy on purpose (a count of attempts, and the API's Retry-After).
func Do(ctx context.Context, p Policy, fn func() (progressed bool, err error)) error {
	retryable := p.Retryable
	if retryable == nil {
		retryable = IsRetryable
	}
	first, most := p.FirstDelay, p.MaxDelay
	if first <= 0 {
		first = firstDelay
	}
	if most <= 0 {
		most = maxDelay
	}
	var deadline time.Time
	delay := first
	for attempt := 1; ; attempt++ {
		progressed, err := fn()
		if err == nil || ctx.Err() != nil || !retryable(err) || attempt == p.Attempts {
			return err
		}
		if p.Budget == 0 && p.Attempts <= 0 {
			return err
		}
		if deadline.IsZero() || progressed {
			deadline, delay = time.Now().Add(p.Budget), first
		}
		wait := delay/2 + rand.N(delay/2+1)
		if p.Budget > 0 {
			left := time.Until(deadline)
			if left <= 0 {
				return fmt.Errorf("%s still failing after %s of retries: %w", p.What, p.Budget, err)
			}
			wait = min(wait, left)
		}
		if p.Log != nil {
			p.Log.Warn(p.What+" failed, retrying", "attempt", attempt, "wait", wait.Round(time.Millisecond), "err", err)
		}
		if p.OnRetry != nil {
			p.OnRetry(err, attempt)
		}
		if Sleep(ctx, wait) != nil {
			return err
		}
		delay = min(2*delay, most)
	}
}

// Sleep waits for d, or returns ctx's error when ctx ends first: the one backoff wait of every
// retry loop.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
