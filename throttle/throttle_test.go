package throttle_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/throttletest"
	"github.com/keysetsync/keysetsync/throttle"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// take takes n slots that are free now; it fails the test if one is not.
func take(t *testing.T, l *throttle.Limiter, n int) []func(throttle.Outcome) {
	t.Helper()
	rs := make([]func(throttle.Outcome), n)
	for i := range rs {
		r, ok := throttle.TryAcquire(l)
		require.True(t, ok, "slot %d of %d not free (limit %d, in flight %d)", i+1, n, l.Limit(), throttle.InFlight(l))
		rs[i] = r
	}
	return rs
}

// await receives from c; it fails the test after a minute without (a bound on the wait for an
// event, so that a limiter that never wakes a waiter fails with a message, not a test timeout).
func await[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	select {
	case v := <-c:
		return v
	case <-timer.C:
		t.Fatalf("no %s after a minute", what)
		panic("unreachable")
	}
}

func releaseAll(rs []func(throttle.Outcome), o throttle.Outcome) {
	for _, r := range rs {
		r(o)
	}
}

// A step of a scenario: take Take slots (a window of requests in flight), then release Release
// of the slots held, oldest first, with Outcome; Limit is the limit after.
type step struct {
	Take    int
	Release int
	Outcome throttle.Outcome
	Limit   int
}

func TestLimitAIMD(t *testing.T) {
	over := throttle.Overloaded(0)
	for _, tc := range []struct {
		name  string
		max   int
		steps []step
	}{
		{"a burst of overloads from one window halves once", 8, []step{
			{Take: 8, Release: 8, Outcome: over, Limit: 4},
		}},
		{"the next window halves again", 8, []step{
			{Take: 8, Release: 8, Outcome: over, Limit: 4},
			{Take: 4, Release: 4, Outcome: over, Limit: 2},
			{Take: 2, Release: 2, Outcome: over, Limit: 1},
		}},
		{"never below 1", 3, []step{
			{Take: 3, Release: 1, Outcome: over, Limit: 1},
			{Take: 0, Release: 2, Outcome: over, Limit: 1},
			{Take: 1, Release: 1, Outcome: over, Limit: 1},
		}},
		{"overloads of requests sent before the decrease do not decrease again", 8, []step{
			{Take: 8, Release: 1, Outcome: over, Limit: 4},
			{Take: 0, Release: 7, Outcome: over, Limit: 4},
		}},
		{"grows by 1 after limit-many OKs", 8, []step{
			{Take: 8, Release: 8, Outcome: over, Limit: 4},
			{Take: 4, Release: 3, Outcome: throttle.OK, Limit: 4},
			{Take: 0, Release: 1, Outcome: throttle.OK, Limit: 5},
			{Take: 4, Release: 4, Outcome: throttle.OK, Limit: 5},
			{Take: 1, Release: 1, Outcome: throttle.OK, Limit: 6},
		}},
		{"OKs of requests sent before a decrease do not count", 8, []step{
			{Take: 8, Release: 1, Outcome: over, Limit: 4},
			{Take: 0, Release: 7, Outcome: throttle.OK, Limit: 4},
		}},
		{"an overload restarts the run of OKs", 8, []step{
			{Take: 8, Release: 8, Outcome: over, Limit: 4},
			{Take: 4, Release: 3, Outcome: throttle.OK, Limit: 4},
			{Take: 0, Release: 1, Outcome: over, Limit: 2},
			{Take: 2, Release: 1, Outcome: throttle.OK, Limit: 2},
			{Take: 0, Release: 1, Outcome: throttle.OK, Limit: 3},
		}},
		{"failures change nothing", 8, []step{
			{Take: 8, Release: 8, Outcome: over, Limit: 4},
			{Take: 4, Release: 3, Outcome: throttle.OK, Limit: 4},
			{Take: 0, Release: 1, Outcome: throttle.Failed, Limit: 4},
			{Take: 1, Release: 1, Outcome: throttle.OK, Limit: 5},
		}},
		{"never above Max", 2, []step{
			{Take: 2, Release: 2, Outcome: throttle.OK, Limit: 2},
			{Take: 2, Release: 2, Outcome: throttle.OK, Limit: 2},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := throttle.New(throttle.Config{Max: tc.max, Clock: throttletest.NewClock(t0)})
			require.Equal(t, tc.max, l.Limit())
			var held []func(throttle.Outcome)
			for i, s := range tc.steps {
				held = append(held, take(t, l, s.Take)...)
				releaseAll(held[:s.Release], s.Outcome)
				held = held[s.Release:]
				require.Equal(t, s.Limit, l.Limit(), "limit after step %d (%+v)", i+1, s)
			}
		})
	}
}

