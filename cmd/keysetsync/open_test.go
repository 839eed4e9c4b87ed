package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Pipelines open a few at a time: one after the other, 1,000 new ones waited 60 to 90 s on the
// broker before their first pass.
func TestPipelinesOpenAFewAtATime(t *testing.T) {
	var running, most atomic.Int32
	both := make(chan struct{})
	var once sync.Once
	err := boundedFirstError(t.Context(), 5, 2, func(ctx context.Context, i int) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		if n == 2 {
			once.Do(func() { close(both) })
		}
		if i > 1 {
			return nil
		}
		// The first two wait for each other: opened one after the other, neither gets there.
		select {
		case <-both:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("the first two opens did not run at once")
		}
	})
	require.NoError(t, err)
	assert.EqualValues(t, 2, most.Load(), "never more than the bound at once")
}

// The first open to fail is the error, and no pipeline starts opening after it.
func TestOpenStopsAtTheFirstFailure(t *testing.T) {
	boom := errors.New("boom")
	var started atomic.Int32
	err := boundedFirstError(t.Context(), 10, 2, func(ctx context.Context, i int) error {
		started.Add(1)
		if i == 0 {
			return boom
		}
		<-ctx.Done() // the second waits until the first's failure cancels it
		return ctx.Err()
	})
	require.ErrorIs(t, err, boom)
	assert.EqualValues(t, 2, started.Load())
}
