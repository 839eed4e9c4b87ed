package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/retry"
)

// attempt is what one call of Do's fn does: run for took (of the bubble's fake time), then
// return progressed and err.
type attempt struct {
	took       time.Duration
	progressed bool
	err        error
}

var (
	errDown = fmt.Errorf("load cursor: %w", io.EOF) // retryable by IsRetryable
	errBad  = retry.Permanent("bad record")
	errOdd  = errors.New("an error only the caller's classifier knows")
)

// TestDoKeepsTryingForItsWholeBudget runs Do in a synctest bubble, whose clock only moves when
// every goroutine waits, so the times below are exact and nothing sleeps for real.
func TestDoKeepsTryingForItsWholeBudget(t *testing.T) {
	const budget = 5 * time.Minute
	cases := []struct {
		name string
		// script of attempts; after the last, every attempt fails like it without taking time
		script []attempt
		// or, if set, an attempt succeeds once this long has passed since the first call
		okAfter   time.Duration
		budget    time.Duration // 0: budget
		noBudget  bool          // a Policy.Budget of 0
		retryable func(error) bool
		wantErr   error         // nil: success
		wantMsg   string        // in the error, "" not checked
		wantCall  int           // calls of fn, 0: not checked
		wantEnd   time.Duration // fake time Do returned at, 0: not checked
	}{
		{name: "the last attempt falls at the end of the budget", okAfter: budget, wantEnd: budget},
		{name: "an operation that fails after running longer than the budget is retried",
			script: []attempt{{took: 20 * time.Minute, err: errDown}, {}}, wantCall: 2},
		{name: "a failed attempt that made progress starts a new budget",
			script: []attempt{{err: errDown}, {took: 4 * time.Minute, progressed: true, err: errDown}, {took: 4 * time.Minute, progressed: true, err: errDown}, {}}, wantCall: 4},
		{name: "failures without progress stop when the budget is spent, counted from the first failure",
			script: []attempt{{took: time.Hour, err: errDown}}, wantErr: errDown, wantMsg: "sync pass still failing after 5m0s of retries", wantEnd: time.Hour + budget},
		{name: "an error that is not retryable ends at once",
			script: []attempt{{err: errBad}}, wantErr: errBad, wantCall: 1},
		{name: "no budget: the first error, as it is",
			script: []attempt{{err: errDown}}, noBudget: true, wantErr: errDown, wantCall: 1},
		{name: "the caller's classifier decides",
			script: []attempt{{err: errOdd}, {err: errOdd}, {}}, retryable: func(err error) bool { return errors.Is(err, errOdd) }, wantCall: 3},
		{name: "without the caller's classifier, IsRetryable decides",
			script: []attempt{{err: errOdd}}, wantErr: errOdd, wantCall: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := retry.Policy{Budget: budget, Retryable: c.retryable, What: "sync pass"}
				if c.noBudget {
					p.Budget = 0
				}
				start := time.Now()
				calls := 0
				err := retry.Do(context.Background(), p, func() (bool, error) {
					calls++
					if c.okAfter > 0 {
						if time.Since(start) >= c.okAfter {
							return false, nil
						}
						return false, errDown
					}
					a := c.script[min(calls, len(c.script))-1]
					if calls <= len(c.script) {
						time.Sleep(a.took)
					}
					return a.progressed, a.err
				})
				if c.wantErr == nil {
					require.NoError(t, err)
				} else {
					require.ErrorIs(t, err, c.wantErr)
				}
				if c.wantMsg != "" {
					assert.ErrorContains(t, err, c.wantMsg)
				} else if err != nil {
					assert.Equal(t, c.wantErr.Error(), err.Error(), "returned as it is")
				}
				if c.wantCall > 0 {
					assert.Equal(t, c.wantCall, calls)
				}
				if c.wantEnd > 0 {
					assert.Equal(t, c.wantEnd, time.Since(start))
				}
			})
		})
	}
}

// TestDoBacksOff: the waits double from 500 ms to at most 30 s, each drawn from the upper half
// of its delay, so that callers failing together spread out.
func TestDoBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var at []time.Time
		err := retry.Do(t.Context(), retry.Policy{Budget: 10 * time.Minute}, func() (bool, error) {
			at = append(at, time.Now())
			return false, errDown
		})
		require.ErrorIs(t, err, errDown)
		delay := 500 * time.Millisecond
		for i := 1; i < len(at)-1; i++ { // the last wait is cut to the budget
			wait := at[i].Sub(at[i-1])
			assert.True(t, wait >= delay/2 && wait <= delay, "wait %d: %s, want %s..%s", i, wait, delay/2, delay)
			delay = min(2*delay, 30*time.Second)
		}
		assert.Equal(t, 30*time.Second, delay, "reached the ceiling")
		assert.Equal(t, 10*time.Minute, at[len(at)-1].Sub(at[0]), "the last attempt at the end of the budget")
	})
}

// TestDoStopsWhenTheContextEnds: a wait ends with ctx, and Do returns the last error.
func TestDoStopsWhenTheContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		calls := 0
		done := make(chan error)
		go func() {
			done <- retry.Do(ctx, retry.Policy{Budget: time.Hour}, func() (bool, error) {
				calls++
				return false, errDown
			})
		}()
		synctest.Wait() // Do waits after its first failure
		cancel()
		require.ErrorIs(t, <-done, errDown)
		assert.Equal(t, 1, calls)
	})
}
