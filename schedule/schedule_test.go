package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/schedule"
)

// queued waits until n acquires of l wait for a slot: the event the next step depends on.
func queued(t *testing.T, l *schedule.Limiter, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return l.Waiting() == n }, 10*time.Second, time.Millisecond, "want %d waiting, have %d", n, l.Waiting())
}

// TestPassesGetSlotsInTheOrderTheyAsked: with every slot taken, passes that come due get the
// next free slots first come, first served, however they interleave with releases.
func TestPassesGetSlotsInTheOrderTheyAsked(t *testing.T) {
	for _, slots := range []int{1, 3} {
		t.Run("", func(t *testing.T) {
			l := schedule.NewLimiter(slots)
			var holders []*schedule.Slot
			for range slots {
				_, s, err := l.Hold(t.Context(), nil)
				require.NoError(t, err)
				holders = append(holders, s)
			}
			const n = 20
			got := make(chan int)
			rel := make([]chan struct{}, n)
			var wg sync.WaitGroup
			for i := range n {
				rel[i] = make(chan struct{})
				wg.Go(func() {
					_, s, err := l.Hold(t.Context(), nil)
					assert.NoError(t, err)
					got <- i
					<-rel[i]
					s.Release()
				})
				queued(t, l, i+1) // pass i is due before pass i+1
			}
			// One release at a time hands exactly one slot: to the earliest waiter.
			var order []int
			for _, s := range holders {
				s.Release()
				order = append(order, <-got)
			}
			for len(order) < n {
				close(rel[order[len(order)-slots]])
				order = append(order, <-got)
			}
			for _, i := range order[n-slots:] {
				close(rel[i])
			}
			wg.Wait()
			want := make([]int, n)
			for i := range want {
				want[i] = i
			}
			assert.Equal(t, want, order, "slots go to the passes in the order they became due")
		})
	}
}

// TestANewcomerDoesNotOvertakeWaiters: a pass that comes due while others wait queues behind
// them even at the instant a slot is free.
func TestANewcomerDoesNotOvertakeWaiters(t *testing.T) {
	l := schedule.NewLimiter(1)
	_, first, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	got := make(chan string, 2)
	go func() {
		_, s, err := l.Hold(t.Context(), nil)
		if assert.NoError(t, err) {
			got <- "waiter"
			s.Release()
		}
	}()
	queued(t, l, 1)
	first.Release()
	_, s, err := l.Hold(t.Context(), nil) // the newcomer
	require.NoError(t, err)
	got <- "newcomer"
	s.Release()
	assert.Equal(t, "waiter", <-got)
	assert.Equal(t, "newcomer", <-got)
}

// TestOutsideLendsTheSlot: a pass waiting on its API (Outside) lets another pass work, and
// gets a slot back afterwards behind the passes that asked meanwhile.
func TestOutsideLendsTheSlot(t *testing.T) {
	l := schedule.NewLimiter(1)
	ctx, slow, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	defer slow.Release()

	ran := make(chan struct{})
	var waits []time.Duration
	var mu sync.Mutex
	err = schedule.Outside(ctx, func() error {
		// The stalled request: meanwhile another pass holds the slot and finishes.
		_, other, err := l.Hold(t.Context(), func(d time.Duration) { mu.Lock(); waits = append(waits, d); mu.Unlock() })
		require.NoError(t, err)
		other.Release()
		close(ran)
		return nil
	})
	require.NoError(t, err)
	<-ran
	assert.Len(t, waits, 1)

	// Back holding: another pass waits for it.
	ctx2, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, _, err = l.Hold(ctx2, nil)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the pass holds its slot again after Outside")
}

