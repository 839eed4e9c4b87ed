package pipeline_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/pipelinetest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/source"
)

func TestFullSyncThenNothingNew(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		p := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: 1234, PageSize: 50, Seed: 7}, BatchRecords: 300})
		st, err := p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 1234, st.Produced)
		assert.Equal(t, 0, st.TieOverflows)
		p.RequireInSync(t)

		c, err := p.Store.Load(t.Context(), p.Name)
		require.NoError(t, err)
		assert.True(t, p.MaxUpdatedAt(t).Equal(c.LastUpdatedAt), "cursor %s, max updatedAt %s", c.LastUpdatedAt, p.MaxUpdatedAt(t))
		assert.EqualValues(t, 1234, c.Records)

		st, err = p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 0, st.Produced, "a second pass with nothing new sends nothing")
		assert.Equal(t, 1, st.Skipped, "the record at the cursor is re-read and recognised")
		_, n := p.Latest(t)
		assert.Equal(t, 1234, n)
	})
}

func TestSecondSyncSendsExactlyTheUpdatedRecords(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		p := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: 600, PageSize: 50, Seed: 3}, BatchRecords: 200})
		_, err := p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		_, before := p.Latest(t)

		updated := p.API.Update(37)
		inserted := p.API.Insert(5)
		want := map[string]bool{}
		for _, u := range append(updated, inserted...) {
			want[u.ID] = true
		}
		st, err := p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		assert.Equal(t, len(want), st.Produced)

		msgs := kafkatest.ReadAll(t, tg, p.Topic)
		got := map[string]bool{}
		for _, m := range msgs[before:] {
			got[string(m.Key)] = true
		}
		assert.Equal(t, want, got, "the second pass sends the updated and inserted records and nothing else")
		p.RequireInSync(t)
	})
}

func TestTiesAcrossPageBoundariesAreNotLost(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		// 20 records share every updatedAt and a page holds 50, so most pages end inside a tie:
		// the reference algorithm (follow scroll_param) loses the rest of each such tie
		// (see playground's TestReferenceAlgorithmLosesTies).
		p := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: 2000, PageSize: 50, TieWidth: 20, Seed: 11}, BatchRecords: 500})
		st, err := p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 0, st.TieOverflows)
		assert.Equal(t, 2000, st.Produced, "every record exactly once")
		p.RequireInSync(t)

		// Restart on a cursor in the middle of a tie: a fresh pass re-reads the cursor's second
		// and sends none of the 20 records already delivered there.
		st, err = p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 0, st.Produced)
		assert.Equal(t, 20, st.Skipped)
	})
}

func TestTieWiderThanAPageIsLoud(t *testing.T) {
	for _, accept := range []bool{false, true} {
		t.Run(fmt.Sprintf("accept=%v", accept), func(t *testing.T) {
			p := pipelinetest.New(t, kafkatest.NewFake(t), pipelinetest.Options{
				Playground: playground.Config{Records: 300, PageSize: 50, TieWidth: 75, Seed: 5},
				Walk:       source.WalkOptions{AcceptTieOverflow: accept},
			})
			st, err := p.Pipeline.Pass(t.Context())
			assert.Positive(t, st.TieOverflows, "a tie wider than a page cannot be paged through with this API and must be reported")
			got, _ := p.Latest(t)
			assert.Less(t, len(got), 300, "this API really loses part of such ties")
			assert.Equal(t, len(got), st.Produced, "what was read is delivered and committed")
			c := kafkatest.Cursor(t, p.Target, p.CursorTopic, p.Name)
			assert.Equal(t, int64(len(got)), c.Records, "the cursor covers what was delivered")
			if accept {
				require.NoError(t, err, "the user accepted the loss")
				return
			}
			var toe *source.TieOverflowError
			require.ErrorAs(t, err, &toe, "a known hole is never a clean pass")
			require.ErrorIs(t, err, source.ErrTieOverflow)
			assert.False(t, retry.IsRetryable(err))
			assert.Equal(t, st.TieOverflows, toe.Total)
			require.NotEmpty(t, toe.Overflows)
			assert.Equal(t, st.Overflows, toe.Overflows)
			o := toe.Overflows[0]
			assert.Equal(t, 50, o.PageSize)
			assert.Equal(t, 50, o.Delivered, "the first page of the tie was delivered")
			assert.Contains(t, err.Error(), cursor.FormatTime(o.At))
			assert.Contains(t, err.Error(), "may be missing")
		})
	}
}

