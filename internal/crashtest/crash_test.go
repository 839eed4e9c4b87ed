//go:build unix

package crashtest

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/proctest"
	"github.com/keysetsync/keysetsync/playground"
)

// defaultKills is the number of SIGKILLs per Kafka target of the serial mode of the default
// suite (13 rounds of the four kill points); the other modes do half as many.
const defaultKills = 52

// killsWanted is defaultKills, or KEYSETSYNC_CRASH_KILLS for a long run.
func killsWanted(t *testing.T) int {
	v := os.Getenv("KEYSETSYNC_CRASH_KILLS")
	if v == "" {
		return defaultKills
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "KEYSETSYNC_CRASH_KILLS")
	require.Positive(t, n, "KEYSETSYNC_CRASH_KILLS")
	return n
}

// killPoint is the nth occurrence, within one run, of the log line msg.
//
// By default the binary is killed delay after the line is read (0: at once). A kill right
// after "producing batch" tends to land before the writer sent anything (it lingers a couple of
// milliseconds), and one right after "batch acknowledged" before the cursor is sent; small
// delays put some of them while the request is in flight or just after Kafka stored it. The
// delays only choose where the crash hits; nothing waits on them.
//
// On kfake the produce and acknowledged kill points are exact instead: the broker kills the
// binary when its nth data produce request (producing batch) or nth cursor write (batch
// acknowledged) of the run arrives, then stores the request (store) or drops it. Exactly-once,
// the cursor is written in the batch's transaction, and "batch acknowledged" comes once the
// transaction committed: its exact kill point is the nth EndTxn(commit), which the broker then
// applies (store: committed, the binary never hears back) or drops (the transaction stays
// open until the next run aborts it).
type killPoint struct {
	msg   string
	n     int
	delay time.Duration
	store bool
}

func (kp killPoint) describe(trapped, exactlyOnce bool) string {
	s := fmt.Sprintf("%q #%d", kp.msg, kp.n)
	switch {
	case trapped && exactlyOnce && kp.msg == msgAcked && kp.store:
		s = fmt.Sprintf("EndTxn(commit) #%d (killed at the broker, transaction committed)", kp.n)
	case trapped && exactlyOnce && kp.msg == msgAcked:
		s = fmt.Sprintf("EndTxn(commit) #%d (killed at the broker, request dropped)", kp.n)
	case trapped && kp.store:
		s += " (killed at the broker, request stored)"
	case trapped:
		s += " (killed at the broker, request dropped)"
	case kp.delay > 0:
		s += fmt.Sprintf(" +%v", kp.delay)
	}
	return s
}

// killPoints returns the i-th kill point: the four kinds in turn, each going through every
// occurrence number of ns (shifted per kind, so the kinds do not move in lockstep).
func killPoints(i int) killPoint {
	kinds := []string{msgFetch, msgProduce, msgAcked, msgCommitted}
	ns := []int{1, 2, 4, 7, 3, 1, 5, 2, 9, 6, 1, 3}
	delays := []time.Duration{0, 2 * time.Millisecond, 0, 1 * time.Millisecond, 4 * time.Millisecond}
	kind, round := i%len(kinds), i/len(kinds)
	kp := killPoint{msg: kinds[kind], n: ns[(round+kind)%len(ns)], store: round%2 == 1}
	if kp.msg == msgProduce || kp.msg == msgAcked {
		kp.delay = delays[round%len(delays)]
	}
	return kp
}

// crashConfig is the playground of the crash test: enough records that most kill points fall
// in the middle of a catch-up, with ties and updates racing the cursor.
func crashConfig(kills int) playground.Config {
	return playground.Config{
		Records:          min(max(3000, kills*150), 200_000),
		PageSize:         playgroundPage,
		TieWidth:         5,
		UpdatesPerSecond: updatesPerSecond,
		Seed:             uint64(kills),
		// An API that takes a moment to answer, as real ones do: passes far behind it then
		// backfill in parallel (one that answers at once leaves them sequential).
		Latency: 2 * time.Millisecond,
	}
}

