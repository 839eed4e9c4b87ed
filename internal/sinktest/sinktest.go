// Package sinktest is the conformance suite of the sink.Sink contract: one Run, with a subtest
// per promise, that every implementation passes (the in-memory sink, Kafka's on kfake and on
// the real broker, the transactional one). A target that cannot hold a write (Hold nil) has
// the subtests that need one skipped, and says so; every target in this module can.
package sinktest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/sink"
)

// Target is one Sink under test and the means to look at and disturb what it writes.
type Target struct {
	Sink sink.Sink
	// Topics are two topics the Sink may write, empty; a batch spans both, as the pipeline's
	// data and dead letters do.
	Topics [2]string
	// Read returns every message written to topic so far, those of one key in the order
	// written.
	Read func(t *testing.T, topic string) []sink.Message
	// Fail arranges that the next batch sent fails for good (not retryable) and returns the
	// messages of that batch: a broker error, a message the topic refuses, a test's command.
	Fail func(t *testing.T) []sink.Message
	// Hold, when the target can, arranges that the write of the next batch sent is held (a
	// produce request kept inside the broker, the broker's answer to one kept from the client,
	// a batch the test answers later). Nil: it cannot, and the subtests that need it are
	// skipped.
	Hold func(t *testing.T) *Hold
}

// Hold is one held write.
type Hold struct {
	Held    <-chan struct{} // closed once the write is held
	Release func()          // lets it go on: it succeeds
}

// grace is how long ResetWaits gives a Reset that returns without waiting to show itself. A
// correct Reset never returns within it (it waits for a write held until after it), so the
// duration cannot make the test fail, only a broken Reset go unnoticed if it is slower.
const grace = 100 * time.Millisecond

// Run runs the suite against the Targets newTarget makes, a fresh one per subtest.
func Run(t *testing.T, newTarget func(t *testing.T) Target) {
	t.Run("DoneOncePerBatchAfterEveryMessageIsWritten", func(t *testing.T) { doneOnce(t, newTarget(t)) })
	t.Run("NotDoneWhileAWriteIsHeld", func(t *testing.T) { notDoneWhileHeld(t, newTarget(t)) })
	t.Run("SameKeyInOrderAcrossBatches", func(t *testing.T) { sameKeyOrder(t, newTarget(t)) })
	t.Run("FailureReachesDone", func(t *testing.T) { failure(t, newTarget(t)) })
	t.Run("ResetWaitsForBatchesInFlight", func(t *testing.T) { resetWaitsInFlight(t, newTarget(t)) })
	t.Run("ResetWaitsForAHeldWrite", func(t *testing.T) { resetWaitsHeld(t, newTarget(t)) })
	t.Run("ResetThatGaveUpRefusesSendsUntilOneSucceeds", func(t *testing.T) { resetGaveUp(t, newTarget(t)) })
	t.Run("EmptyBatchIsDone", func(t *testing.T) { empty(t, newTarget(t)) })
	t.Run("SendAfterCloseFails", func(t *testing.T) { afterClose(t, newTarget(t)) })
}

// call is the done of one batch: it counts its calls and keeps the first error.
type call struct {
	mu    sync.Mutex
	n     int
	err   error
	first chan struct{}
}

func newCall() *call { return &call{first: make(chan struct{})} }

func (c *call) done(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n++; c.n == 1 {
		c.err = err
		close(c.first)
	}
}

func (c *call) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *call) called() bool {
	select {
	case <-c.first:
		return true
	default:
		return false
	}
}

// wait waits for done and returns its error.
func (c *call) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-c.first:
	case <-t.Context().Done():
		t.Fatal("done never called")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// send sends msgs and returns their done.
func send(tg Target, msgs []sink.Message) *call {
	c := newCall()
	tg.Sink.Send(context.Background(), msgs, c.done)
	return c
}