func TestChangeWithinTheCursorSecondIsDelivered(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
		p := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: 100, PageSize: 50, Seed: 9, Clock: func() time.Time { return now }}})
		first := p.API.Update(1)[0]
		_, err := p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		c, err := p.Store.Load(t.Context(), p.Name)
		require.NoError(t, err)
		require.True(t, now.Equal(c.LastUpdatedAt))

		// Same second: the record changes again and another one joins it.
		again, err := p.API.UpdateIDs(first.ID)
		require.NoError(t, err)
		other := p.API.Update(1)[0]
		require.Equal(t, first.UpdatedAt, again[0].UpdatedAt, "the update falls in the cursor's own second")

		_, before := p.Latest(t)
		st, err := p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 2, st.Produced)
		msgs := kafkatest.ReadAll(t, tg, p.Topic)[before:]
		require.Len(t, msgs, 2)
		assert.ElementsMatch(t, []string{first.ID, other.ID}, []string{string(msgs[0].Key), string(msgs[1].Key)})
		p.RequireInSync(t)
	})
}

func TestMessagesCarryLineageHeaders(t *testing.T) {
	p := pipelinetest.New(t, kafkatest.NewFake(t), pipelinetest.Options{Playground: playground.Config{Records: 3}})
	_, err := p.Pipeline.Pass(t.Context())
	require.NoError(t, err)
	msgs := kafkatest.ReadAll(t, p.Target, p.Topic)
	require.Len(t, msgs, 3)
	users := pipelinetest.ToAvro(t, p.API.Snapshot())
	for _, m := range msgs {
		assert.Equal(t, p.Name, m.Headers[pipeline.HeaderPipeline])
		assert.Equal(t, p.URL, m.Headers[pipeline.HeaderSource])
		assert.Equal(t, users[string(m.Key)].UpdatedAt.Format(cursor.TimeLayout), m.Headers[pipeline.HeaderUpdatedAt])
	}
}

// produceFault fails produce requests to topic with a non-retriable error once `after`
// requests went through.
func produceFault(c *kfake.Cluster, topic string, after int) *kfake.FaultHandle {
	seen := map[kmsg.Request]bool{} // When may be asked more than once per request
	return c.Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.PolicyViolation, Count: -1,
		When: func(r kmsg.Request) bool { seen[r] = true; return len(seen) > after },
	})
}

func TestCursorIsNeverAheadOfAcknowledgedData(t *testing.T) {
	cases := []struct {
		name        string
		okRequests  int // produce requests that succeed before the fault
		maxInFlight int
	}{
		// One batch at a time: one produce request per batch, so the fault hits a known batch.
		{name: "first batch fails: no cursor at all", okRequests: 0, maxInFlight: 1},
		{name: "third batch fails: cursor at the end of the second", okRequests: 2, maxInFlight: 1},
		// Pipelined: kafka-go may merge queued batches into one request; the cursor must still
		// cover only acknowledged records.
		{name: "pipelined, a request in the middle fails", okRequests: 2, maxInFlight: 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg := kafkatest.NewFake(t)
			p := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: 3000, PageSize: 50, Seed: 2}, BatchRecords: 100, MaxInFlight: c.maxInFlight})
			h := produceFault(tg.Fake, p.Topic, c.okRequests)
			_, err := p.Pipeline.Pass(t.Context())
			require.ErrorIs(t, err, pipeline.ErrProduce)
			assert.False(t, retry.IsRetryable(err), "POLICY_VIOLATION is not retryable: %v", err)

			got, _ := p.Latest(t)
			cur, lerr := p.Store.Load(t.Context(), p.Name)
			if c.okRequests == 0 {
				require.ErrorIs(t, lerr, cursor.ErrNotFound, "no cursor may be committed for an unacknowledged batch")
				assert.Empty(t, got)
			} else {
				require.NoError(t, lerr)
				if c.maxInFlight == 1 {
					assert.EqualValues(t, c.okRequests, cur.Seq)
				}
				covered := 0
				for _, u := range p.Expected(t) {
					if !u.UpdatedAt.After(cur.LastUpdatedAt) {
						covered++
						assert.Contains(t, got, u.ID, "the cursor covers %s but it is not in the topic", u.ID)
					}
				}
				assert.Equal(t, covered, len(got), "what the topic holds is exactly what the cursor covers (every later request failed)")
				assert.Less(t, covered, 3000)
			}

			// The next pass resumes from the committed cursor and loses nothing.
			h.Remove()
			_, err = p.Pipeline.Pass(t.Context())
			require.NoError(t, err)
			p.RequireInSync(t)
		})
	}
}