// kill is the outcome of runUntilKilled.
type kill struct {
	killed bool // false: the run ended on its own (exit status 0)
	// reached: the run printed the kill point's line (always when killed). A run that reached
	// it and still ended on its own finished what it had left before the signal landed.
	reached bool
	trapped bool // killed at the broker (kfake)
	records int  // records of the batch named by the kill point's log line (produce, acknowledged)
}

// runUntilKilled runs `once` and SIGKILLs it at kp.
func (h *harness) runUntilKilled(t *testing.T, kp killPoint) kill {
	t.Helper()
	var tr *trap
	if h.tg.Fake != nil && (kp.msg == msgProduce || kp.msg == msgAcked) {
		tr = &trap{topic: h.topic, n: kp.n, store: kp.store, fire: func(p *proctest.Proc) { _ = p.Kill() }}
		switch {
		case kp.msg == msgAcked && h.exactlyOnce:
			tr.topic, tr.endTxn = "", true
		case kp.msg == msgAcked:
			tr.topic = h.cursorTopic
		}
	}
	h.arm(tr)
	defer h.arm(nil)
	seen, killed, records := 0, false, 0
	p := proctest.Start(t, h.bin, h.syncArgs("once"), proctest.Options{OnLine: func(p *proctest.Proc, line string) {
		if !isMsg(line, kp.msg) {
			return
		}
		if seen++; seen != kp.n {
			return
		}
		records = intField(line, "records")
		if tr != nil {
			return // the broker kills it
		}
		killed = true
		if kp.delay == 0 {
			_ = p.Kill()
		} else {
			time.AfterFunc(kp.delay, func() { _ = p.Kill() })
		}
	}})
	h.armed(p)
	st := p.Wait(t, runTimeout)
	h.note(p)
	// The reading goroutine wrote seen, killed and records before wait returned.
	if tr != nil {
		h.trapMu.Lock()
		killed = tr.fired
		h.trapMu.Unlock()
		if killed {
			// The log line comes before its request; the cursor writes are one at a time, and
			// so are the data writes with one batch in flight. Several in flight may share a
			// request. Exactly-once, "batch acknowledged" follows its EndTxn's answer.
			switch {
			case tr.endTxn:
				require.Less(t, seen, kp.n, "log lines %q when the broker got EndTxn(commit) #%d:\n%s", kp.msg, kp.n, p.Tail(10))
			case kp.msg == msgAcked || h.inFlight == 1:
				require.Equal(t, kp.n, seen, "log lines %q when the broker got request #%d:\n%s", kp.msg, kp.n, p.Tail(10))
			default:
				require.GreaterOrEqual(t, seen, kp.n, "log lines %q when the broker got request #%d:\n%s", kp.msg, kp.n, p.Tail(10))
			}
		}
	}
	if st.ExitCode() == 0 {
		if tr != nil {
			require.False(t, killed, "the broker killed the binary but it exited 0:\n%s", p.Tail(10))
			if kp.msg == msgAcked || h.inFlight == 1 {
				require.Less(t, seen, kp.n, "the run printed %q #%d but the broker got no such request:\n%s", kp.msg, kp.n, p.Tail(10))
			}
		}
		// Finished before the kill point, or (reached) the kill came after its exit. A trap
		// that did not fire was not reached: with several batches in flight the line can come
		// without a request of its own.
		return kill{reached: tr == nil && seen >= kp.n}
	}
	ws, _ := st.Sys().(syscall.WaitStatus)
	require.True(t, killed && ws.Signaled() && ws.Signal() == syscall.SIGKILL,
		"once failed on its own (%v) while waiting for %v; stderr ends with:\n%s", st, kp.describe(tr != nil, h.exactlyOnce), p.Tail(30))
	return kill{killed: true, reached: true, trapped: tr != nil, records: records}
}

// intField returns the integer value of key=... in a log line, or -1.
func intField(line, key string) int {
	_, rest, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return -1
	}
	v, _, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// maxAttempts bounds the runs spent on one kill point that the runs keep finishing before the