func TestLimitBoundsInFlight(t *testing.T) {
	l := throttle.New(throttle.Config{Max: 4, Clock: throttletest.NewClock(t0)})
	held := take(t, l, 4)
	_, ok := throttle.TryAcquire(l)
	require.False(t, ok, "a fifth slot under a limit of 4")

	// A blocked Acquire gets the slot a release frees.
	got := make(chan func(throttle.Outcome))
	go func() {
		r, err := l.Acquire(t.Context())
		assert.NoError(t, err)
		got <- r
	}()
	throttle.AwaitWaiting(t, l, 1)
	held[0](throttle.OK)
	r := await(t, got, "slot for the blocked Acquire after a release")
	assert.Equal(t, 4, throttle.InFlight(l))

	// After a decrease to 2, the 4 in flight must drain to 1 before one more goes.
	held[1](throttle.Overloaded(0))
	require.Equal(t, 2, l.Limit())
	for i, r := range []func(throttle.Outcome){held[2], held[3]} {
		_, ok := throttle.TryAcquire(l)
		require.False(t, ok, "a slot with %d in flight under a limit of 2", 3-i)
		r(throttle.OK)
	}
	_, ok = throttle.TryAcquire(l)
	require.True(t, ok, "no slot with 1 in flight under a limit of 2")
	r(throttle.OK)
}

func TestReleaseTwiceCountsOnce(t *testing.T) {
	l := throttle.New(throttle.Config{Max: 2, Clock: throttletest.NewClock(t0)})
	held := take(t, l, 2)
	held[0](throttle.OK)
	held[0](throttle.OK)
	held[0](throttle.Overloaded(time.Hour))
	assert.Equal(t, 1, throttle.InFlight(l), "a second release freed another slot")
	assert.Equal(t, 2, l.Limit(), "a second release with another outcome counted")
	_, ok := throttle.TryAcquire(l)
	assert.True(t, ok, "a second release paused the limiter")
}

// logLines returns a logger and the lines it has written.
func logLines() (*slog.Logger, func() []string) {
	var mu sync.Mutex
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), nil))
	return log, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Split(strings.TrimSpace(buf.String()), "\n")
	}
}

// pausesLogged counts the pauses a limiter logged: one per pause, however many Retry-Afters.
func pausesLogged(lines []string) int {
	n := 0
	for _, line := range lines {
		if strings.Contains(line, "pausing all requests") {
			n++
		}
	}
	return n
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestRetryAfterPausesEveryAcquire(t *testing.T) {
	for _, tc := range []struct {
		name       string
		retryAfter []time.Duration // of the overloads of a burst of requests in flight
		maxPause   time.Duration
		pause      time.Duration // how long Acquire is paused
	}{
		{"one", []time.Duration{2 * time.Second}, 0, 2 * time.Second},
		{"a burst: the longest wins", []time.Duration{time.Second, 3 * time.Second, 2 * time.Second}, 0, 3 * time.Second},
		{"capped", []time.Duration{time.Hour}, 0, throttle.DefaultMaxRetryAfter},
		{"capped by the config", []time.Duration{time.Hour}, 10 * time.Second, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const waiters = 3
			clock := throttletest.NewClock(t0)
			log, lines := logLines()
			l := throttle.New(throttle.Config{Max: 16, MaxRetryAfter: tc.maxPause, Logger: log, Clock: clock})
			held := take(t, l, len(tc.retryAfter))
			for i, ra := range tc.retryAfter {
				held[i](throttle.Overloaded(ra))
			}
			acquired := make(chan time.Time, waiters)
			early := make(chan struct{}) // closed by a slot handed out during the pause
			var once sync.Once
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			t.Cleanup(func() { cancel(); wg.Wait() })
			for range waiters {
				wg.Go(func() {
					r, err := l.Acquire(ctx)
					if err != nil { // the test failed and is ending
						return
					}
					at := clock.Now()
					if at.Before(t0.Add(tc.pause)) {
						once.Do(func() { close(early) })
					}
					acquired <- at
					r(throttle.OK)
				})
			}
			// Every waiter is blocked on the pause, then stays so until it ends.
			for _, d := range []time.Duration{0, tc.pause - time.Millisecond} {
				clock.Advance(d)
				if !clock.AwaitTimersOr(t, waiters, early) {
					t.Fatalf("a slot handed out at %s, during a pause of %s", (<-acquired).Sub(t0), tc.pause)
				}
			}
			clock.Advance(time.Millisecond)
			require.Zero(t, clock.Timers(), "waiters still paused at the end of the pause")
			for range waiters {
				assert.Equal(t, tc.pause, await(t, acquired, "slot after the pause").Sub(t0))
			}
			assert.Equal(t, 1, pausesLogged(lines()), "pause log lines for one burst:\n%s", strings.Join(lines(), "\n"))
		})
	}
}