// batch is n messages over both topics, keys k0..k(keys-1) in turn, valued by tag and index.
func batch(tg Target, tag string, n, keys int) []sink.Message {
	msgs := make([]sink.Message, n)
	for i := range msgs {
		msgs[i] = sink.Message{
			Topic:   tg.Topics[i%2],
			Key:     fmt.Appendf(nil, "k%d", i%keys),
			Value:   fmt.Appendf(nil, "%s/%d", tag, i),
			Headers: []sink.Header{{Key: "tag", Value: []byte(tag)}, {Key: "i", Value: fmt.Appendf(nil, "%d", i)}},
		}
	}
	return msgs
}

// show is a message as compared: topic, key, value and headers.
func show(m sink.Message) string {
	hs := make([]string, len(m.Headers))
	for i, h := range m.Headers {
		hs[i] = h.Key + "=" + string(h.Value)
	}
	slices.Sort(hs)
	value := "<tombstone>"
	if m.Value != nil {
		value = string(m.Value)
	}
	return fmt.Sprintf("%s %s=%s %s", m.Topic, m.Key, value, strings.Join(hs, ","))
}

// requireWritten fails unless every message of msgs is readable back.
func requireWritten(t *testing.T, tg Target, msgs []sink.Message, what string) {
	t.Helper()
	var got []string
	for _, topic := range tg.Topics {
		for _, m := range tg.Read(t, topic) {
			m.Topic = topic
			got = append(got, show(m))
		}
	}
	have := make(map[string]bool, len(got))
	for _, g := range got {
		have[g] = true
	}
	var missing []string
	for _, m := range msgs {
		if !have[show(m)] {
			missing = append(missing, show(m))
		}
	}
	require.Empty(t, missing, "%s: %d of %d messages not readable back", what, len(missing), len(msgs))
}

// held sends a batch whose write the target holds, and returns once it is held; it skips the
// test for a target that cannot hold a write.
func held(t *testing.T, tg Target) (*Hold, *call) {
	t.Helper()
	if tg.Hold == nil {
		t.Skip("this target cannot hold a write")
	}
	h := tg.Hold(t)
	c := send(tg, batch(tg, "held", 20, 5))
	select {
	case <-h.Held:
	case <-c.first:
		// Else a Hold that misses the target's writes (a request type it does not know)
		// would leave the test waiting for ever.
		t.Fatalf("the held batch was done (%v) before its write was held: Hold did not hold it", c.err)
	}
	return h, c
}

// sendsAgain checks that a batch sent now, after a Reset, is written.
func sendsAgain(t *testing.T, tg Target) {
	t.Helper()
	after := batch(tg, "after", 10, 3)
	require.NoError(t, send(tg, after).wait(t), "a batch sent after Reset")
	requireWritten(t, tg, after, "sent after Reset")
}

func doneOnce(t *testing.T, tg Target) {
	var all []sink.Message
	for i := range 5 {
		msgs := batch(tg, fmt.Sprintf("b%d", i), 40, 7)
		msgs[3].Value = nil // a tombstone is a message too
		c := send(tg, msgs)
		require.NoError(t, c.wait(t), "batch %d", i)
		// Readable as soon as done said so: done(nil) means written, not about to be.
		requireWritten(t, tg, msgs, fmt.Sprintf("right after done(nil) of batch %d", i))
		all = append(all, msgs...)
		t.Cleanup(func() { assert.Equal(t, 1, c.calls(), "done of batch %d, counted after Close", i) })
	}
	require.NoError(t, tg.Sink.Close())
	requireWritten(t, tg, all, "after Close")
}

func notDoneWhileHeld(t *testing.T, tg Target) {
	h, c := held(t, tg)
	assert.False(t, c.called(), "done was called while the batch's write was held")
	h.Release()
	require.NoError(t, c.wait(t))
	require.NoError(t, tg.Sink.Close())
	assert.Equal(t, 1, c.calls())
}