func TestFailedCursorCommitResendsTheBatch(t *testing.T) {
	tg := kafkatest.NewFake(t)
	const records, batch = 250, 100
	p := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: records, PageSize: 50, Seed: 4}, BatchRecords: batch, MaxInFlight: 1})
	h := produceFault(tg.Fake, p.CursorTopic, 1)
	first, err := p.Pipeline.Pass(t.Context())
	require.ErrorIs(t, err, pipeline.ErrCommit)
	require.Positive(t, first.Produced, "the first batch was committed")
	_, written := p.Latest(t)
	resent := written - first.Produced
	require.Positive(t, resent, "the second batch was acknowledged but its cursor failed")

	h.Remove()
	second, err := p.Pipeline.Pass(t.Context())
	require.NoError(t, err)
	assert.Equal(t, records-first.Produced, second.Produced, "the pass resumes from the committed cursor, not from memory")
	_, n := p.Latest(t)
	assert.Equal(t, records+resent, n, "duplicates are exactly the one batch whose cursor failed")
	assert.LessOrEqual(t, resent, batch+50, "a batch is at most BatchRecords plus one page")
	p.RequireInSync(t)
}

// TestRepeatedSyncsWhileTheAPIUpdatesEndInSync syncs again and again while the playground updates
// records in the background, then once more after the updates stopped: the topic must then hold
// the API's state, with no tie overflow on the way.
//
// Updates are stamped with the API clock's second, so this holds only because no second gets
// more records than a page: RunUpdates never stamps more than ceil(UpdatesPerSecond) = 40 with
// one second, below the page of 50, however its goroutine is scheduled (a stalled updater used
// to pile its catch-up onto one second: a tie overflow, which Sync reports as an error). The test
// makes the worst case happen rather than hope it does not: twice, the API's clock stands still
// while more than a page of updates falls due, all on one second.
func TestRepeatedSyncsWhileTheAPIUpdatesEndInSync(t *testing.T) {
	const page, rate = 50, 40
	require.Less(t, rate, page, "the rate bounds the widest tie, which must fit in a page")
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		clock := &pausableClock{}
		p := pipelinetest.New(t, tg, pipelinetest.Options{Playground: playground.Config{Records: 3000, PageSize: page, TieWidth: 20, Seed: 21,
			UpdatesPerSecond: rate, Clock: clock.now}, BatchRecords: 250})
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); p.API.RunUpdates(ctx) }()
		// due is every update RunUpdates decided on: made, or dropped because its second was full.
		due := func() uint64 { st := p.API.Stats(); return st.Updates + st.UpdatesDropped }
		overflows := 0
		for round := uint64(1); round <= 8; round++ {
			if round == 3 || round == 6 {
				from := due()
				clock.pause()
				require.Eventually(t, func() bool { return due() >= from+page+10 }, 30*time.Second, 5*time.Millisecond,
					"more than a page of updates falls due while the clock stands still")
				clock.resume()
			}
			require.Eventually(t, func() bool { return p.API.Stats().Updates >= round*10 }, 30*time.Second, 5*time.Millisecond)
			st, err := p.Pipeline.Pass(t.Context())
			require.NoError(t, err)
			overflows += st.TieOverflows
		}
		stop()
		<-done
		// One more pass after the updates stopped catches the last ones; then the topic's latest
		// value per id is the API's state.
		st, err := p.Pipeline.Pass(t.Context())
		require.NoError(t, err)
		assert.Zero(t, overflows+st.TieOverflows)
		assert.Positive(t, p.API.Stats().UpdatesDropped, "the paused clock made updates fall due on a full second")
		p.RequireInSync(t)
	})
}

// pausableClock is time.Now, or the time it was paused at while paused: a clock standing still
// is where a stalled updater's catch-up lands, on one second. It never goes back.
type pausableClock struct{ paused atomic.Pointer[time.Time] }

func (c *pausableClock) now() time.Time {
	if t := c.paused.Load(); t != nil {
		return *t
	}
	return time.Now()
}

func (c *pausableClock) pause() {
	t := time.Now()
	c.paused.Store(&t)
}

func (c *pausableClock) resume() { c.paused.Store(nil) }

func TestFlakyAPIIsRetriedWithoutLoss(t *testing.T) {
	// A fifth of the page requests fail with 500: every page is retried with backoff and the
	// pass completes with every record, once.
	p := pipelinetest.New(t, kafkatest.NewFake(t), pipelinetest.Options{Playground: playground.Config{Records: 1500, PageSize: 50, TieWidth: 4, Seed: 13, FailRate: 0.2}, BatchRecords: 200})
	st, err := p.Pipeline.Pass(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1500, st.Produced)
	assert.Positive(t, p.API.Stats().Status5xx, "the API did fail")
	p.RequireInSync(t)
}
