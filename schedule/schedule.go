// Package schedule bounds how many passes of a process work at once. A pass takes a slot of a
// Limiter before it works and gives it back when it ends; passes that find every slot taken wait
// in the order they asked (first come, first served), so no pipeline starves however many others
// keep coming due. A slot is for work that costs the process CPU and memory (decoding pages,
// encoding records, producing); a pass gives it back while it only waits on something outside
// (Outside: an API request, a backoff between requests), so a slow, stalled or failing API never
// keeps the other pipelines waiting.
//
// Slots bound memory too, which is what lets one process run a thousand pipelines: a pass
// counts as working, and keeps its slot while it waits on its API, as long as any of its
// goroutines holds data it pinned (Pin: a batch produced and not yet acknowledged). It gives the
// slot away at the last Unpin. Pins are held only for waits that end on their own (Kafka's
// acknowledgements, bounded by the write timeout), never across a wait on the API, so a stalled
// API still holds no slot once its pass's batches are acknowledged.
package schedule

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// Limiter hands out n slots in first-come, first-served order. It is safe for concurrent use.
type Limiter struct {
	size int

	mu    sync.Mutex
	free  int
	queue list.List // of *waiter, the earliest at the front
}

// waiter is one Acquire waiting for a slot; ready is closed when the slot is handed to it.
type waiter struct{ ready chan struct{} }

// NewLimiter returns a Limiter of n slots (at least 1).
func NewLimiter(n int) *Limiter {
	n = max(n, 1)
	return &Limiter{size: n, free: n}
}

// Size is the number of slots.
func (l *Limiter) Size() int { return l.size }

// Waiting is the number of acquires waiting for a slot now.
func (l *Limiter) Waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.queue.Len()
}

// acquire waits for a slot, behind every acquire that asked before it, until ctx ends (then it
// returns ctx's error and holds nothing).
func (l *Limiter) acquire(ctx context.Context) error {
	l.mu.Lock()
	// release hands a slot straight to the earliest waiter, so a slot is free only while none
	// waits: a newcomer never overtakes them.
	if l.free > 0 {
		l.free--
		l.mu.Unlock()
		return nil
	}
	w := &waiter{ready: make(chan struct{})}
	e := l.queue.PushBack(w)
	l.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		select {
		case <-w.ready:
			// Handed the slot while giving up: pass it on.
			l.mu.Unlock()
			l.release()
		default:
			l.queue.Remove(e)
			l.mu.Unlock()
		}
		return ctx.Err()
	}
}

// release gives a slot back: straight to the earliest waiter, or to the free ones.
func (l *Limiter) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if front := l.queue.Front(); front != nil {
		l.queue.Remove(front)
		close(front.Value.(*waiter).ready)
		return
	}
	l.free++
}

// Slot is one pass's claim on a Limiter, held from Hold until Release except while the pass is
// Outside.
type Slot struct {
	l      *Limiter
	waited func(time.Duration)

	mu      sync.Mutex
	held    bool
	done    bool // Released: a slot got back later goes straight back
	outside int  // goroutines of the pass in Outside
	pins    int  // data of the pass pinned to the slot (Pin): Outside keeps the slot while any
	// taking says a goroutine of the pass is getting the slot back: another that returns from
	// Outside meanwhile goes on, rather than take a second slot the pass would never give back.
	taking bool
}

type slotKey struct{}

// Hold waits for a slot of l (first come, first served) and returns it with ctx carrying it, for
// Outside. waited, when set, is told how long each wait for the slot took, this one and those
// after Outside. A nil Limiter limits nothing: the Slot holds nothing.
func (l *Limiter) Hold(ctx context.Context, waited func(time.Duration)) (context.Context, *Slot, error) {
	s := &Slot{l: l, waited: waited}
	if l == nil {
		return ctx, s, nil
	}
	if err := s.take(ctx); err != nil {
		return ctx, s, err
	}
	return context.WithValue(ctx, slotKey{}, s), s, nil
}

func (s *Slot) take(ctx context.Context) error {
	start := time.Now()
	if err := s.l.acquire(ctx); err != nil {
		return err
	}
	if s.waited != nil {
		s.waited(time.Since(start))
	}
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		s.l.release()
		return nil
	}
	s.held = true
	s.mu.Unlock()
	return nil
}