func TestAcquireHonoursCtx(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(l *throttle.Limiter) // leaves l with no free slot now
		timed bool                      // the waiter waits on a timer
	}{
		{"blocked on the limit", func(l *throttle.Limiter) { throttle.TryAcquire(l) }, false},
		{"blocked on a pause", func(l *throttle.Limiter) {
			r, _ := throttle.TryAcquire(l)
			r(throttle.Overloaded(time.Minute))
		}, true},
		{"blocked on the rate", func(l *throttle.Limiter) { r, _ := throttle.TryAcquire(l); r(throttle.OK) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := throttletest.NewClock(t0)
			l := throttle.New(throttle.Config{Max: 1, RequestsPerSecond: 0.1, Clock: clock})
			tc.setup(l)
			ctx, cancel := context.WithCancel(t.Context())
			errc := make(chan error)
			go func() {
				r, err := l.Acquire(ctx)
				if r != nil {
					r(throttle.OK)
				}
				errc <- err
			}()
			throttle.AwaitWaiting(t, l, 1)
			if tc.timed {
				clock.AwaitTimers(t, 1)
			}
			cancel()
			err := await(t, errc, "return of Acquire after its ctx was cancelled")
			require.ErrorIs(t, err, context.Canceled)
			assert.Contains(t, err.Error(), "throttle: waiting for a request slot")
			assert.Zero(t, clock.Timers(), "the waiter left a timer behind")
		})
	}
}

// TestRequestsPerSecondCeiling counts, in fake time, the slots handed out to workers that
// release each at once: no more than the ceiling, evenly spaced.
func TestRequestsPerSecondCeiling(t *testing.T) {
	for _, tc := range []struct {
		workers int
		rps     float64
	}{
		{1, 10},
		{4, 10},
		{8, 2.5},
	} {
		t.Run(fmt.Sprintf("%d workers at %g per second", tc.workers, tc.rps), func(t *testing.T) {
			const (
				span = 4 * time.Second
				step = 10 * time.Millisecond
			)
			clock := throttletest.NewClock(t0)
			l := throttle.New(throttle.Config{Max: 100, RequestsPerSecond: tc.rps, Clock: clock})
			ctx, cancel := context.WithCancel(t.Context())
			var mu sync.Mutex
			var at []time.Time
			limit := 4 * int(span.Seconds()*tc.rps) // bounds a limiter that lets everything through
			done := make(chan struct{})
			var wg sync.WaitGroup
			for range tc.workers {
				wg.Go(func() {
					for {
						r, err := l.Acquire(ctx)
						if err != nil {
							return
						}
						mu.Lock()
						at = append(at, clock.Now())
						n := len(at)
						mu.Unlock()
						r(throttle.OK)
						if n >= limit {
							return
						}
					}
				})
			}
			go func() { wg.Wait(); close(done) }()
			for elapsed := time.Duration(0); elapsed < span; elapsed += step {
				if !clock.AwaitTimersOr(t, tc.workers, done) {
					break
				}
				clock.Advance(step)
			}
			cancel()
			<-done
			interval := time.Duration(float64(time.Second) / tc.rps)
			// One at 0, then one per interval, up to span excluded: the ceiling, and since a
			// worker always waits, also what a limiter that is not slower than it hands out.
			// The slot at span itself may be handed out before the workers stop.
			inSpan := 0
			for _, a := range at {
				if a.Before(t0.Add(span)) {
					inSpan++
				}
			}
			assert.Equal(t, int(span/interval), inSpan, "slots in %s at %g/s", span, tc.rps)
			for i := 1; i < len(at); i++ {
				require.GreaterOrEqual(t, at[i].Sub(at[i-1]), interval, "slots %d and %d", i, i+1)
			}
		})
	}
}

func TestRequestsPerSecondExtremes(t *testing.T) {
	for _, tc := range []struct {
		rps        float64
		secondFree bool // a second slot right after the first
	}{
		{1e-15, false}, // an interval beyond time.Duration's range is still an interval
		{1e12, true},   // below a nanosecond
		{0, true},      // no ceiling
	} {
		clock := throttletest.NewClock(t0)
		l := throttle.New(throttle.Config{Max: 2, RequestsPerSecond: tc.rps, Clock: clock})
		take(t, l, 1)
		clock.Advance(time.Nanosecond)
		_, ok := throttle.TryAcquire(l)
		assert.Equal(t, tc.secondFree, ok, "second slot at %g per second", tc.rps)
	}
}

// TestConcurrentUse hammers a limiter with random outcomes under the race detector: slots held
// never exceed Max, and every one is given back.
func TestConcurrentUse(t *testing.T) {
	const max = 6
	l := throttle.New(throttle.Config{Max: max, MaxRetryAfter: time.Millisecond})
	var inFlight, peak atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 300 {
				r, err := l.Acquire(t.Context())
				if !assert.NoError(t, err) {
					return
				}
				n := inFlight.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				inFlight.Add(-1)
				switch rng.IntN(10) {
				case 0:
					r(throttle.Overloaded(time.Duration(rng.IntN(2)) * time.Microsecond))
				case 1:
					r(throttle.Failed)
				default:
					r(throttle.OK)
				}
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, peak.Load(), int64(max))
	assert.Zero(t, throttle.InFlight(l))
	assert.GreaterOrEqual(t, l.Limit(), 1)
	assert.LessOrEqual(t, l.Limit(), max)
}
