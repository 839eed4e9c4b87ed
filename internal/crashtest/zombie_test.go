//go:build unix

package crashtest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/proctest"
	"github.com/keysetsync/keysetsync/playground"
)

const (
	// zombieRounds is the number of random kills and restarts of the zombie test.
	zombieRounds = 16
	// zombieRecords is the API's size: small enough that the API's updates often hit a record
	// in a page the lagging instance has and has not yet delivered, which without fencing
	// leaves an older version last in the topic.
	zombieRecords = 1000
	// zombieLag is how late the lagging instance gets each page the API made.
	zombieLag = 500 * time.Millisecond
)

// zombieFenced is what a fenced instance's error says, naming the pipeline.
var zombieFenced = fmt.Sprintf("pipeline %q is fenced: another instance with the same transactional id took over", pipelineName)

// instance is one `keysetsync run` of the pipeline, restarted over and over.
type instance struct {
	name   string
	args   []string
	p      *proctest.Proc
	killed bool // the current process was sent SIGKILL
	starts int
}

// TestZombieFencing runs two instances of one pipeline, as an overlapping rolling deploy or a
// wrong replica count does: the same flags, one of them reading the API through a proxy that
// delivers every page zombieLag after the API made it. While the API changes, both are killed (SIGKILL) and
// restarted at random; an instance that stops on its own is restarted at the next round. It
// requires that every such stop is the fencing (exit 4, an error naming the pipeline), caused
// by a later start of the other instance; that the committed cursor never goes back and is
// never ahead of the read_committed data; and, after a final clean `once`, that nothing is
// lost or stale and no record version is in the topic twice, for keysetsync's reader and two
// independent read_committed consumers. Without fencing (--delivery at-least-once) the lagging
// instance writes older versions over newer ones and both re-send each other's batches.
func TestZombieFencing(t *testing.T) {
	bin := proctest.BuildBinary(t)
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		zombieLoop(t, bin, tg, nil)
	})
}