// Release gives the slot back for good; the pass is over. Calling it again does nothing.
func (s *Slot) Release() {
	if s.l == nil {
		return
	}
	s.mu.Lock()
	held := s.held
	s.held, s.done = false, true
	s.mu.Unlock()
	if held {
		s.l.release()
	}
}

// Outside runs fn, which only waits on something outside the process (a request to an API, a
// backoff), without the slot ctx carries: the slot goes to the next waiting pass, and when fn
// returns the pass waits for a slot again, behind the passes that asked meanwhile. While the pass
// has data pinned (Pin) it keeps the slot until the last Unpin. Goroutines of one pass (a
// parallel backfill's workers) share its one slot: it is lent while any of them is Outside, and
// taken back once, by the last to return; one that returns while another takes it back goes on.
// Without a slot in ctx it just runs fn. If ctx ends while waiting to get the slot back, fn's error, or else ctx's, is
// returned.
func Outside(ctx context.Context, fn func() error) error {
	s, _ := ctx.Value(slotKey{}).(*Slot)
	if s == nil {
		return fn()
	}
	s.enter()
	return s.exit(ctx, fn())
}

// OutsideAfter runs fn, which works with the slot ctx carries but may end up waiting on
// something outside (reading an answer's body from an API that may stall mid-way), holding the
// slot for up to grace: if fn still runs then, the pass goes Outside until fn returns. A stalled
// API thus holds a slot for grace at most.
func OutsideAfter(ctx context.Context, grace time.Duration, fn func() error) error {
	s, _ := ctx.Value(slotKey{}).(*Slot)
	if s == nil {
		return fn()
	}
	var mu sync.Mutex
	state := 0 // 0: fn runs with the slot, 1: fn runs Outside, 2: fn returned first
	t := time.AfterFunc(grace, func() {
		mu.Lock()
		defer mu.Unlock()
		if state == 0 {
			state = 1
			s.enter()
		}
	})
	err := fn()
	t.Stop()
	mu.Lock()
	went := state == 1
	state = 2
	mu.Unlock()
	if !went {
		return err
	}
	return s.exit(ctx, err)
}

// enter counts a goroutine of the pass Outside; the first gives the slot away unless data is
// pinned.
func (s *Slot) enter() {
	s.mu.Lock()
	s.outside++
	give := s.outside == 1 && s.pins == 0 && s.held
	if give {
		s.held = false
	}
	s.mu.Unlock()
	if give {
		s.l.release()
	}
}

// exit counts a goroutine back from Outside, with err, fn's error; the last one back waits for
// the slot again if the pass gave it away.
func (s *Slot) exit(ctx context.Context, err error) error {
	s.mu.Lock()
	s.outside--
	back := s.outside == 0 && !s.held && !s.done && !s.taking
	s.taking = s.taking || back
	s.mu.Unlock()
	if !back {
		return err
	}
	terr := s.take(ctx)
	s.mu.Lock()
	s.taking = false
	s.mu.Unlock()
	if terr != nil && err == nil {
		return terr
	}
	return err
}

// Pin counts data the pass ctx carries holds now (a batch until Kafka acknowledged it) against
// its slot: until the returned unpin (which does something only the first time it is called),
// Outside keeps the slot, so that the passes holding data are never more than the slots. Pin
// what is made while the pass holds its slot; never hold a pin across a wait on an API. Without
// a slot in ctx it does nothing.
func Pin(ctx context.Context) (unpin func()) {
	s, _ := ctx.Value(slotKey{}).(*Slot)
	if s == nil || s.l == nil {
		return func() {}
	}
	s.mu.Lock()
	s.pins++
	s.mu.Unlock()
	return sync.OnceFunc(s.unpin)
}

// unpin drops a pin; at the last one, a pass waiting Outside gives its slot away.
func (s *Slot) unpin() {
	s.mu.Lock()
	s.pins--
	give := s.pins == 0 && s.outside > 0 && s.held
	if give {
		s.held = false
	}
	s.mu.Unlock()
	if give {
		s.l.release()
	}
}
