package producer_test

// Fault injection on kfake (the fast tier): what a pass does when Kafka answers a produce with
// an error, acknowledges a write it refused, moves partition leaders or holds a produce past the
// write timeout. Every case ends the same way: the fault is removed, the next pass runs, and the
// topic's latest value per id must equal the API (nothing lost) with the duplicates the fault
// explains and no more.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/synctest"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/producer"
)

const (
	fiRecords = 600
	fiPage    = 50
	fiBatch   = 100
	// A sync batch is BatchRecords plus less than one page.
	fiBatchMax = fiBatch + fiPage
)

// batchErrRE is how a produce or commit error names its batch.
var batchErrRE = regexp.MustCompile(`batch of \d+ records up to updatedAt \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)

func fiPipeline(t *testing.T, tg kafkatest.Target, partitions int) *synctest.Pipeline {
	return synctest.New(t, tg, synctest.Options{
		Playground:   playground.Config{Records: fiRecords, PageSize: fiPage, Seed: 31},
		BatchRecords: fiBatch, Partitions: partitions,
	})
}

// fiWrites reports whether a produce request writes to topic, and how many records it carries
// for it.
func fiWrites(r kmsg.Request, topic string) (bool, int) {
	req, ok := r.(*kmsg.ProduceRequest)
	if !ok {
		return false, 0
	}
	found, n := false, 0
	for _, tp := range req.Topics {
		if tp.Topic != topic {
			continue
		}
		found = true
		for _, p := range tp.Partitions {
			var b kmsg.RecordBatch
			if err := b.ReadFrom(p.Records); err == nil {
				n += int(b.NumRecords)
			}
		}
	}
	return found, n
}

// fiKafkaCodes returns the Kafka error codes inside err (through kafka.WriteErrors, which has no
// Unwrap).
func fiKafkaCodes(err error) []kafka.Error {
	var out []kafka.Error
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			var ke kafka.Error
			if errors.As(e, &ke) && !containsCode(out, ke) {
				out = append(out, ke)
			}
		}
	}
	var ke kafka.Error
	if errors.As(err, &ke) && !containsCode(out, ke) {
		out = append(out, ke)
	}
	return out
}

func containsCode(s []kafka.Error, e kafka.Error) bool {
	for _, x := range s {
		if x == e {
			return true
		}
	}
	return false
}

// fiState is what the topic and the cursor hold after a pass.
type fiState struct {
	messages int
	ids      map[string]int // id -> copies
	cursor   cursor.Cursor
	hasCur   bool
}

func fiRead(t *testing.T, p *synctest.Pipeline) fiState {
	t.Helper()
	st := fiState{ids: map[string]int{}}
	for _, m := range kafkatest.ReadAll(t, p.Target, p.Topic) {
		st.messages++
		st.ids[string(m.Key)]++
	}
	c, err := p.Store.Load(t.Context(), p.Name)
	if errors.Is(err, cursor.ErrNotFound) {
		return st
	}
	require.NoError(t, err)
	st.cursor, st.hasCur = c, true
	return st
}

// requireCursorBehindData checks that every API record the cursor covers is in the topic, that
// the cursor counts exactly those, and returns the ids in the topic that it does not cover.
func requireCursorBehindData(t *testing.T, p *synctest.Pipeline, st fiState) (uncovered []string) {
	t.Helper()
	covered := map[string]bool{}
	if st.hasCur {
		for id, u := range p.Expected(t) {
			if !u.UpdatedAt.After(st.cursor.LastUpdatedAt) {
				covered[id] = true
				require.Contains(t, st.ids, id, "the cursor (%s) covers %s but it is not in the topic", st.cursor.LastUpdatedAt, id)
			}
		}
		require.EqualValues(t, len(covered), st.cursor.Records, "records_delivered counts what the cursor covers")
	}
	for id := range st.ids {
		if !covered[id] {
			uncovered = append(uncovered, id)
		}
	}
	sort.Strings(uncovered)
	return uncovered
}

// TestProduceFaults injects one Kafka error per case into the produce requests of the data topic
// or of the cursor topic, after okBatches of them went through.
func TestProduceFaults(t *testing.T) {
	type outcome int
	const (
		passes      outcome = iota // kafka-go retries it away inside WriteMessages
		failProduce                // ErrProduce
		failCommit                 // ErrCommit
	)
	cases := []struct {
		name      string
		cursorTop bool        // fault the cursor topic instead of the data topic
		err       *kerr.Error // the code answered
		count     int         // requests answered with it (-1: until removed)
		okBatches int         // requests to that topic let through first
		want      outcome
		retryable bool
		// lands: the broker applies the write although it answers the error
		// (NOT_ENOUGH_REPLICAS_AFTER_APPEND, and REQUEST_TIMED_OUT on produce).
		lands bool
	}{
		{name: "NOT_LEADER_OR_FOLLOWER twice", err: kerr.NotLeaderForPartition, count: 2, okBatches: 2, want: passes, retryable: true},
		{name: "NOT_ENOUGH_REPLICAS twice", err: kerr.NotEnoughReplicas, count: 2, okBatches: 2, want: passes, retryable: true},
		{name: "REQUEST_TIMED_OUT twice", err: kerr.RequestTimedOut, count: 2, okBatches: 2, want: passes, retryable: true, lands: true},
		{name: "NOT_ENOUGH_REPLICAS_AFTER_APPEND once", err: kerr.NotEnoughReplicasAfterAppend, count: 1, okBatches: 2, want: passes, retryable: true, lands: true},
		{name: "NOT_LEADER_OR_FOLLOWER outlasting kafka-go's attempts", err: kerr.NotLeaderForPartition, count: -1, okBatches: 2, want: failProduce, retryable: true},
		{name: "NOT_ENOUGH_REPLICAS_AFTER_APPEND outlasting kafka-go's attempts", err: kerr.NotEnoughReplicasAfterAppend, count: -1, okBatches: 2, want: failProduce, retryable: true, lands: true},
		{name: "MESSAGE_TOO_LARGE", err: kerr.MessageTooLarge, count: -1, okBatches: 2, want: failProduce},
		{name: "INVALID_RECORD", err: kerr.InvalidRecord, count: -1, okBatches: 2, want: failProduce},
		{name: "MESSAGE_TOO_LARGE on the first batch", err: kerr.MessageTooLarge, count: -1, okBatches: 0, want: failProduce},
		{name: "cursor topic NOT_LEADER_OR_FOLLOWER", cursorTop: true, err: kerr.NotLeaderForPartition, count: -1, okBatches: 1, want: failCommit, retryable: true},
		{name: "cursor topic TOPIC_AUTHORIZATION_FAILED", cursorTop: true, err: kerr.TopicAuthorizationFailed, count: -1, okBatches: 1, want: failCommit},
		{name: "cursor topic REQUEST_TIMED_OUT", cursorTop: true, err: kerr.RequestTimedOut, count: -1, okBatches: 1, want: failCommit, retryable: true, lands: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg := kafkatest.NewFake(t)
			p := fiPipeline(t, tg, 1)
			top := p.Topic
			if c.cursorTop {
				top = p.CursorTopic
			}
			var faultedSize atomic.Int64 // records in a faulted data request
			seen := map[kmsg.Request]bool{}
			h := tg.Fake.Fault(kfake.Fault{
				Keys: []kmsg.Key{kmsg.Produce}, Topic: top, Err: c.err, Count: c.count,
				When: func(r kmsg.Request) bool { // on the cluster goroutine
					seen[r] = true
					if len(seen) <= c.okBatches {
						return false
					}
					if _, n := fiWrites(r, p.Topic); n > 0 {
						faultedSize.Store(int64(n))
					}
					return true
				},
			})
			start := time.Now()
			st1, err := p.Syncer.Sync(t.Context())
			took := time.Since(start)
			hits := h.Hits()
			h.Remove()
			after := fiRead(t, p)
			uncovered := requireCursorBehindData(t, p, after)
			t.Logf("pass 1 (%s): err=%v", took.Round(time.Millisecond), err)
			t.Logf("pass 1: %d requests answered %s; %d messages, cursor seq %d covers %d records, %d ids beyond it",
				hits, c.err.Message, after.messages, after.cursor.Seq, after.cursor.Records, len(uncovered))
			require.Positive(t, hits, "the fault was never hit")

			switch c.want {
			case passes:
				if err != nil {
					// Not expected with Count 2 against MaxAttempts 5, but the contract allows it.
					t.Logf("NOTE: kafka-go did not retry %s away: %v", c.err.Message, err)
					require.ErrorIs(t, err, producer.ErrProduce)
					require.True(t, producer.IsRetryable(err), "%v", err)
				} else {
					assert.Equal(t, fiRecords, st1.Produced)
					assert.Empty(t, uncovered)
				}
			case failProduce:
				require.ErrorIs(t, err, producer.ErrProduce)
				assert.NotErrorIs(t, err, producer.ErrCommit)
				assert.Regexp(t, batchErrRE, err.Error(), "the error names the batch")
				assert.Contains(t, fiKafkaCodes(err), kafka.Error(c.err.Code), "the error carries Kafka's code: %v", err)
				assert.Equal(t, c.retryable, producer.IsRetryable(err), "IsRetryable(%v)", err)
				assert.EqualValues(t, c.okBatches, after.cursor.Seq, "the cursor stops at the last acknowledged batch")
				if c.lands {
					// Kafka wrote every attempt it answered with the error; none is covered.
					require.NotEmpty(t, uncovered, "the refused-but-written batch is in the topic")
					assert.LessOrEqual(t, len(uncovered), fiBatchMax)
					assert.EqualValues(t, int64(hits)*faultedSize.Load(), after.messages-int(after.cursor.Records),
						"every attempt kafka-go made landed once (%d attempts of %d records)", hits, faultedSize.Load())
					minUncovered := time.Time{}
					want := p.Expected(t)
					for _, id := range uncovered {
						if u := want[id].UpdatedAt; minUncovered.IsZero() || u.Before(minUncovered) {
							minUncovered = u
						}
					}
					assert.True(t, after.cursor.LastUpdatedAt.Before(minUncovered),
						"the cursor (%s) must not move past the batch reported failed (from %s)", after.cursor.LastUpdatedAt, minUncovered)
				} else {
					assert.Empty(t, uncovered, "a refused batch writes nothing")
					assert.Equal(t, int(after.cursor.Records), after.messages)
				}
			case failCommit:
				require.ErrorIs(t, err, producer.ErrCommit)
				assert.NotErrorIs(t, err, producer.ErrProduce)
				assert.Regexp(t, batchErrRE, err.Error(), "the error names the batch")
				assert.Contains(t, err.Error(), "was acknowledged")
				assert.Contains(t, fiKafkaCodes(err), kafka.Error(c.err.Code), "the error carries Kafka's code: %v", err)
				assert.Equal(t, c.retryable, producer.IsRetryable(err), "IsRetryable(%v)", err)
				if c.lands {
					// The broker stored the cursor it answered REQUEST_TIMED_OUT for: the next
					// pass loads it, so nothing is re-sent.
					assert.EqualValues(t, c.okBatches+1, after.cursor.Seq, "the commit reported failed was stored")
					assert.Empty(t, uncovered)
				} else {
					assert.EqualValues(t, c.okBatches, after.cursor.Seq)
					assert.NotEmpty(t, uncovered, "the batch was written, its cursor not")
					assert.LessOrEqual(t, len(uncovered), fiBatchMax)
				}
			}

			// Recovery: the fault is gone; the next pass resumes from the committed cursor.
			_, err = p.Syncer.Sync(t.Context())
			require.NoError(t, err)
			p.RequireInSync(t)
			_, n := p.Latest(t)
			dups := n - fiRecords
			t.Logf("after recovery: %d messages for %d records: %d duplicates", n, fiRecords, dups)
			switch {
			case c.lands && !c.cursorTop:
				assert.EqualValues(t, int64(hits)*faultedSize.Load(), dups, "duplicates are the attempts Kafka wrote but refused")
			case c.want == failCommit && !c.lands:
				assert.Equal(t, after.messages-int(after.cursor.Records), dups, "duplicates are the one batch whose cursor failed")
				assert.LessOrEqual(t, dups, fiBatchMax)
			default:
				assert.Zero(t, dups)
			}
		})
	}
}

// fiSyncUntilOK runs passes until one succeeds, as `keysetsync once` does within
// --retry-timeout; every failed pass must be retryable. It returns the errors of the failed
// passes.
func fiSyncUntilOK(t *testing.T, s *producer.Syncer, maxPasses int) []error {
	t.Helper()
	var failed []error
	for i := 1; i <= maxPasses; i++ {
		start := time.Now()
		_, err := s.Sync(t.Context())
		if err == nil {
			return failed
		}
		t.Logf("pass failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
		require.Truef(t, producer.IsRetryable(err), "a leader change must be retryable: %v", err)
		failed = append(failed, err)
	}
	require.FailNowf(t, "no pass succeeded", "%d passes failed; last: %v", maxPasses, failed[len(failed)-1])
	return nil
}

// fiControlNth runs fn (from a kfake control function, where cluster admin calls are allowed)
// on the nth produce request to topic, with the request; the request then proceeds normally.
func fiControlNth(c *kfake.Cluster, topic string, nth []int, fn func(n int, r *kmsg.ProduceRequest)) {
	count := 0
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if ok, _ := fiWrites(r, topic); !ok {
			return nil, nil, false
		}
		count++
		for _, n := range nth {
			if n == count {
				fn(n, r.(*kmsg.ProduceRequest))
			}
		}
		return nil, nil, false
	})
}

// TestLeaderChangesLoseNothing moves partition leaders of a 3-partition data topic across a
// 3-broker kfake cluster, between and during passes, and removes and adds brokers. kafka-go does
// not refresh its metadata on NOT_LEADER_OR_FOLLOWER (segmentio/kafka-go#1221): it learns the
// new leader at its next periodic refresh (Transport.MetadataTTL, 6 s by default), so a pass may
// fail with a retryable error, and the next pass must succeed and lose nothing.
func TestLeaderChangesLoseNothing(t *testing.T) {
	const brokers, partitions = 3, 3
	other := func(node int32) int32 { return (node + 1) % brokers }
	cases := []struct {
		name string
		// during installs controls before the pass; between runs after it.
		during  func(t *testing.T, c *kfake.Cluster, p *synctest.Pipeline)
		between func(t *testing.T, c *kfake.Cluster, p *synctest.Pipeline)
	}{
		{
			name: "every leader moved between passes",
			between: func(t *testing.T, c *kfake.Cluster, p *synctest.Pipeline) {
				for part := int32(0); part < partitions; part++ {
					require.NoError(t, c.MoveTopicPartition(p.Topic, part, other(c.LeaderFor(p.Topic, part))))
				}
				require.NoError(t, c.MoveTopicPartition(p.CursorTopic, 0, other(c.LeaderFor(p.CursorTopic, 0))))
			},
		},
		{
			name: "leaders shuffled between passes",
			between: func(t *testing.T, c *kfake.Cluster, p *synctest.Pipeline) {
				c.ShufflePartitionLeaders()
			},
		},
		{
			name: "leader of the partition being written moved mid-pass",
			during: func(t *testing.T, c *kfake.Cluster, p *synctest.Pipeline) {
				fiControlNth(c, p.Topic, []int{4, 10}, func(n int, r *kmsg.ProduceRequest) {
					for _, tp := range r.Topics {
						for _, pp := range tp.Partitions {
							leader := c.LeaderFor(p.Topic, pp.Partition)
							assert.NoError(t, c.MoveTopicPartition(p.Topic, pp.Partition, other(leader)))
						}
					}
				})
			},
		},
		{
			name: "all leaders shuffled mid-pass",
			during: func(t *testing.T, c *kfake.Cluster, p *synctest.Pipeline) {
				fiControlNth(c, p.Topic, []int{3, 8}, func(int, *kmsg.ProduceRequest) { c.ShufflePartitionLeaders() })
			},
		},
		{
			name: "the broker being written removed mid-pass, then added back with its id",
			during: func(t *testing.T, c *kfake.Cluster, p *synctest.Pipeline) {
				fiControlNth(c, p.Topic, []int{4}, func(int, *kmsg.ProduceRequest) {
					node := c.CurrentNode()
					assert.NoError(t, c.RemoveNode(node))
					t.Logf("node %d removed", node)
				})
			},
			between: func(t *testing.T, c *kfake.Cluster, p *synctest.Pipeline) {
				for node := int32(0); node < brokers; node++ {
					if _, _, err := c.AddNode(node, 0); err == nil {
						t.Logf("node %d added back on a new port", node)
					}
				}
			},
		},
		{
			name: "a broker removed between passes, a new one added mid-pass",
			between: func(t *testing.T, c *kfake.Cluster, p *synctest.Pipeline) {
				require.NoError(t, c.RemoveNode(c.LeaderFor(p.Topic, 0)))
				fiControlNth(c, p.Topic, []int{2}, func(int, *kmsg.ProduceRequest) {
					id, port, err := c.AddNode(-1, 0)
					assert.NoError(t, err)
					t.Logf("node %d added on port %d", id, port)
				})
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			tg := kafkatest.NewFake(t, kfake.NumBrokers(brokers))
			p := fiPipeline(t, tg, partitions)
			if c.during != nil {
				c.during(t, tg.Fake, p)
			}
			failed := fiSyncUntilOK(t, p.Syncer, 10)
			expected := fiRecords
			if c.between != nil {
				c.between(t, tg.Fake, p)
				expected += len(p.API.Update(120)) + len(p.API.Insert(40))
				failed = append(failed, fiSyncUntilOK(t, p.Syncer, 10)...)
			}
			p.RequireInSync(t)
			_, n := p.Latest(t)
			dups := n - expected
			t.Logf("%d failed passes; %d messages for %d record versions: %d duplicates; %s",
				len(failed), n, expected, dups, time.Since(start).Round(time.Millisecond))
			for _, err := range failed {
				assert.ErrorIs(t, err, producer.ErrProduce, "only produces fail: %v", err)
			}
			assert.GreaterOrEqual(t, dups, 0)
			assert.LessOrEqual(t, dups, len(failed)*fiBatchMax, "at most one batch re-sent per failed pass")
		})
	}
}

// fiHold holds the holdAt-th produce request to the data topic inside kfake (the broker has
// read it but not applied it) until release is closed; applied is closed once kfake handles it.
type fiHold struct {
	mu          sync.Mutex
	n           int
	held        kmsg.Request
	release     chan struct{}
	releaseOnce sync.Once
	applied     chan struct{}
	appliedOnce sync.Once
}

// Release lets the held request go on.
func (h *fiHold) Release() { h.releaseOnce.Do(func() { close(h.release) }) }

func fiHoldProduce(t *testing.T, c *kfake.Cluster, topic string, holdAt int, onNext func(h *fiHold)) *fiHold {
	h := &fiHold{release: make(chan struct{}), applied: make(chan struct{})}
	t.Cleanup(h.Release) // before the cluster closes
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if ok, _ := fiWrites(r, topic); !ok {
			return nil, nil, false
		}
		h.mu.Lock()
		h.n++
		n := h.n
		if n == holdAt {
			h.held = r
		}
		h.mu.Unlock()
		switch {
		case n == holdAt:
			c.SleepControl(func() { <-h.release })
		case n == holdAt+1 && onNext != nil:
			onNext(h)
		}
		return nil, nil, false
	})
	// An observer sees the held request when kfake finally handles it.
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Observe: true, Count: -1, When: func(r kmsg.Request) bool {
		h.mu.Lock()
		held := h.held
		h.mu.Unlock()
		if held != nil && r == held {
			h.appliedOnce.Do(func() { close(h.applied) })
		}
		return true
	}})
	return h
}

// logWriter sends a Syncer's log lines to the test log and keeps them.
type logWriter struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.lines = append(w.lines, strings.TrimRight(string(b), "\n"))
	w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestProduceHangingPastWriteTimeout holds the produce of the third batch inside the broker
// past the Syncer's WriteTimeout. The pass fails with ErrProduce; kafka-go times the request out
// on its side and retries the batch on a new connection, which succeeds. The held request is the
// danger: if it is applied after a later pass committed a cursor past it, its old values become
// the latest in the topic. The test updates some ids of that batch in the API between the
// passes, so a late old copy shows as stale ids.
//
// The Syncer's WriteTimeout is 300 ms and kafka-go's per-request WriteTimeout 1 s (defaults: 1 m
// and 10 s; shorter here only to keep the test fast).
func TestProduceHangingPastWriteTimeout(t *testing.T) {
	cases := []struct {
		name string
		// releaseOnRetry releases the held request when kafka-go's retry of the batch arrives,
		// i.e. while the Syncer's writer.Close is still waiting for kafka-go; otherwise it is
		// released only after the next pass committed.
		releaseOnRetry bool
	}{
		{name: "released while kafka-go still retries the batch", releaseOnRetry: true},
		{name: "released after the next pass committed past it", releaseOnRetry: false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg := kafkatest.NewFake(t)
			p := fiPipeline(t, tg, 1)
			const holdAt = 3
			var onNext func(h *fiHold)
			if c.releaseOnRetry {
				onNext = func(h *fiHold) {
					h.Release()
					// Let the held request be handled before the retry is: the retry's answer is
					// what ends kafka-go's attempts and so the writer's Close.
					tg.Fake.SleepControl(func() { <-h.applied })
				}
			}
			h := fiHoldProduce(t, tg.Fake, p.Topic, holdAt, onNext)

			client := tg.Client(t)
			src, err := producer.NewSource(producer.SourceConfig{URL: p.URL, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
			require.NoError(t, err)
			logs := &logWriter{t: t}
			s, err := producer.New(producer.Config{
				Pipeline: p.Name, Source: src, Topic: p.Topic, Store: p.Store, Codec: p.Codec,
				BatchRecords: fiBatch, WriteTimeout: 300 * time.Millisecond,
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
				NewWriter: func() *kafka.Writer {
					w := producer.NewWriter(client, fiBatch)
					w.WriteTimeout = time.Second
					return w
				},
			})
			require.NoError(t, err)
			t.Cleanup(func() { s.Close() })

			start := time.Now()
			_, err = s.Sync(t.Context())
			took := time.Since(start)
			t.Logf("pass 1 (%s): %v", took.Round(time.Millisecond), err)
			require.ErrorIs(t, err, producer.ErrProduce)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Regexp(t, batchErrRE, err.Error())
			assert.True(t, producer.IsRetryable(err))
			assert.GreaterOrEqual(t, took, time.Second, "the failed pass waited for kafka-go's in-flight attempt (Close)")

			after := fiRead(t, p)
			uncovered := requireCursorBehindData(t, p, after)
			assert.EqualValues(t, holdAt-1, after.cursor.Seq, "no cursor for the held batch")
			require.NotEmpty(t, uncovered, "kafka-go's retry of the batch was written")
			if c.releaseOnRetry {
				select {
				case <-h.applied:
				default:
					t.Fatal("the held request was not handled before the failed pass returned")
				}
			}

			// Change some ids of the held batch, then sync again: the new values must stay the
			// latest ones.
			updated, err := p.API.UpdateIDs(uncovered[:10]...)
			require.NoError(t, err)
			_, err = s.Sync(t.Context())
			require.NoError(t, err)
			committed := fiRead(t, p)
			require.Greater(t, committed.cursor.Seq, after.cursor.Seq)

			if !c.releaseOnRetry {
				h.Release()
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				select {
				case <-h.applied:
				case <-ctx.Done():
					t.Fatal("kfake never handled the released request")
				}
			}
			msgs := kafkatest.ReadAll(t, tg, p.Topic)
			want := p.Expected(t)
			last := map[string]kafkatest.Message{}
			for _, m := range msgs {
				last[string(m.Key)] = m
			}
			var stale []string
			for _, u := range updated {
				m := last[u.ID]
				got, err := p.Codec.Decode(m.Value)
				require.NoError(t, err)
				if !got.UpdatedAt.Equal(want[u.ID].UpdatedAt) {
					stale = append(stale, fmt.Sprintf("%s (offset %d holds updatedAt %s, the API %s)", u.ID, m.Offset,
						got.UpdatedAt.Format(cursor.TimeLayout), want[u.ID].UpdatedAt.Format(cursor.TimeLayout)))
				}
			}
			assert.Empty(t, stale, "a copy of the failed batch landed after pass 2 committed cursor seq %d past it (%d messages in the topic then, %d now): "+
				"its old values overwrite the updates", committed.cursor.Seq, committed.messages, len(msgs))
			p.RequireInSync(t)
			t.Logf("%d messages for %d record versions: %d duplicates", len(msgs), fiRecords+len(updated), len(msgs)-fiRecords-len(updated))
		})
	}
}
