package pipeline_test

// Fault injection on kfake (the fast tier): what a pass does when Kafka answers a produce with
// an error, acknowledges a write it refused, moves partition leaders or holds a produce past the
// write timeout. Every case ends the same way: the fault is removed, the next pass runs, and the
// topic's latest value per id must equal the API (nothing lost) with the duplicates the fault
// explains and no more.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	produceapi "github.com/segmentio/kafka-go/protocol/produce"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/pipelinetest"
	keysetkafka "github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/source"
)

const (
	fiRecords = 3000
	fiPage    = 50
	fiBatch   = 100
	// A sync batch is BatchRecords plus less than one page.
	fiBatchMax = fiBatch + fiPage
	// fiInFlight is the pipelined setting the tests use besides one batch at a time.
	fiInFlight = 4
)

// fiBatchErrRE is how a produce or commit error names its batch.
var fiBatchErrRE = regexp.MustCompile(`batch of \d+ records up to updatedAt \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)

// fiClock is the playground's clock: updates happen at its second, and fiChange advances it so
// that no second gets more updates than a page holds (a wider tie is an API limitation, see
// TestTieWiderThanAPageIsCountedNotSilent, not what these tests are about).
type fiClock struct{ unix atomic.Int64 }

func (c *fiClock) now() time.Time { return time.Unix(c.unix.Load(), 0).UTC() }

type fiOptions struct {
	partitions  int
	maxInFlight int
	exactlyOnce bool
}

func fiPipeline(t *testing.T, tg kafkatest.Target, o fiOptions) (*pipelinetest.Env, *fiClock) {
	clock := &fiClock{}
	clock.unix.Store(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).Unix())
	p := pipelinetest.New(t, tg, pipelinetest.Options{
		Playground:   playground.Config{Records: fiRecords, PageSize: fiPage, Seed: 31, Clock: clock.now},
		BatchRecords: fiBatch, Partitions: o.partitions, MaxInFlight: o.maxInFlight, ExactlyOnce: o.exactlyOnce,
	})
	return p, clock
}

// fiChange updates `updates` random records and inserts `inserts` new ones, at most 25 per
// second of the playground's clock, and returns how many distinct ids changed: the messages the
// next successful pass sends.
func fiChange(p *pipelinetest.Env, clock *fiClock, updates, inserts int) int {
	ids := map[string]bool{}
	for updates > 0 || inserts > 0 {
		clock.unix.Add(1)
		u, i := min(updates, 20), min(inserts, 5)
		for _, r := range append(p.API.Update(u), p.API.Insert(i)...) {
			ids[r.ID] = true
		}
		updates, inserts = updates-u, inserts-i
	}
	clock.unix.Add(1)
	return len(ids)
}

// fiWrites reports whether a produce request writes to topic.
func fiWrites(r kmsg.Request, topic string) bool {
	if req, ok := r.(*kmsg.ProduceRequest); ok {
		for _, tp := range req.Topics {
			if tp.Topic == topic {
				return true
			}
		}
	}
	return false
}

// fiKeys returns the keys of the records a produce request writes to topic.
func fiKeys(r kmsg.Request, topic string) []string {
	req, ok := r.(*kmsg.ProduceRequest)
	if !ok {
		return nil
	}
	var keys []string
	for _, tp := range req.Topics {
		if tp.Topic != topic {
			continue
		}
		for _, p := range tp.Partitions {
			var b kmsg.RecordBatch
			if err := b.ReadFrom(p.Records); err != nil || b.Attributes&0x07 != 0 {
				continue // not a batch we can read uncompressed
			}
			recs := b.Records
			for i := int32(0); i < b.NumRecords; i++ {
				l, n := binary.Varint(recs)
				if n <= 0 || int(l)+n > len(recs) {
					break
				}
				var rec kmsg.Record
				if err := rec.ReadFrom(recs[:n+int(l)]); err == nil {
					keys = append(keys, string(rec.Key))
				}
				recs = recs[n+int(l):]
			}
		}
	}
	return keys
}

// fiKafkaCodes returns the Kafka error codes inside err (through kafka.WriteErrors, which has no
// Unwrap).
func fiKafkaCodes(err error) []kafka.Error {
	var out []kafka.Error
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			var ke kafka.Error
			if errors.As(e, &ke) && !fiContainsCode(out, ke) {
				out = append(out, ke)
			}
		}
	}
	var ke kafka.Error
	if errors.As(err, &ke) && !fiContainsCode(out, ke) {
		out = append(out, ke)
	}
	return out
}

func fiContainsCode(s []kafka.Error, e kafka.Error) bool {
	for _, x := range s {
		if x == e {
			return true
		}
	}
	return false
}

// fiShort keeps a logged error readable: kafka.WriteErrors repeats its text once per message.
func fiShort(err error) string {
	if err == nil {
		return "<nil>"
	}
	s := err.Error()
	if len(s) > 600 {
		return fmt.Sprintf("%s... (%d chars in all)", s[:600], len(s))
	}
	return s
}

// fiState is what the topic and the cursor hold after a pass.
type fiState struct {
	messages int
	ids      map[string]int // id -> copies
	cursor   cursor.Cursor
	hasCur   bool
}

func fiRead(t *testing.T, p *pipelinetest.Env) fiState {
	t.Helper()
	st := fiState{ids: map[string]int{}}
	for _, m := range kafkatest.ReadAll(t, p.Target, p.Topic) {
		st.messages++
		st.ids[string(m.Key)]++
	}
	// The cursor as the store would load it (highest seq wins), read with a fresh client: the
	// store's own may hold stale metadata while leaders move.
	for _, m := range kafkatest.ReadAll(t, p.Target, p.CursorTopic) {
		if string(m.Key) != p.Name || m.Value == nil {
			continue
		}
		c, err := cursor.Unmarshal(m.Value)
		require.NoError(t, err, "cursor at offset %d", m.Offset)
		if !st.hasCur || c.Seq >= st.cursor.Seq {
			st.cursor, st.hasCur = c, true
		}
	}
	return st
}

// requireCursorBehindData checks that every API record the cursor covers is in the topic and
// that the cursor counts exactly those. It returns the ids the cursor covers and the ids in the
// topic it does not cover.
func requireCursorBehindData(t *testing.T, p *pipelinetest.Env, st fiState) (covered map[string]bool, uncovered []string) {
	t.Helper()
	covered = map[string]bool{}
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
	return covered, uncovered
}

// fiFaultLog records, from a fault's When (on the cluster goroutine), the ids of every data
// request it answered and how many records of them Kafka stored anyway.
type fiFaultLog struct {
	mu     sync.Mutex
	seen   map[kmsg.Request]bool
	ids    map[string]bool
	landed int // records in faulted requests that the broker applied (after-append codes)
}

// TestProduceFaults injects one Kafka error per case into the produce requests of the data topic
// or of the cursor topic, after okRequests of them went through, with one batch in flight and
// with the pipeline's pipelining (several batches in flight).
func TestProduceFaults(t *testing.T) {
	type outcome int
	const (
		passes      outcome = iota // kafka-go retries it away inside its writer
		failProduce                // ErrProduce
		failCommit                 // ErrCommit
	)
	cases := []struct {
		name       string
		cursorTop  bool        // fault the cursor topic instead of the data topic
		err        *kerr.Error // the code answered
		count      int         // requests answered with it (-1: until removed)
		okRequests int         // requests to that topic let through first
		want       outcome
		retryable  bool
		// lands: the broker applies the write although it answers the error
		// (NOT_ENOUGH_REPLICAS_AFTER_APPEND, and REQUEST_TIMED_OUT on produce).
		lands bool
	}{
		{name: "NOT_LEADER_OR_FOLLOWER twice", err: kerr.NotLeaderForPartition, count: 2, okRequests: 2, want: passes, retryable: true},
		{name: "NOT_ENOUGH_REPLICAS twice", err: kerr.NotEnoughReplicas, count: 2, okRequests: 2, want: passes, retryable: true},
		{name: "REQUEST_TIMED_OUT twice", err: kerr.RequestTimedOut, count: 2, okRequests: 2, want: passes, retryable: true, lands: true},
		{name: "NOT_ENOUGH_REPLICAS_AFTER_APPEND once", err: kerr.NotEnoughReplicasAfterAppend, count: 1, okRequests: 2, want: passes, retryable: true, lands: true},
		{name: "NOT_LEADER_OR_FOLLOWER outlasting kafka-go's attempts", err: kerr.NotLeaderForPartition, count: -1, okRequests: 2, want: failProduce, retryable: true},
		{name: "NOT_ENOUGH_REPLICAS_AFTER_APPEND outlasting kafka-go's attempts", err: kerr.NotEnoughReplicasAfterAppend, count: -1, okRequests: 2, want: failProduce, retryable: true, lands: true},
		{name: "MESSAGE_TOO_LARGE", err: kerr.MessageTooLarge, count: -1, okRequests: 2, want: failProduce},
		{name: "INVALID_RECORD", err: kerr.InvalidRecord, count: -1, okRequests: 2, want: failProduce},
		{name: "MESSAGE_TOO_LARGE on the first request", err: kerr.MessageTooLarge, count: -1, okRequests: 0, want: failProduce},
		{name: "cursor topic NOT_LEADER_OR_FOLLOWER", cursorTop: true, err: kerr.NotLeaderForPartition, count: -1, okRequests: 1, want: failCommit, retryable: true},
		{name: "cursor topic TOPIC_AUTHORIZATION_FAILED", cursorTop: true, err: kerr.TopicAuthorizationFailed, count: -1, okRequests: 1, want: failCommit},
		{name: "cursor topic REQUEST_TIMED_OUT", cursorTop: true, err: kerr.RequestTimedOut, count: -1, okRequests: 1, want: failCommit, retryable: true, lands: true},
	}
	for _, inFlight := range []int{1, fiInFlight} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("in flight %d/%s", inFlight, c.name), func(t *testing.T) {
				t.Parallel() // each case has its own cluster; most of the time is kafka-go's backoff
				tg := kafkatest.NewFake(t)
				p, _ := fiPipeline(t, tg, fiOptions{maxInFlight: inFlight})
				top := p.Topic
				if c.cursorTop {
					top = p.CursorTopic
				}
				fl := &fiFaultLog{seen: map[kmsg.Request]bool{}, ids: map[string]bool{}}
				h := tg.Fake.Fault(kfake.Fault{
					Keys: []kmsg.Key{kmsg.Produce}, Topic: top, Err: c.err, Count: c.count,
					When: func(r kmsg.Request) bool { // on the cluster goroutine, maybe more than once per request
						fl.mu.Lock()
						defer fl.mu.Unlock()
						if !fl.seen[r] {
							fl.seen[r] = true
							if len(fl.seen) > c.okRequests {
								keys := fiKeys(r, p.Topic)
								for _, k := range keys {
									fl.ids[k] = true
								}
								if c.lands {
									fl.landed += len(keys)
								}
							}
						}
						return len(fl.seen) > c.okRequests
					},
				})
				start := time.Now()
				st1, err := p.Pipeline.Pass(t.Context())
				took := time.Since(start)
				hits := h.Hits()
				h.Remove()
				fl.mu.Lock()
				landed, faultedIDs := fl.landed, len(fl.ids)
				fl.mu.Unlock()

				after := fiRead(t, p)
				covered, uncovered := requireCursorBehindData(t, p, after)
				beyond := after.messages - int(after.cursor.Records) // written but not covered by the cursor
				t.Logf("pass 1 (%s): err=%s", took.Round(time.Millisecond), fiShort(err))
				t.Logf("pass 1: %d requests answered %s (%d records of them stored anyway); %d messages, cursor seq %d covers %d records; %d messages (%d ids) beyond it",
					hits, c.err.Message, landed, after.messages, after.cursor.Seq, after.cursor.Records, beyond, len(uncovered))
				require.Positive(t, hits, "the fault was never hit")

				switch c.want {
				case passes:
					if err != nil {
						// Not expected with Count 2 against kafka-go's 5 attempts, but allowed.
						t.Logf("NOTE: kafka-go did not retry %s away: %v", c.err.Message, err)
						require.ErrorIs(t, err, pipeline.ErrProduce)
						require.True(t, retry.IsRetryable(err), "%v", err)
					} else {
						assert.Equal(t, fiRecords, st1.Produced)
						assert.Empty(t, uncovered)
						assert.Equal(t, landed, beyond, "the only extra messages are the attempts Kafka stored but refused")
					}
				case failProduce, failCommit:
					sentinel, other := pipeline.ErrProduce, pipeline.ErrCommit
					if c.want == failCommit {
						sentinel, other = other, sentinel
					}
					require.ErrorIs(t, err, sentinel)
					assert.NotErrorIs(t, err, other)
					assert.Regexp(t, fiBatchErrRE, err.Error(), "the error names the batch")
					assert.Contains(t, fiKafkaCodes(err), kafka.Error(c.err.Code), "the error carries Kafka's code: %v", err)
					assert.Equal(t, c.retryable, retry.IsRetryable(err), "IsRetryable(%v)", err)
					assert.Less(t, len(err.Error()), 2000, "the error stays one readable line")
				}
				if c.want == failProduce {
					// No cursor past a refused batch: not one id of a faulted request is covered.
					require.Positive(t, faultedIDs)
					for id := range fl.ids {
						assert.False(t, covered[id], "the cursor (%s) covers %s of a request Kafka refused", after.cursor.LastUpdatedAt, id)
					}
					// Once a batch failed nothing more is produced: the faulted requests are the
					// batches in flight then, each tried up to kafka-go's 5 attempts.
					assert.LessOrEqual(t, faultedIDs, inFlight*fiBatchMax, "ids in refused requests: more batches were produced after the first failure than were in flight")
					if c.lands {
						assert.Positive(t, landed, "the refused-but-written attempts are in the topic")
					} else {
						assert.Zero(t, landed)
					}
					if inFlight == 1 {
						assert.EqualValues(t, c.okRequests, after.cursor.Seq, "one batch per request: the cursor stops at the last acknowledged one")
						assert.Equal(t, landed, beyond, "nothing else was written past the cursor")
					}
				}
				if c.want == failCommit {
					if c.lands {
						// The broker stored the cursor it answered REQUEST_TIMED_OUT for: the next
						// pass starts from it.
						assert.EqualValues(t, c.okRequests+1, after.cursor.Seq, "the commit reported failed was stored")
					} else {
						assert.EqualValues(t, c.okRequests, after.cursor.Seq)
						assert.NotEmpty(t, uncovered, "the batch was written, its cursor not")
					}
					if inFlight == 1 && c.lands {
						assert.Zero(t, beyond)
					}
				}
				// What can be re-sent: what Kafka stored while refusing it, plus batches that were
				// acknowledged but not committed: at most one per batch in flight.
				assert.LessOrEqual(t, beyond-landed, inFlight*fiBatchMax, "acknowledged but uncommitted: at most %d batches", inFlight)

				// Recovery: the fault is gone; the next pass resumes from the committed cursor.
				_, err = p.Pipeline.Pass(t.Context())
				require.NoError(t, err)
				p.RequireInSync(t)
				_, n := p.Latest(t)
				dups := n - fiRecords
				t.Logf("after recovery: %d messages for %d records: %d duplicates (%d stored while refused, %d acknowledged but uncommitted)",
					n, fiRecords, dups, landed, dups-landed)
				assert.Equal(t, beyond, dups, "the next pass re-sends exactly what the cursor did not cover")
			})
		}
	}
}

// fiSyncUntilOK runs passes until one succeeds, as `keysetsync once` does within
// --retry-timeout; every failed pass must be retryable. It returns the errors of the failed
// passes and how many messages they wrote that their cursor does not cover (what the next pass
// re-sends).
func fiSyncUntilOK(t *testing.T, p *pipelinetest.Env, maxPasses int) (failed []error, beyond int) {
	t.Helper()
	before := fiRead(t, p)
	for i := 1; i <= maxPasses; i++ {
		start := time.Now()
		st, err := p.Pipeline.Pass(t.Context())
		require.Zero(t, st.TieOverflows, "the test must not make ties wider than a page")
		if err == nil {
			return failed, beyond
		}
		after := fiRead(t, p)
		b := (after.messages - before.messages) - int(after.cursor.Records-before.cursor.Records)
		t.Logf("pass failed after %s, %d messages written past its cursor: %s", time.Since(start).Round(time.Millisecond), b, fiShort(err))
		require.Truef(t, retry.IsRetryable(err), "a leader change must be retryable: %v", err)
		assert.LessOrEqual(t, b, fiInFlight*fiBatchMax, "at most one batch per batch in flight is written past the cursor")
		failed, beyond, before = append(failed, err), beyond+b, after
	}
	require.FailNowf(t, "no pass succeeded", "%d passes failed; last: %v", maxPasses, failed[len(failed)-1])
	return nil, 0
}

// fiControlNth runs fn (from a kfake control function, where cluster admin calls are allowed)
// on the nth produce requests to topic, with the request; the request then proceeds normally.
func fiControlNth(c *kfake.Cluster, topic string, nth []int, fn func(n int, r *kmsg.ProduceRequest)) {
	count := 0
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !fiWrites(r, topic) {
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
// new leader at its next periodic refresh (Transport.MetadataTTL, up to 6 s by default), so a
// pass may fail with a retryable error; a later pass must succeed, lose nothing, and re-send
// only what the failed passes wrote past their cursor.
func TestLeaderChangesLoseNothing(t *testing.T) {
	const brokers, partitions = 3, 3
	other := func(node int32) int32 { return (node + 1) % brokers }
	cases := []struct {
		name string
		// during installs controls before the first pass; between runs after it, before the
		// API changes and the second pass.
		during  func(t *testing.T, c *kfake.Cluster, p *pipelinetest.Env)
		between func(t *testing.T, c *kfake.Cluster, p *pipelinetest.Env)
		// atLeastOnceOnly: not run under exactly-once, where the transaction coordinator's
		// requests (AddPartitionsToTxn, EndTxn) go through kafka-go's cached broker addresses:
		// a broker back with its id on another port is unreachable to them (BROKER_NOT_AVAILABLE)
		// until kafka-go's next metadata refresh, up to 6 s, longer than fiSyncUntilOK's ten
		// passes in a row take here. In a pipeline the passes' own backoff outlasts it.
		atLeastOnceOnly bool
	}{
		{
			name: "every leader moved between passes",
			between: func(t *testing.T, c *kfake.Cluster, p *pipelinetest.Env) {
				for part := int32(0); part < partitions; part++ {
					require.NoError(t, c.MoveTopicPartition(p.Topic, part, other(c.LeaderFor(p.Topic, part))))
				}
				require.NoError(t, c.MoveTopicPartition(p.CursorTopic, 0, other(c.LeaderFor(p.CursorTopic, 0))))
			},
		},
		{
			name: "leaders shuffled between passes",
			between: func(t *testing.T, c *kfake.Cluster, p *pipelinetest.Env) {
				c.ShufflePartitionLeaders()
			},
		},
		{
			name: "leader of the partition being written moved mid-pass",
			during: func(t *testing.T, c *kfake.Cluster, p *pipelinetest.Env) {
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
			during: func(t *testing.T, c *kfake.Cluster, p *pipelinetest.Env) {
				fiControlNth(c, p.Topic, []int{3, 8}, func(int, *kmsg.ProduceRequest) { c.ShufflePartitionLeaders() })
			},
		},
		{
			name:            "the broker being written removed mid-pass, then added back with its id",
			atLeastOnceOnly: true,
			during: func(t *testing.T, c *kfake.Cluster, p *pipelinetest.Env) {
				fiControlNth(c, p.Topic, []int{4}, func(int, *kmsg.ProduceRequest) {
					node := c.CurrentNode()
					assert.NoError(t, c.RemoveNode(node))
					t.Logf("node %d removed", node)
				})
			},
			between: func(t *testing.T, c *kfake.Cluster, p *pipelinetest.Env) {
				for node := int32(0); node < brokers; node++ {
					if _, port, err := c.AddNode(node, 0); err == nil {
						t.Logf("node %d added back on port %d", node, port)
					}
				}
			},
		},
		{
			name: "a broker removed between passes, a new one added mid-pass",
			between: func(t *testing.T, c *kfake.Cluster, p *pipelinetest.Env) {
				node := c.LeaderFor(p.Topic, 0)
				require.NoError(t, c.RemoveNode(node))
				t.Logf("node %d removed", node)
				fiControlNth(c, p.Topic, []int{2}, func(int, *kmsg.ProduceRequest) {
					id, port, err := c.AddNode(-1, 0)
					assert.NoError(t, err)
					t.Logf("node %d added on port %d", id, port)
				})
			},
		},
	}
	// Both deliveries: the transactional producer keeps its partitions' leaders from one
	// transaction to the next, and must learn that they moved.
	for _, exactlyOnce := range []bool{false, true} {
		for _, c := range cases {
			name := c.name
			if exactlyOnce {
				if c.atLeastOnceOnly {
					continue
				}
				name += " (exactly-once)"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				start := time.Now()
				tg := kafkatest.NewFake(t, kfake.NumBrokers(brokers))
				p, clock := fiPipeline(t, tg, fiOptions{partitions: partitions, maxInFlight: fiInFlight, exactlyOnce: exactlyOnce})
				if c.during != nil {
					c.during(t, tg.Fake, p)
				}
				failed, beyond := fiSyncUntilOK(t, p, 10)
				changed := 0
				if c.between != nil {
					c.between(t, tg.Fake, p)
					changed = fiChange(p, clock, 120, 40)
					f, b := fiSyncUntilOK(t, p, 10)
					failed, beyond = append(failed, f...), beyond+b
				}
				p.RequireInSync(t)
				_, n := p.Latest(t)
				dups := n - fiRecords - changed
				t.Logf("%d failed passes; %d messages for %d records and %d changed ids: %d duplicates; %s",
					len(failed), n, fiRecords, changed, dups, time.Since(start).Round(time.Millisecond))
				if exactlyOnce {
					assert.Zero(t, dups, "exactly-once: every record version once (read_committed)")
					return
				}
				assert.Equal(t, beyond, dups, "duplicates are exactly what failed passes wrote past their cursor")
			})
		}
	}
}

// fiHold holds the holdAt-th produce request to the data topic inside kfake (the broker has
// read it but not applied it) until release is closed; applied is closed once kfake handles it.
type fiHold struct {
	mu          sync.Mutex
	n           int
	held        kmsg.Request
	keys        []string // of the held request
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
		if !fiWrites(r, topic) {
			return nil, nil, false
		}
		h.mu.Lock()
		h.n++
		n := h.n
		if n == holdAt {
			h.held, h.keys = r, fiKeys(r, topic)
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

// fiLogWriter sends a Pipeline's log lines to the test log and keeps them.
type fiLogWriter struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (w *fiLogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.lines = append(w.lines, strings.TrimRight(string(b), "\n"))
	w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// fiWriteTimeout is the pipeline's WriteTimeout in TestProduceHangingPastWriteTimeout: the bound
// under test, which the held batch always exceeds because the test holds it until the pipeline
// gave up on it. Every other batch must be acknowledged and committed within it, so it is far
// above what a kfake write takes under -race on a loaded machine: tens of milliseconds, up to
// about 400 ms with GOMAXPROCS=1 beside a busy loop (the test logs the slowest). The 300 ms it
// used to be was within that range.
const fiWriteTimeout = 5 * time.Second

// fiGiveUp is the data writer's transport in TestProduceHangingPastWriteTimeout: kafka-go's own,
// except that giveUp makes every produce to topic then in flight return context.DeadlineExceeded
// at once, as kafka-go's per-request timeout would, while the broker still holds the request.
// kafka-go then retries the batch on another connection. The test calls giveUp when the pipeline
// gave up on the batch, so the two timeouts come in that order by construction, not by the
// choice of their durations.
type fiGiveUp struct {
	kafka.RoundTripper
	topic string

	mu       sync.Mutex
	inFlight map[chan struct{}]bool
	gaveUp   int // requests given up on
	answered int // produce requests to topic answered without error after the first give-up
}

func (g *fiGiveUp) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	pr, ok := req.(*produceapi.Request)
	if !ok || !slices.ContainsFunc(pr.Topics, func(t produceapi.RequestTopic) bool { return t.Topic == g.topic }) {
		return g.RoundTripper.RoundTrip(ctx, addr, req)
	}
	abandon := make(chan struct{})
	g.mu.Lock()
	g.inFlight[abandon] = true
	g.mu.Unlock()
	type answer struct {
		res kafka.Response
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := g.RoundTripper.RoundTrip(ctx, addr, req)
		done <- answer{res, err}
	}()
	select {
	case a := <-done:
		g.mu.Lock()
		delete(g.inFlight, abandon)
		if a.err == nil && g.gaveUp > 0 {
			g.answered++
		}
		g.mu.Unlock()
		return a.res, a.err
	case <-abandon:
		// kafka-go cancels ctx when this returns, which ends the inner round trip.
		return nil, context.DeadlineExceeded
	}
}

// giveUp abandons the produce requests to topic in flight now; later ones are not affected.
func (g *fiGiveUp) giveUp() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.inFlight {
		close(c)
		delete(g.inFlight, c)
		g.gaveUp++
	}
}

func (g *fiGiveUp) counts() (gaveUp, answered int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gaveUp, g.answered
}

// fiTimeouts tells fiGiveUp when the pipeline gave up on a batch, and keeps the slowest
// acknowledgement and cursor commit of the batches that made it, to compare with the bound.
type fiTimeouts struct {
	pipeline.NopObserver
	onFailed func()

	mu                  sync.Mutex
	slowAck, slowCommit time.Duration
}

func (o *fiTimeouts) ProduceFailed(bool) { o.onFailed() }

func (o *fiTimeouts) BatchAcked(_, _ int, d time.Duration) {
	o.mu.Lock()
	o.slowAck = max(o.slowAck, d)
	o.mu.Unlock()
}

func (o *fiTimeouts) CursorCommitted(_ time.Time, d time.Duration) {
	o.mu.Lock()
	o.slowCommit = max(o.slowCommit, d)
	o.mu.Unlock()
}

// TestProduceHangingPastWriteTimeout holds the third produce request to the data topic inside
// the broker past the pipeline's WriteTimeout. The pass fails with ErrProduce; kafka-go's attempt
// is then abandoned as its own per-request timeout would abandon it (fiGiveUp), and kafka-go
// retries it on a new connection, which succeeds. The held request is the danger: if the broker
// applies it after a later pass committed a cursor past it, its old values become the latest in
// the topic. The test updates ids of the held request in the API between the passes, so a late
// old copy shows as stale ids.
//
// Nothing here waits for time: the held request is held until the pipeline gave up on it, and
// abandoned on the client side only then. The one duration is the pipeline's WriteTimeout, the
// bound under test (fiWriteTimeout).
func TestProduceHangingPastWriteTimeout(t *testing.T) {
	cases := []struct {
		name string
		// releaseOnRetry releases the held request when kafka-go's retry of it arrives, i.e.
		// while the pipeline's writer.Close still waits for kafka-go; otherwise it is released
		// only after the next pass committed.
		releaseOnRetry bool
	}{
		{name: "released while kafka-go still retries it", releaseOnRetry: true},
		{name: "released after the next pass committed past it (a zombie write: documented limit)", releaseOnRetry: false},
	}
	for _, inFlight := range []int{1, fiInFlight} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("in flight %d/%s", inFlight, c.name), func(t *testing.T) {
				tg := kafkatest.NewFake(t)
				p, clock := fiPipeline(t, tg, fiOptions{maxInFlight: inFlight})
				const holdAt = 3
				var onNext func(h *fiHold)
				if c.releaseOnRetry {
					onNext = func(h *fiHold) {
						h.Release()
						// Let the held request be handled before the retry is: the retry's answer
						// ends kafka-go's attempts and so the writer's Close.
						tg.Fake.SleepControl(func() { <-h.applied })
					}
				}
				h := fiHoldProduce(t, tg.Fake, p.Topic, holdAt, onNext)

				transport := &fiGiveUp{topic: p.Topic, inFlight: map[chan struct{}]bool{}}
				client := tg.KafkaConfig(t, keysetkafka.Config{WrapTransport: func(rt kafka.RoundTripper) kafka.RoundTripper {
					transport.RoundTripper = rt
					return transport
				}})
				observer := &fiTimeouts{onFailed: transport.giveUp}
				out, err := keysetkafka.NewSink(keysetkafka.SinkConfig{Client: client, BatchRecords: fiBatch})
				require.NoError(t, err)
				t.Cleanup(func() { out.Close() })
				src, err := source.NewSource(source.SourceConfig{URL: p.URL, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
				require.NoError(t, err)
				s, err := pipeline.New(pipeline.Config{
					Pipeline: p.Name, Source: src, Topic: p.Topic, Store: p.Store, Codec: p.Codec,
					BatchRecords: fiBatch, MaxInFlight: inFlight, WriteTimeout: fiWriteTimeout, Observer: observer,
					Logger: slog.New(slog.NewTextHandler(&fiLogWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
					Sink:   out,
				})
				require.NoError(t, err)

				start := time.Now()
				_, err = s.Pass(t.Context())
				gaveUp, answered := transport.counts()
				observer.mu.Lock()
				t.Logf("pass 1 (%s): %s; slowest acknowledgement %s and cursor commit %s of the other batches (bound %s)", time.Since(start).Round(time.Millisecond),
					fiShort(err), observer.slowAck.Round(time.Millisecond), observer.slowCommit.Round(time.Millisecond), fiWriteTimeout)
				observer.mu.Unlock()
				require.ErrorIs(t, err, pipeline.ErrProduce)
				require.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Contains(t, err.Error(), "not acknowledged within "+fiWriteTimeout.String())
				assert.Regexp(t, fiBatchErrRE, err.Error())
				assert.True(t, retry.IsRetryable(err))
				assert.Equal(t, 1, gaveUp, "the held request was the one produce in flight when the pipeline gave up")
				assert.Positive(t, answered, "the failed pass waited for kafka-go's retry of the held batch (writer.Close)")

				h.mu.Lock()
				held := slices.Clone(h.keys)
				h.mu.Unlock()
				sort.Strings(held)
				require.GreaterOrEqual(t, len(held), 10, "the held request carries records")
				after := fiRead(t, p)
				covered, uncovered := requireCursorBehindData(t, p, after)
				for _, id := range held {
					require.False(t, covered[id], "the cursor covers %s of the held request", id)
				}
				assert.Subset(t, uncovered, held, "no cursor covers the held request's records")
				if inFlight == 1 {
					assert.EqualValues(t, holdAt-1, after.cursor.Seq)
				}
				if c.releaseOnRetry {
					select {
					case <-h.applied:
					default:
						t.Fatal("the held request was not handled before the failed pass returned")
					}
				}

				// Change ids of the held request, then sync again: the new values must stay the
				// latest ones.
				clock.unix.Add(1)
				updated, err := p.API.UpdateIDs(held[:10]...)
				require.NoError(t, err)
				_, err = s.Pass(t.Context())
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
				if !c.releaseOnRetry {
					// The documented limit ("What does not hold" in the README): a request the
					// broker holds past kafka-go's own timeout lands after the next pass committed
					// past it, and only a fenced producer could refuse it. Its damage is exactly
					// the ids of that request changed in between: they are stale, as verify would
					// report, until they change again.
					assert.Len(t, stale, len(updated), "every id of the held request updated in between is stale, no other: %v", stale)
					clock.unix.Add(1)
					_, err = p.API.UpdateIDs(held[:10]...)
					require.NoError(t, err)
					_, err = s.Pass(t.Context())
					require.NoError(t, err)
					p.RequireInSync(t)
					return
				}
				assert.Empty(t, stale, "the held copy of a failed batch landed after pass 2 committed cursor seq %d past it "+
					"(%d messages in the topic then, %d now): its old values overwrite the updates", committed.cursor.Seq, committed.messages, len(msgs))
				p.RequireInSync(t)
				t.Logf("%d messages for %d records and %d updates: %d duplicates", len(msgs), fiRecords, len(updated), len(msgs)-fiRecords-len(updated))
			})
		}
	}
}