// TestOutsideReturnsFnsError and gives the error of ctx only when fn had none.
func TestOutsideReturnsFnsError(t *testing.T) {
	l := schedule.NewLimiter(1)
	ctx, s, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	defer s.Release()
	boom := errors.New("boom")
	assert.ErrorIs(t, schedule.Outside(ctx, func() error { return boom }), boom)

	cctx, cancel := context.WithCancel(ctx)
	var other *schedule.Slot
	err = schedule.Outside(cctx, func() error {
		_, other, err = l.Hold(t.Context(), nil) // takes the lent slot
		require.NoError(t, err)
		cancel() // the pass is stopped while its request runs
		return nil
	})
	assert.ErrorIs(t, err, context.Canceled)
	other.Release()
}

// TestGivingUpWhileWaitingLeavesTheQueue: a waiter whose ctx ends is no longer served, and
// its place does not swallow a slot.
func TestGivingUpWhileWaitingLeavesTheQueue(t *testing.T) {
	l := schedule.NewLimiter(1)
	_, s, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() {
		_, _, err := l.Hold(ctx, nil)
		done <- err
	}()
	queued(t, l, 1)
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	assert.Equal(t, 0, l.Waiting())
	s.Release()
	s.Release() // twice: once only
	_, a, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	ctx2, cancel2 := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel2()
	_, _, err = l.Hold(ctx2, nil)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "one slot, and a holds it: a double Release made two")
	a.Release()
}

func TestWithoutLimiterNothingWaits(t *testing.T) {
	var l *schedule.Limiter
	ctx, s, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	assert.NoError(t, schedule.Outside(ctx, func() error { return nil }))
	s.Release()
}

// TestConcurrentOutsideTakesTheSlotBackOnce: the workers of one pass (a parallel backfill)
// wait on the API at once. One returns while the slot is taken and queues to get it back; a
// second goes Outside and returns meanwhile. They must get the pass its one slot back, not one
// each: a slot taken twice is released once, and every such leak leaves the process a slot
// short for good, until no pass of any pipeline can run.
func TestConcurrentOutsideTakesTheSlotBackOnce(t *testing.T) {
	l := schedule.NewLimiter(2)
	ctx, pass, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	_, other, err := l.Hold(t.Context(), nil) // another pass holds the second slot
	require.NoError(t, err)

	// Worker b waits on the API: the pass's slot goes to a third pass.
	inside, answer := make(chan struct{}), make(chan struct{})
	bDone := make(chan error)
	go func() {
		bDone <- schedule.Outside(ctx, func() error {
			close(inside)
			<-answer
			return nil
		})
	}()
	<-inside
	_, third, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	close(answer) // b's answer came: it queues for the slot
	queued(t, l, 1)

	// Worker a's request comes and goes while b waits for the slot.
	aDone := make(chan error)
	go func() { aDone <- schedule.Outside(ctx, func() error { return nil }) }()
	// a goes on (b brings the pass's slot back), or queues for a slot of its own.
	aWent := false
	require.Eventually(t, func() bool {
		select {
		case err := <-aDone:
			require.NoError(t, err)
			aWent = true
		default:
		}
		return aWent || l.Waiting() == 2
	}, 10*time.Second, time.Millisecond)

	third.Release()
	require.NoError(t, <-bDone)
	other.Release()
	if !aWent {
		require.NoError(t, <-aDone)
	}
	pass.Release()

	// Every pass released: both slots are free.
	done, cancel := context.WithCancel(t.Context())
	cancel() // a free slot is taken at once; none free fails at once
	for i := range 2 {
		_, s, err := l.Hold(done, nil)
		require.NoError(t, err, "slot %d of 2 leaked: taken back twice for one pass, released once", i+1)
		defer s.Release()
	}
}

// hold starts a pass that asks for a slot of l; its Slot comes on the returned channel once it
// has one.
func hold(t *testing.T, l *schedule.Limiter) <-chan *schedule.Slot {
	t.Helper()
	got := make(chan *schedule.Slot, 1)
	go func() {
		_, s, err := l.Hold(t.Context(), nil)
		if assert.NoError(t, err) {
			got <- s
		}
	}()
	return got
}

