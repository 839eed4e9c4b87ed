package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keysetsync/keysetsync/source"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// attempt is what one call of retry's fn does: run for took (of the bubble's fake time), then
// return progressed and err.
type attempt struct {
	took       time.Duration
	progressed bool
	err        error
}

var errDown = fmt.Errorf("load cursor: %w", io.EOF) // retryable

// TestRetryKeepsTryingForItsWholeBudget runs retry in a synctest bubble, whose clock only
// moves when every goroutine waits, so the times below are exact and nothing sleeps for real.
func TestRetryKeepsTryingForItsWholeBudget(t *testing.T) {
	const budget = 5 * time.Minute
	cases := []struct {
		name string
		// script of attempts; after the last, every attempt fails like it without taking time
		script []attempt
		// or, if set, an attempt succeeds once this long has passed since the first call
		okAfter  time.Duration
		wantErr  bool
		wantCall int           // calls of fn, 0: not checked
		wantEnd  time.Duration // fake time retry returned at
	}{
		{name: "the last attempt falls at the end of the budget", okAfter: budget, wantEnd: budget},
		{name: "a pass that fails after running longer than the budget is retried",
			script: []attempt{{took: 20 * time.Minute, err: errDown}, {}}, wantCall: 2},
		{name: "a failed pass that committed batches starts a new budget",
			script: []attempt{{err: errDown}, {took: 4 * time.Minute, progressed: true, err: errDown}, {took: 4 * time.Minute, progressed: true, err: errDown}, {}}, wantCall: 4},
		{name: "failures without progress stop when the budget is spent, counted from the first failure",
			script: []attempt{{took: time.Hour, err: errDown}}, wantErr: true, wantEnd: time.Hour + budget},
		{name: "an error that is not retryable ends at once",
			script: []attempt{{err: fmt.Errorf("%w: bad", source.ErrInvalidRecord)}}, wantErr: true, wantCall: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				calls := 0
				err := retry(context.Background(), budget, slog.New(slog.DiscardHandler), "sync pass", func() (bool, error) {
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
				if c.wantErr {
					require.Error(t, err)
				} else {
					require.NoError(t, err)
				}
				if c.wantCall > 0 {
					assert.Equal(t, c.wantCall, calls)
				}
				if c.wantEnd > 0 {
					assert.Equal(t, c.wantEnd, time.Since(start))
				}
				if c.wantErr && errors.Is(err, errDown) {
					assert.ErrorContains(t, err, "still failing after 5m0s of retries")
				}
			})
		})
	}
}