// signal lands: a guard against a loop, far above what a loaded machine causes (a run has a
// broker round trip or two left after the line; the signal is sent on reading it).
const maxAttempts = 20

// maxBatch bounds the records of one batch: a batch is cut once it holds batchRecords, after
// adding a page of at most playgroundPage.
const maxBatch = batchRecords + playgroundPage

// TestCrashRecovery SIGKILLs `keysetsync once` over and over at chosen points of the sync loop
// and requires that no record is lost and that the cursor is never ahead of the data.
// Exactly-once (the default), a read_committed reader must see, after every kill, exactly the
// messages the committed cursor counts, and at the end no record version twice, also with two
// consumers that are not ours (librdkafka, Kafka's console consumer). At-least-once, each crash
// may re-send at most the batches that were in flight: one with --max-in-flight 1.
func TestCrashRecovery(t *testing.T) {
	bin := proctest.BuildBinary(t)
	kills := killsWanted(t)
	modes := []struct {
		name     string
		flags    []string
		inFlight int // batches produced and not committed at once: --max-in-flight
		kills    int
	}{
		// Several batches in flight, each its own transaction, over the full number of kills.
		{"exactly-once pipelined", []string{"--max-in-flight", "4", "--backfill-min-wait", "0"}, 4, kills},
		// A lookback re-reads a window behind the cursor on every pass and keeps what it
		// delivered there in the cursor: a crash must not make it send any of that again.
		{"exactly-once lookback", []string{"--max-in-flight", "4", "--lookback", "1m"}, 4, (kills + 1) / 2},
		// The plain writer: a crash re-sends at most the one batch in flight, exactly where
		// the broker-side kill points say. Sequential fetching: the path of every pass that
		// is not a backfill.
		{"at-least-once serial", []string{"--delivery", "at-least-once", "--max-in-flight", "1", "--fetch-concurrency", "1"}, 1, (kills + 1) / 2},
		// A parallel backfill (the first mode backfills too, at the default concurrency; both
		// with --backfill-min-wait 0, so that a loaded machine cannot make them sequential): each
		// kill lands while ranges are walked, split or folded, and the next run resumes every
		// range of the cursor; the API's updates race the ranges.
		{"at-least-once backfill", []string{"--delivery", "at-least-once", "--max-in-flight", "1", "--fetch-concurrency", "4", "--backfill-min-wait", "0"}, 1, (kills + 1) / 2},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
				crashLoop(t, bin, tg, m.flags, m.inFlight, m.kills)
			})
		})
	}
}