func zombieLoop(t *testing.T, bin string, tg kafkatest.Target, flags []string) {
	begin := time.Now()
	h := newHarness(t, bin, tg, playground.Config{Records: zombieRecords, PageSize: playgroundPage, TieWidth: 5, UpdatesPerSecond: updatesPerSecond, Seed: 10})
	h.flags = flags
	h.inFlight = 4
	h.exactlyOnce = !slices.Contains(flags, "at-least-once")

	api := h.api.Handler()
	lagging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != playground.KeysetPath {
			api.ServeHTTP(w, r)
			return
		}
		// The page as the API has it now, delivered zombieLag later: this instance sees the
		// API late, and writes versions that may have changed since. The delay is the
		// experiment, not a synchronisation.
		page := httptest.NewRecorder()
		api.ServeHTTP(page, r)
		select {
		case <-time.After(zombieLag):
		case <-r.Context().Done():
			return
		}
		for k, v := range page.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(page.Code)
		_, _ = w.Write(page.Body.Bytes())
	}))
	t.Cleanup(lagging.Close)

	args := h.syncArgs("run", "--interval", "100ms")
	slow := slices.Clone(args)
	slow[slices.Index(slow, "--api-url")+1] = lagging.URL + playground.KeysetPath
	insts := []*instance{{name: "fast", args: args}, {name: "lagging", args: slow}}
	var procs []*proctest.Proc
	start := func(in *instance) {
		in.starts++
		in.p = proctest.Start(t, bin, in.args, proctest.Options{Name: fmt.Sprintf("%s #%d", in.name, in.starts)})
		in.killed = false
		procs = append(procs, in.p)
	}
	fencings, kills := 0, 0
	var fenced []*proctest.Proc
	// ended examines a process that ended: killed by the test, or fenced by the other one.
	ended := func(in *instance) {
		<-in.p.Done()
		h.note(in.p)
		if in.killed {
			return
		}
		require.Equal(t, 4, in.p.ExitCode(), "%s #%d stopped on its own, but not fenced; stderr ends with:\n%s", in.name, in.starts, in.p.Tail(30))
		require.Contains(t, in.p.Stderr(), zombieFenced, "the fenced instance's error")
		require.Contains(t, in.p.Stderr(), `msg="fenced: another instance of the pipeline with the same transactional id took over`, "the fenced instance's log")
		mine := epochOf(in.p)
		require.GreaterOrEqual(t, mine, int64(0), "%s #%d logged no producer id initialised", in.name, in.starts)
		fenced = append(fenced, in.p)
		fencings++
		t.Logf("%s #%d (epoch %d) fenced after %s: exit 4", in.name, in.starts, mine, in.p.Took().Round(time.Millisecond))
		in.p = nil
	}
	for _, in := range insts {
		start(in)
	}
	for round := range zombieRounds {
		// A random time between kills is the experiment; an instance stopping on its own (the
		// fencing) ends the wait early.
		wait := time.NewTimer(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
		for waiting := true; waiting; {
			select {
			case <-wait.C:
				waiting = false
			case <-doneOf(insts[0]):
				ended(insts[0])
			case <-doneOf(insts[1]):
				ended(insts[1])
			}
		}
		// Kill one or both, in random order, and restart every instance that is down.
		for _, i := range rand.Perm(2)[:1+rand.IntN(2)] {
			in := insts[i]
			if in.p == nil {
				continue
			}
			in.killed = true
			_ = in.p.Kill()
			kills++
			ended(in)
			in.p = nil
		}
		for _, i := range rand.Perm(2) {
			if insts[i].p == nil {
				start(insts[i])
			}
		}
		c, messages := h.checkCursor(t)
		if testing.Verbose() {
			t.Logf("round %d/%d: cursor seq=%d records=%d; topic messages=%d (read_committed)", round+1, zombieRounds, c.Seq, c.Records, messages)
		}
	}
	for _, in := range insts {
		if in.p != nil {
			in.killed = true
			_ = in.p.Kill()
			ended(in)
		}
	}
	// Fenced means another process initialised the transactional id after this one, with a
	// higher epoch. Which one got there first is the processes' race, not the order the test
	// started them in; and the other's log line may come after this one's exit, so this is
	// checked once every process ended.
	for _, f := range fenced {
		mine, newest := epochOf(f), int64(-1)
		for _, q := range procs {
			if q != f {
				newest = max(newest, epochOf(q))
			}
		}
		if newest <= mine {
			var inits []string
			for _, q := range procs {
				inits = append(inits, fmt.Sprintf("pid %d: epochs %v", q.Pid(), epochsOf(q)))
			}
			assert.Failf(t, "fenced by no later producer", "process %d (epoch %d) was fenced, but no other process initialised the transactional id after it; producer ids initialised:\n%s\nits stderr ends with:\n%s",
				f.Pid(), mine, strings.Join(inits, "\n"), f.Tail(40))
		}
	}
	r := h.finish(t)
	h.independent(t, r)
	t.Logf("%s: %d rounds, %d kills, %d fencings, %d starts (fast %d, lagging %d); %d API updates; topic: %d messages, %d ids; lost=%d duplicates=%d; %v",
		tg.Name, zombieRounds, kills, fencings, insts[0].starts+insts[1].starts, insts[0].starts, insts[1].starts, h.api.Stats().Updates,
		r.messages, r.ids, r.lost, r.duplicates, time.Since(begin).Round(time.Millisecond))
	assert.Zero(t, r.lost, "records lost or stale")
	assert.Zero(t, r.duplicates, "record versions in the read_committed topic more than once")
	assert.Positive(t, fencings, "no instance was fenced: the two never overlapped")
}

// doneOf is the process's Done channel, or nil (never ready) when it is down.
func doneOf(in *instance) <-chan struct{} {
	if in.p == nil {
		return nil
	}
	return in.p.Done()
}

// epochOf is the highest producer epoch the process logged as initialised, or -1.
func epochOf(p *proctest.Proc) int64 {
	return slices.Max(append(epochsOf(p), -1))
}

// epochsOf are the producer epochs the process logged as initialised, in order.
func epochsOf(p *proctest.Proc) []int64 {
	var es []int64
	for _, l := range p.Lines() {
		if isMsg(l, "producer id initialised") {
			es = append(es, int64(intField(l, "epoch")))
		}
	}
	return es
}
