// Package throttletest holds a fake throttle.Clock: time moves only when a test advances it,
// and a test can await the timers that goroutines under test started, instead of sleeping.
package throttletest

import (
	"sync"
	"testing"
	"time"
)

// Clock is a throttle.Clock whose time moves only by Advance.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  map[*timer]struct{}
	changed chan struct{} // closed and replaced when a timer starts or stops
}

type timer struct {
	at time.Time
	c  chan time.Time
}

// NewClock returns a Clock at now.
func NewClock(now time.Time) *Clock {
	return &Clock{now: now, timers: map[*timer]struct{}{}, changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer implements throttle.Clock: the channel receives once Advance reaches now+d.
func (c *Clock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{at: c.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		t.c <- c.now
		return t.c, func() bool { return false }
	}
	c.timers[t] = struct{}{}
	c.signal()
	return t.c, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, pending := c.timers[t]
		delete(c.timers, t)
		c.signal()
		return pending
	}
}

// Advance moves the clock by d and fires every timer due by then.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		if !t.at.After(c.now) {
			t.c <- c.now
			delete(c.timers, t)
		}
	}
	c.signal()
}

// Timers returns how many timers are pending.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// AwaitTimers returns once at least n timers are pending, woken by each timer started or
// stopped; it fails the test after a minute without it (a bound, not a stand-in for the event).
func (c *Clock) AwaitTimers(t testing.TB, n int) {
	t.Helper()
	c.AwaitTimersOr(t, n, nil)
}

func (c *Clock) signal() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// AwaitTimersOr is AwaitTimers that also returns, with false, once done is closed: for
// goroutines under test that may finish instead of blocking.
func (c *Clock) AwaitTimersOr(t testing.TB, n int, done <-chan struct{}) bool {
	t.Helper()
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		pending, changed := len(c.timers), c.changed
		c.mu.Unlock()
		if pending >= n {
			return true
		}
		select {
		case <-changed:
		case <-done:
			return false
		case <-deadline.C:
			t.Fatalf("throttletest: %d timer(s) pending after a minute, want %d", pending, n)
		}
	}
}