// crashLoop kills the binary kills times against tg, then checks the outcome.
func crashLoop(t *testing.T, bin string, tg kafkatest.Target, flags []string, inFlight, kills int) {
	begin := time.Now()
	h := newHarness(t, bin, tg, crashConfig(kills))
	h.flags = flags
	h.inFlight = inFlight
	h.exactlyOnce = !slices.Contains(flags, "at-least-once")
	runs, completed, resent, mostResent, byKind := 0, 0, 0, 0, map[string]int{}
	raced, exited := 0, 0
	uncommitted := 0 // messages in the topic that no committed cursor counts
	for i, done := 0, 0; done < kills; i++ {
		kp := killPoints(i)
		var k kill
		for attempt := 1; ; attempt++ {
			runs++
			if k = h.runUntilKilled(t, kp); k.killed {
				break
			}
			completed++
			if k.reached && kp.msg == msgCommitted {
				// The run's last cursor write was the kill point, and the process, with
				// nothing left but to exit, exited before the signal landed: the state the
				// kill point makes (the cursor written, nothing in flight), without the
				// signal. Whether the signal wins is a race the test cannot decide.
				exited++
				break
			}
			if k.reached {
				// The run finished what it had left after the line (a broker round trip or
				// two) before the signal landed, which a loaded machine allows: aim again.
				raced++
				require.Less(t, attempt, maxAttempts, "%d runs in a row finished before the signal sent at their %s landed", attempt, kp.describe(false, h.exactlyOnce))
			} else {
				// The sync caught up before the kill point: the next run aims at the first
				// occurrence, at once, once the API has an update the run has not seen, so
				// that it has something to fetch, produce and commit, and so reaches it.
				// (Updating records here instead would pile them on one second: a tie wider
				// than a page.)
				require.Equal(t, 1, attempt, "a run after an API update did not reach the first %q", kp.msg)
			}
			kp.n, kp.delay = 1, 0
			h.awaitUpdate(t)
		}
		done++
		byKind[kp.msg]++
		h.settle(t)
		c, messages := h.checkCursor(t)
		written := messages - int(c.Records) - uncommitted // by the killed run, not committed
		uncommitted += written
		if written > 0 {
			resent++
		}
		mostResent = max(mostResent, written)
		what := kp.describe(k.trapped, h.exactlyOnce)
		if testing.Verbose() && (kills <= 200 || done%50 == 0) {
			t.Logf("kill %d/%d at %s: cursor seq=%d records=%d last_updated_at=%s; topic messages=%d (+%d not covered by a cursor)",
				done, kills, what, c.Seq, c.Records, c.LastUpdatedAt.Format(time.RFC3339), messages, written)
		}
		if h.exactlyOnce {
			// The killed run's open transaction, if any, is invisible until the next run
			// aborts it; every committed one carried its cursor.
			require.Zero(t, written, "kill at %s: read_committed messages not counted by the committed cursor", what)
		}
		require.LessOrEqual(t, written, inFlight*maxBatch, "kill at %s: more than %d batches written beyond the cursor", what, inFlight)
		if k.trapped && !h.exactlyOnce {
			require.Positive(t, k.records, "records of the batch at %s", what)
			// The batch the trap caught is in doubt, and where it stands is known; with one
			// batch in flight it is the only one.
			lo, hi := 0, (inFlight-1)*maxBatch
			switch {
			case kp.msg == msgProduce && kp.store && inFlight == 1: // stored, never acknowledged
				lo, hi = k.records, k.records
			case kp.msg == msgProduce && kp.store:
				lo, hi = 1, inFlight*maxBatch
			case kp.msg == msgAcked && !kp.store: // acknowledged, cursor never written
				lo, hi = k.records, k.records+hi
			}
			require.True(t, written >= lo && written <= hi, "kill at %s: %d messages written beyond the committed cursor, want %d to %d", what, written, lo, hi)
		}
	}
	r := h.finish(t)
	h.independent(t, r)
	bound := kills * inFlight * maxBatch
	st := h.api.Stats()
	t.Logf("%s: %d kills %v in %d runs (%d ended on their own: %d before their kill point, %d after it, %d of them at the last cursor write); %d kills left messages to re-send (at most %d); %d checks awaited a commit's markers; %d API updates; topic: %d messages, %d ids; lost=%d duplicates=%d (bound %d); %v",
		tg.Name, kills, byKind, runs, completed, completed-raced-exited, raced+exited, exited, resent, mostResent, h.unsettled, st.Updates, r.messages, r.ids, r.lost, r.duplicates, bound, time.Since(begin).Round(time.Millisecond))
	// Every mode but a sequential one (--fetch-concurrency 1, or a lookback) backfills at first.
	if i := slices.Index(flags, "--fetch-concurrency"); (i < 0 || flags[i+1] != "1") && !slices.Contains(flags, "--lookback") {
		t.Logf("%s: %d runs started a parallel backfill, %d resumed one", tg.Name, h.backfills, h.resumed)
		assert.Positive(t, h.resumed, "kills that left a backfill for the next run to resume")
	}
	assert.Zero(t, r.lost, "records lost")
	assert.LessOrEqual(t, r.duplicates, bound, "more duplicates than the batches in flight at each crash")
	if h.exactlyOnce {
		assert.Zero(t, resent, "kills after which read_committed readers saw messages no committed cursor counts")
	}
}

