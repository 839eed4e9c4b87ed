package throttle

import (
	"testing"
	"time"
)

// AwaitWaiting returns once at least n Acquires of l are blocked, woken each time one blocks;
// it fails the test after a minute without it.
func AwaitWaiting(t testing.TB, l *Limiter, n int) {
	t.Helper()
	blocked := make(chan struct{}, 1)
	l.mu.Lock()
	l.onWait = func() {
		select {
		case blocked <- struct{}{}:
		default:
		}
	}
	l.mu.Unlock()
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		waiting := l.waiting
		l.mu.Unlock()
		if waiting >= n {
			return
		}
		select {
		case <-blocked:
		case <-deadline.C:
			t.Fatalf("%d Acquire(s) blocked after a minute, want %d", waiting, n)
		}
	}
}

// InFlight returns how many slots of l are held.
func InFlight(l *Limiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight
}

// TryAcquire takes a slot of l if one is free now, without blocking.
func TryAcquire(l *Limiter) (release func(Outcome), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	release, _ = l.take(l.clock.Now())
	return release, release != nil
}