func sameKeyOrder(t *testing.T, tg Target) {
	const batches, keys = 12, 5
	var calls []*call
	for i := range batches {
		calls = append(calls, send(tg, batch(tg, fmt.Sprintf("b%02d", i), 30, keys))) // each key 6 times a batch
	}
	for i, c := range calls {
		require.NoError(t, c.wait(t), "batch %d", i)
	}
	for _, topic := range tg.Topics {
		perKey := map[string][]string{}
		for _, m := range tg.Read(t, topic) {
			perKey[string(m.Key)] = append(perKey[string(m.Key)], string(m.Value))
		}
		require.Len(t, perKey, keys, "topic %s", topic)
		for k, values := range perKey {
			// Values are "bNN/i": sent in lexical order within a batch per key too.
			require.Len(t, values, batches*30/keys/2, "key %s of %s", k, topic)
			require.True(t, slices.IsSortedFunc(values, func(a, b string) int {
				var ba, ia, bb, ib int
				fmt.Sscanf(a, "b%d/%d", &ba, &ia)
				fmt.Sscanf(b, "b%d/%d", &bb, &ib)
				if ba != bb {
					return ba - bb
				}
				return ia - ib
			}), "key %s of %s written out of order: %v", k, topic, values)
		}
	}
}

func failure(t *testing.T, tg Target) {
	ok := send(tg, batch(tg, "before", 10, 3))
	require.NoError(t, ok.wait(t))
	failed := send(tg, tg.Fail(t))
	err := failed.wait(t)
	require.Error(t, err, "the failure reached done")
	assert.False(t, retry.IsRetryable(err), "a failure for good says so: %v", err)
	t.Logf("done got: %v", err)
	require.NoError(t, tg.Sink.Reset(t.Context()))
	sendsAgain(t, tg)
	require.NoError(t, tg.Sink.Close())
	assert.Equal(t, 1, failed.calls(), "done of the failed batch")
}

func resetWaitsInFlight(t *testing.T, tg Target) {
	var calls []*call
	var all []sink.Message
	for i := range 8 {
		msgs := batch(tg, fmt.Sprintf("b%d", i), 50, 9)
		calls = append(calls, send(tg, msgs))
		all = append(all, msgs...)
	}
	require.NoError(t, tg.Sink.Reset(t.Context()))
	for i, c := range calls {
		require.True(t, c.called(), "batch %d sent before Reset: done not called when Reset returned", i)
		require.NoError(t, c.err, "batch %d", i)
	}
	requireWritten(t, tg, all, "sent before Reset")
	sendsAgain(t, tg)
	require.NoError(t, tg.Sink.Close())
}

func resetWaitsHeld(t *testing.T, tg Target) {
	h, c := held(t, tg)
	// The caller gave up on the batch (its timeout): it resets while the write is held.
	reset := make(chan error, 1)
	go func() { reset <- tg.Sink.Reset(context.Background()) }()
	select {
	case err := <-reset:
		h.Release()
		t.Fatalf("Reset returned (%v) while a write sent before it was held: it could still land after a later commit", err)
	case <-time.After(grace):
	}
	h.Release()
	require.NoError(t, <-reset)
	// done(nil) needs the broker's answer to the held write: called, it was applied.
	require.True(t, c.called(), "Reset returned before the done of the held batch")
	require.NoError(t, c.err)
	require.NoError(t, tg.Sink.Close())
}

func resetGaveUp(t *testing.T, tg Target) {
	h, c := held(t, tg)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, tg.Sink.Reset(ctx), context.Canceled, "a Reset whose ctx ended while a write is held")
	refused := send(tg, batch(tg, "refused", 5, 5))
	require.Error(t, refused.wait(t), "a batch sent while a write from before the failed Reset may still land")
	h.Release()
	require.NoError(t, tg.Sink.Reset(t.Context()))
	require.True(t, c.called(), "done of the held batch, after a Reset that returned nil")
	sendsAgain(t, tg)
	require.NoError(t, tg.Sink.Close())
}

func empty(t *testing.T, tg Target) {
	c := send(tg, nil)
	require.NoError(t, c.wait(t))
	require.NoError(t, tg.Sink.Close())
	assert.Equal(t, 1, c.calls())
}

func afterClose(t *testing.T, tg Target) {
	require.NoError(t, send(tg, batch(tg, "before", 4, 2)).wait(t))
	require.NoError(t, tg.Sink.Close())
	c := send(tg, batch(tg, "after", 4, 2))
	require.Error(t, c.wait(t))
	assert.Equal(t, 1, c.calls())
}