// TestGracefulStop sends SIGTERM or SIGINT to the binary while it syncs, and requires a clean
// stop with the cursor covering everything acknowledged: no loss and, because the in-flight
// batch is finished and committed, no duplicate either. run then exits 0; once, whose job (sync
// until the API has nothing newer) was cut short, exits 130 (SIGINT) or 143 (SIGTERM), so a
// scheduler never takes it for a complete sync.
func TestGracefulStop(t *testing.T) {
	bin := proctest.BuildBinary(t)
	cases := []struct {
		name  string
		cmd   []string
		sig   syscall.Signal
		after string // log line
		n     int    // occurrence of after that triggers the signal
		want  string // log line the binary must print
		code  int    // exit status: run stops on a signal with 0; once did not finish its job: 128 + the signal
	}{
		{"run SIGTERM mid-pass", []string{"run", "--interval", "100ms"}, syscall.SIGTERM, msgCommitted, 3, "stopping on signal", 0},
		{"run SIGINT mid-pass", []string{"run", "--interval", "100ms"}, syscall.SIGINT, msgCommitted, 3, "stopping on signal", 0},
		{"run SIGTERM mid-produce", []string{"run", "--interval", "100ms"}, syscall.SIGTERM, msgProduce, 4, "stopping on signal", 0},
		{"run SIGTERM between passes", []string{"run", "--interval", "100ms"}, syscall.SIGTERM, msgPassDone, 2, "stopping on signal", 0},
		{"once SIGTERM mid-pass", []string{"once"}, syscall.SIGTERM, msgCommitted, 3, "keysetsync once: interrupted by SIGTERM", 143},
		{"once SIGINT mid-pass", []string{"once"}, syscall.SIGINT, msgCommitted, 3, "keysetsync once: interrupted by SIGINT", 130},
		{"once SIGINT mid-produce", []string{"once"}, syscall.SIGINT, msgProduce, 4, "keysetsync once: interrupted by SIGINT", 130},
		{"once SIGTERM mid-produce", []string{"once"}, syscall.SIGTERM, msgProduce, 4, "keysetsync once: interrupted by SIGTERM", 143},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
				h := newHarness(t, bin, tg, playground.Config{Records: 3000, PageSize: playgroundPage, TieWidth: 5, UpdatesPerSecond: updatesPerSecond})
				// On kfake a signal "mid-produce" is exact: the broker sends it when the nth
				// data produce request arrives, then stores the request and answers it.
				var tr *trap
				if tg.Fake != nil && tc.after == msgProduce {
					tr = &trap{topic: h.topic, n: tc.n, store: true, fire: func(p *proctest.Proc) { _ = p.Signal(tc.sig) }}
				}
				h.arm(tr)
				defer h.arm(nil)
				seen, signalled := 0, false
				p := proctest.Start(t, bin, h.syncArgs(tc.cmd[0], tc.cmd[1:]...), proctest.Options{OnLine: func(p *proctest.Proc, line string) {
					if tr != nil || signalled || !isMsg(line, tc.after) {
						return
					}
					if seen++; seen == tc.n {
						signalled = true
						_ = p.Signal(tc.sig)
					}
				}})
				h.armed(p)
				st := p.Wait(t, 30*time.Second)
				h.note(p)
				if tr != nil {
					h.trapMu.Lock()
					signalled = tr.fired
					h.trapMu.Unlock()
				}
				require.True(t, signalled, "the process ended before %q #%d: %v\n%s", tc.after, tc.n, st, p.Tail(30))
				require.Equal(t, tc.code, st.ExitCode(), "exit after %v: %v; stderr ends with:\n%s", tc.sig, st, p.Tail(30))
				require.Contains(t, p.Stderr(), tc.want)
				h.settle(t)
				c, messages := h.checkCursor(t)
				t.Logf("stopped: cursor seq=%d records=%d; topic messages=%d", c.Seq, c.Records, messages)
				assert.EqualValues(t, messages, c.Records, "a graceful stop commits everything it wrote")

				r := h.finish(t)
				t.Logf("%s: topic %d messages, %d ids; lost=%d duplicates=%d", tg.Name, r.messages, r.ids, r.lost, r.duplicates)
				assert.Zero(t, r.lost, "records lost")
				assert.Zero(t, r.duplicates, "a graceful stop re-sends nothing")
			})
		})
	}
}
