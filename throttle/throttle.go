// Package throttle bounds the requests many workers send to one API at once, and adapts that
// bound to what the API answers: additive increase, multiplicative decrease (AIMD, as TCP does
// with its congestion window), a shared pause when the API says Retry-After, and an optional
// ceiling on requests per second.
//
// Every request goes through Acquire, and its release reports how the request went:
//
//	release, err := l.Acquire(ctx)
//	if err != nil {
//		return err // ctx ended while waiting
//	}
//	page, err := fetch(ctx)
//	release(source.OutcomeOf(err))
//
// The limiter starts no goroutine and holds no resource between calls: a Limiter that is no
// longer used needs no closing.
package throttle

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxRetryAfter caps the pause of a Retry-After: an API that asks for an hour (or a
// broken date) does not stall a backfill for that long, it is asked again after five minutes.
const DefaultMaxRetryAfter = 5 * time.Minute

// Config configures a Limiter.
type Config struct {
	// Max is the most requests in flight at once, and where the limit starts: it is decreased
	// when the API is overloaded and grows back to Max, never above. Values below 1 mean 1.
	Max int
	// RequestsPerSecond, when > 0, is a ceiling on the rate at which Acquire hands out slots,
	// evenly spaced (a token bucket of burst 1), whatever the concurrency limit. 0: no ceiling.
	RequestsPerSecond float64
	// MaxRetryAfter caps the pause a Retry-After causes (0: DefaultMaxRetryAfter).
	MaxRetryAfter time.Duration
	// Logger gets a line when the limit is lowered or a pause begins (nil: nothing is logged).
	Logger *slog.Logger
	// Clock gives the time and the timers Acquire waits on (nil: the real clock). Tests pass a
	// fake one to move time without sleeping.
	Clock Clock
}

// Clock is the time source of a Limiter.
type Clock interface {
	Now() time.Time
	// NewTimer returns a channel that receives once d has passed, and a function that stops
	// the timer (releasing it; the channel then never receives).
	NewTimer(d time.Duration) (c <-chan time.Time, stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// Outcome is how a request went, as far as the API's load is concerned. The zero Outcome is
// Failed.
type Outcome struct {
	kind       outcomeKind
	retryAfter time.Duration
}

type outcomeKind uint8

const (
	failed outcomeKind = iota
	ok
	overloaded
)

var (
	// OK: the API answered the request. A run of them raises the limit.
	OK = Outcome{kind: ok}
	// Failed: the request failed in a way that says nothing about the API's load (a 4xx, a
	// page that does not parse, a network failure, a cancelled request). The limit stays.
	Failed = Outcome{}
)

// Overloaded: the API refused the request because of load (429, 503 or another 5xx; the
// caller decides which answers mean that). The limit halves, once per window (see Limiter), and
// a retryAfter > 0 (the API's Retry-After) pauses every Acquire until it has passed.
func Overloaded(retryAfter time.Duration) Outcome {
	return Outcome{kind: overloaded, retryAfter: max(retryAfter, 0)}
}

// IsOverloaded reports whether o is an Overloaded outcome, and its Retry-After.
func (o Outcome) IsOverloaded() (retryAfter time.Duration, is bool) {
	return o.retryAfter, o.kind == overloaded
}

func (o Outcome) String() string {
	switch o.kind {
	case ok:
		return "ok"
	case overloaded:
		if o.retryAfter > 0 {
			return fmt.Sprintf("overloaded (retry after %s)", o.retryAfter)
		}
		return "overloaded"
	default:
		return "failed"
	}
}

// Limiter hands out slots for requests to one API. Its contract:
//   - At most Limit() requests hold a slot at once; Limit starts at Config.Max.
//   - Decrease: an Overloaded release halves the limit (rounding down, not below 1), but only
//     if its request was acquired after the last decrease. The requests in flight when the API
//     began refusing all see the same overload; they lower the limit once, not once each (TCP
//     decreases once per round trip for the same reason), so a burst of N 429s halves it once.
//   - Increase: once as many OK releases as the limit have come back from requests acquired
//     since the last decrease, the limit grows by 1, up to Max. OKs of requests sent before a
//     decrease do not count: they say the old limit was fine just before it was not.
//   - Failed releases free their slot and change nothing else.
//   - Retry-After: an Overloaded release with a retryAfter > 0 pauses every Acquire, of every
//     worker, until that long after the release (capped at Config.MaxRetryAfter); later ones
//     can extend the pause, never shorten it. The pause is logged once, when it begins.
//   - RequestsPerSecond > 0: slots are handed out no faster than that, evenly spaced.
//
// A Limiter is safe for concurrent use.
type Limiter struct {
	max      int
	maxPause time.Duration
	interval time.Duration // between two slots under the rate ceiling; 0: none
	log      *slog.Logger
	clock    Clock

	mu         sync.Mutex
	limit      int
	inFlight   int
	waiting    int       // Acquires in the loop, for tests
	onWait     func()    // test hook: called under mu each time an Acquire blocks
	epoch      uint64    // bumped by each decrease: a release of an older epoch cannot decrease
	successes  int       // OKs of the current epoch since the limit last changed
	pauseUntil time.Time // no slot is handed out before it
	nextSlot   time.Time // the earliest time the rate ceiling allows the next slot
	changed    chan struct{}
}

// New returns a Limiter for cfg.
func New(cfg Config) *Limiter {
	l := &Limiter{
		max:      max(cfg.Max, 1),
		maxPause: cfg.MaxRetryAfter,
		log:      cfg.Logger,
		clock:    cfg.Clock,
		changed:  make(chan struct{}),
	}
	if l.maxPause <= 0 {
		l.maxPause = DefaultMaxRetryAfter
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.clock == nil {
		l.clock = realClock{}
	}
	if cfg.RequestsPerSecond > 0 {
		// Clamped both ways: a tiny rate must not overflow into a negative (no) interval.
		l.interval = time.Duration(min(max(float64(time.Second)/cfg.RequestsPerSecond, 1), math.MaxInt64/2))
	}
	l.limit = l.max
	return l
}

// Limit returns the current concurrency limit, for metrics.
func (l *Limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// Acquire blocks until a request may be sent: no pause is on, fewer than Limit() requests are
// in flight, and the rate ceiling allows one more. It returns the function to call, once, when
// the request is done, with its Outcome; calls after the first do nothing. Every slot must be
// released, whatever happened to its request (Failed when nothing better is known), or it stays
// held. If ctx ends first, Acquire returns an error wrapping ctx.Err() and holds nothing.
func (l *Limiter) Acquire(ctx context.Context) (release func(Outcome), err error) {
	l.mu.Lock()
	l.waiting++
	for {
		if err := ctx.Err(); err != nil {
			l.waiting--
			l.mu.Unlock()
			return nil, fmt.Errorf("throttle: waiting for a request slot: %w", err)
		}
		now := l.clock.Now()
		release, until := l.take(now)
		if release != nil {
			l.waiting--
			l.mu.Unlock()
			return release, nil
		}
		changed := l.changed
		if l.onWait != nil {
			l.onWait()
		}
		l.mu.Unlock()
		l.wait(ctx, changed, until.Sub(now), !until.IsZero())
		l.mu.Lock()
	}
}

// take hands out a slot if one may be now; otherwise it returns when to look again (zero:
// when a slot is released). l.mu is held.
func (l *Limiter) take(now time.Time) (release func(Outcome), until time.Time) {
	switch {
	case now.Before(l.pauseUntil):
		return nil, l.pauseUntil
	case l.inFlight >= l.limit:
		return nil, time.Time{}
	case l.interval > 0 && now.Before(l.nextSlot):
		return nil, l.nextSlot
	}
	l.inFlight++
	if l.interval > 0 {
		l.nextSlot = now.Add(l.interval)
	}
	epoch := l.epoch
	var done atomic.Bool
	return func(o Outcome) {
		if done.CompareAndSwap(false, true) {
			l.release(epoch, o)
		}
	}, time.Time{}
}

// wait returns when ctx ends, changed is closed, or (if timed) d has passed.
func (l *Limiter) wait(ctx context.Context, changed <-chan struct{}, d time.Duration, timed bool) {
	var fire <-chan time.Time
	if timed {
		c, stop := l.clock.NewTimer(d)
		defer stop()
		fire = c
	}
	select {
	case <-ctx.Done():
	case <-changed:
	case <-fire:
	}
}

func (l *Limiter) release(epoch uint64, o Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	switch o.kind {
	case ok:
		if epoch != l.epoch || l.limit >= l.max {
			break
		}
		l.successes++
		if l.successes >= l.limit {
			l.limit++
			l.successes = 0
			l.log.Debug("api keeps up: raising request concurrency", "to", l.limit)
		}
	case overloaded:
		if epoch == l.epoch {
			from := l.limit
			l.limit = max(l.limit/2, 1)
			l.epoch++
			l.successes = 0
			if l.limit != from {
				l.log.Warn("api overloaded: lowering request concurrency", "from", from, "to", l.limit)
			}
		}
		if o.retryAfter > 0 {
			now := l.clock.Now()
			until := now.Add(min(o.retryAfter, l.maxPause))
			if until.After(l.pauseUntil) {
				if !now.Before(l.pauseUntil) {
					l.log.Warn("api asked to retry later: pausing all requests", "retry_after", o.retryAfter, "pause", until.Sub(now))
				}
				l.pauseUntil = until
			}
		}
	}
	// A slot is free (and the limit may have grown): wake the waiters to look again.
	close(l.changed)
	l.changed = make(chan struct{})
}