// slotWithin awaits a pass's slot; a pass that never gets one fails the test instead of hanging.
func slotWithin(t *testing.T, got <-chan *schedule.Slot, what string) *schedule.Slot {
	t.Helper()
	select {
	case s := <-got:
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("no slot within 10s: %s", what)
		return nil
	}
}

// TestAPinnedPassKeepsItsSlotOutside: a pass with data pinned (a batch awaiting Kafka's
// acknowledgement) keeps its slot while it waits on its API, so that no more passes hold data
// than there are slots; the last unpin gives the slot to the next pass at once, while the first
// still waits on its API.
func TestAPinnedPassKeepsItsSlotOutside(t *testing.T) {
	for _, pins := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d pins", pins), func(t *testing.T) {
			l := schedule.NewLimiter(1)
			ctx, s, err := l.Hold(t.Context(), nil)
			require.NoError(t, err)
			defer s.Release()
			var unpins []func()
			for range pins {
				unpins = append(unpins, schedule.Pin(ctx))
			}
			err = schedule.Outside(ctx, func() error {
				other := hold(t, l)
				queued(t, l, 1) // the slot was not given away
				for i, unpin := range unpins {
					unpin()
					unpin() // twice: counts once
					if i < len(unpins)-1 {
						assert.Equal(t, 1, l.Waiting(), "the slot went away with pins left")
					}
				}
				slotWithin(t, other, "the last unpin gives the slot away").Release()
				return nil
			})
			require.NoError(t, err)
			// Back holding: another pass waits for it.
			other := hold(t, l)
			queued(t, l, 1)
			s.Release()
			slotWithin(t, other, "the pass released its slot").Release()
		})
	}
}

// TestAnUnpinnedPassGivesItsSlotAway: pins that ended before the pass goes Outside leave it
// free to lend its slot, as if it had never pinned.
func TestAnUnpinnedPassGivesItsSlotAway(t *testing.T) {
	l := schedule.NewLimiter(1)
	ctx, s, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	defer s.Release()
	schedule.Pin(ctx)()
	require.NoError(t, schedule.Outside(ctx, func() error {
		slotWithin(t, hold(t, l), "an unpinned pass is Outside").Release()
		return nil
	}))
}

// TestOutsideAfterLendsTheSlotOnlyToAStall: work that may stall on something outside (a body
// an API sends slowly) keeps the slot while it ends within its grace, and gives it away
// when it runs longer, taking it back after.
func TestOutsideAfterLendsTheSlotOnlyToAStall(t *testing.T) {
	t.Run("within the grace", func(t *testing.T) {
		l := schedule.NewLimiter(1)
		ctx, s, err := l.Hold(t.Context(), nil)
		require.NoError(t, err)
		other := hold(t, l)
		queued(t, l, 1)
		done := make(chan error, 1)
		go func() { done <- schedule.OutsideAfter(ctx, time.Hour, func() error { return nil }) }()
		select {
		case err := <-done:
			require.NoError(t, err)
		case s := <-other:
			s.Release()
			t.Fatal("the slot was given away though the work ended at once")
		}
		s.Release()
		slotWithin(t, other, "the pass released its slot").Release()
	})
	t.Run("stalled", func(t *testing.T) {
		l := schedule.NewLimiter(1)
		ctx, s, err := l.Hold(t.Context(), nil)
		require.NoError(t, err)
		defer s.Release()
		other := hold(t, l)
		queued(t, l, 1)
		boom := errors.New("stalled body broke off")
		err = schedule.OutsideAfter(ctx, time.Millisecond, func() error {
			// The stall: another pass gets the slot meanwhile.
			slotWithin(t, other, "the slot of a stalled pass").Release()
			return boom
		})
		assert.ErrorIs(t, err, boom)
		next := hold(t, l)
		queued(t, l, 1) // the pass holds its slot again
		s.Release()
		slotWithin(t, next, "the pass released its slot").Release()
	})
}
