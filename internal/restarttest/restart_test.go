//go:build unix

// Package restarttest runs the real keysetsync binary against a real Kafka broker that is
// stopped and started under it: a broker down when keysetsync starts (--kafka-wait), and a
// broker stopped and started again in the middle of a sync (--retry-timeout). The broker is a
// dedicated one started by scripts/kafka.sh on its own ports and data directory, so the shared
// broker of KAFKA_BROKERS is never touched; the tests run only when KAFKA_BROKERS is set (the
// real-broker tier), and fail under CI=true without it (see internal/kafkatest).
package restarttest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/proctest"
	"github.com/keysetsync/keysetsync/playground"
)

const (
	brokerPort     = 19092
	controllerPort = 19093
)

var brokerAddr = fmt.Sprintf("127.0.0.1:%d", brokerPort)

// api is a playground served in-process, whose requests the test can hold.
type api struct {
	server      *playground.Server
	url         string
	snapshotURL string
	*gate
}

func newAPI(t *testing.T, cfg playground.Config) api {
	t.Helper()
	s, err := playground.New(cfg)
	require.NoError(t, err)
	g := &gate{h: s.Handler(), left: -1}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	t.Cleanup(g.release) // before the server closes: it waits for the requests in progress
	return api{server: s, url: srv.URL + playground.KeysetPath, snapshotURL: srv.URL + playground.SnapshotPath, gate: g}
}

// gate serves h. Once told to hold after n requests, it answers n more and holds the ones after
// them until released (or until their client gives up).
type gate struct {
	h        http.Handler
	mu       sync.Mutex
	left     int           // requests still answered before holding; < 0: not holding
	released chan struct{} // closed by release
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	released := g.released
	switch {
	case g.left > 0:
		g.left--
		released = nil
	case g.left < 0:
		released = nil
	}
	g.mu.Unlock()
	if released != nil {
		select {
		case <-released:
		case <-r.Context().Done():
			return
		}
	}
	g.h.ServeHTTP(w, r)
}

func (g *gate) holdAfter(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.left, g.released = n, make(chan struct{})
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.left >= 0 {
		close(g.released)
		g.left = -1
	}
}

// syncArgs are the flags of `once` for a fresh pair of topics on the dedicated broker.
func syncArgs(t *testing.T, a api, extra ...string) (args []string, dataTopic, cursorTopic string) {
	suffix := fmt.Sprintf("%08x", rand.Uint32())
	dataTopic, cursorTopic = "restart-users-"+suffix, "restart-cursors-"+suffix
	args = append([]string{"once", "--api-url", a.url, "--brokers", brokerAddr, "--topic", dataTopic, "--cursor-topic", cursorTopic,
		"--pipeline", "restart", "--topic-replication-factor", "1", "--log-format", "text"}, extra...)
	return args, dataTopic, cursorTopic
}

var verifyRE = regexp.MustCompile(`messages=(\d+) ids_in_topic=(\d+) ids_in_api=(\d+) missing=(\d+) stale=(\d+)`)

// verify runs `keysetsync verify` and returns messages, missing and stale.
func verify(t *testing.T, bin string, a api, dataTopic string) (messages, missing, stale int) {
	t.Helper()
	p := proctest.Start(t, bin, []string{"verify", "--api-url", a.url, "--brokers", brokerAddr, "--topic", dataTopic}, proctest.Options{Name: "verify", Log: true})
	p.Wait(t, 2*time.Minute)
	code := p.ExitCode()
	out := p.Stdout()
	t.Logf("verify: %s", strings.SplitN(out, "\n", 2)[0])
	m := verifyRE.FindStringSubmatch(out)
	require.NotNil(t, m, "verify printed no summary:\n%s", out)
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	messages, missing, stale = atoi(m[1]), atoi(m[4]), atoi(m[5])
	assert.Zero(t, code, "verify exit status")
	return messages, missing, stale
}

// independent reads dataTopic with two read_committed consumers that are not ours, librdkafka
// (scripts/check_topic.py against the API's snapshot) and Kafka's console consumer, and
// requires every record exactly once.
func independent(t *testing.T, a api, dataTopic string, records int) {
	t.Helper()
	s := kafkatest.CheckTopicPy(t, []string{brokerAddr}, dataTopic, a.snapshotURL, 0)
	assert.EqualValues(t, records, s["messages"], "librdkafka read_committed messages")
	msgs := kafkatest.ConsoleConsume(t, []string{brokerAddr}, dataTopic, records)
	dups, examples := kafkatest.Versions(msgs, 10)
	assert.Zero(t, dups, "console consumer: duplicate record versions: %v", examples)
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[string(m.Key)] = true
	}
	assert.Len(t, ids, records, "console consumer: ids")
}

// committedCursor loads the committed cursor from the dedicated broker.
func committedCursor(t *testing.T, cursorTopic, pipeline string) cursor.Cursor {
	t.Helper()
	return kafkatest.Cursor(t, kafkatest.Target{Name: "dedicated", Brokers: []string{brokerAddr}}, cursorTopic, pipeline)
}

// TestBrokerOutages runs, in order, against one dedicated broker: keysetsync started while the
// broker is down (without and with --kafka-wait), then the broker stopped and started again in
// the middle of a sync.
func TestBrokerOutages(t *testing.T) {
	kafkatest.Real(t) // the real-broker tier: skipped without KAFKA_BROKERS, failed under CI
	bin := proctest.BuildBinary(t)
	b := proctest.NewBroker(t, brokerPort, controllerPort, nil)

	t.Run("broker down at start, no --kafka-wait: exits 1 at once naming the broker", func(t *testing.T) {
		a := newAPI(t, playground.Config{Records: 100, Seed: 1})
		args, _, _ := syncArgs(t, a, "--kafka-wait", "0", "--retry-timeout", "2m")
		p := proctest.Start(t, bin, args, proctest.Options{Name: "once", Log: true})
		p.Wait(t, time.Minute)
		code := p.ExitCode()
		stderr := p.Stderr()
		assert.Equal(t, 1, code, "exit status")
		assert.Less(t, p.Took(), 15*time.Second, "a broker that is down fails at once")
		assert.Contains(t, stderr, brokerAddr, "the error names the broker")
		assert.Contains(t, stderr, "connection refused")
		assert.Zero(t, p.Count("failed, retrying"), "nothing is retried without --kafka-wait")
	})

	t.Run("broker down at start, --kafka-wait 60s: started while it waits", func(t *testing.T) {
		a := newAPI(t, playground.Config{Records: 2000, PageSize: 50, Seed: 2})
		args, dataTopic, cursorTopic := syncArgs(t, a, "--kafka-wait", "60s", "--retry-timeout", "2m", "--batch-records", "200")
		p := proctest.Start(t, bin, args, proctest.Options{Name: "once", Log: true})
		line := p.WaitLine(t, "connecting to Kafka failed, retrying", 30*time.Second)
		assert.Contains(t, line, "level=WARN")
		assert.Contains(t, line, "connection refused")
		took := b.Start()
		t.Logf("broker started %s after keysetsync (took %s)", time.Since(p.StartedAt()).Round(time.Millisecond), took.Round(time.Millisecond))
		p.Wait(t, 2*time.Minute)
		require.Equal(t, 0, p.ExitCode(), "once exits 0 once the broker is up; stderr:\n%s", p.Tail(20))
		t.Logf("%d 'connecting to Kafka failed, retrying' warnings", p.Count("connecting to Kafka failed, retrying"))
		messages, missing, stale := verify(t, bin, a, dataTopic)
		assert.Zero(t, missing)
		assert.Zero(t, stale)
		assert.Equal(t, 2000, messages, "a clean first sync sends every record once")
		c := committedCursor(t, cursorTopic, "restart")
		assert.EqualValues(t, 2000, c.Records)
	})

	t.Run("broker stopped and started mid-sync: the retried pass ends in sync", func(t *testing.T) {
		b.Start() // no-op if the previous step left it running
		const records = 20000
		a := newAPI(t, playground.Config{Records: records, PageSize: 50, Seed: 3})
		// The API answers 8 pages (two batches of 200) and holds the rest until the broker is
		// down: the sync cannot end before that, however long stopping the broker takes.
		a.holdAfter(8)
		// Sequential fetching: the 8 pages are then 400 consecutive records, two whole batches (a
		// parallel backfill spreads them over ranges, and may not fill one).
		args, dataTopic, cursorTopic := syncArgs(t, a, "--batch-records", "200", "--retry-timeout", "2m", "--kafka-wait", "0", "--fetch-concurrency", "1")
		p := proctest.Start(t, bin, args, proctest.Options{Name: "once", Log: true})
		p.WaitLine(t, `msg="batch committed"`, time.Minute)
		committedBefore := p.Count(`msg="batch committed"`)
		stopped := time.Now()
		stopTook := b.Stop()
		a.release()
		t.Logf("broker stopped after %d committed batches (stop took %s)", committedBefore, stopTook.Round(time.Millisecond))
		warn := p.WaitLine(t, "failed, retrying", time.Minute)
		t.Logf("first retry warning: %s", warn)
		startTook := b.Start()
		down := time.Since(stopped)
		t.Logf("broker down for %s (start took %s); within --retry-timeout 2m", down.Round(time.Millisecond), startTook.Round(time.Millisecond))
		require.Less(t, down, 2*time.Minute, "the restart must fall within --retry-timeout")
		p.Wait(t, 3*time.Minute)
		code := p.ExitCode()
		require.Equal(t, 0, code, "once exits 0 after the broker came back; stderr ends with:\n%s", p.Tail(20))
		retries := p.Count("failed, retrying")
		t.Logf("%d retry warnings, %d batches committed in all", retries, p.Count(`msg="batch committed"`))
		for _, l := range p.Lines() {
			if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
				t.Logf("  %s", l)
			}
		}

		messages, missing, stale := verify(t, bin, a, dataTopic)
		assert.Zero(t, missing, "records lost")
		assert.Zero(t, stale)
		c := committedCursor(t, cursorTopic, "restart")
		assert.EqualValues(t, records, c.Records, "the cursor covers every record")
		t.Logf("%d messages for %d records; cursor seq %d, records_delivered %d", messages, records, c.Seq, c.Records)
		// Exactly-once: the API does not change, so a read_committed reader sees each record once.
		assert.Equal(t, records, messages, "read_committed messages: every record once")
		independent(t, a, dataTopic, records)

		// A second once sends nothing.
		again := proctest.Start(t, bin, args, proctest.Options{Name: "once again", Log: true})
		again.Wait(t, time.Minute)
		require.Equal(t, 0, again.ExitCode())
		m2, _, _ := verify(t, bin, a, dataTopic)
		assert.Equal(t, messages, m2, "nothing new to send")
	})

	t.Run("broker stopped and started mid-transaction: the sync resumes, every record once", func(t *testing.T) {
		b.Start() // no-op if the previous step left it running
		midTransaction(t, bin, b)
	})
}

// freezeAttempts bounds the batches frozen in search of one whose transaction is open: each
// attempt lands in it with a fair chance (its records are produced, its EndTxn not sent).
const freezeAttempts = 60

// midTransaction syncs with exactly-once and freezes the binary (SIGSTOP) a few milliseconds
// after it logs "producing batch", until a freeze finds the batch's transaction open at the
// broker: its records are in the log (read_uncommitted sees more than read_committed) and not
// committed. With that transaction open, the broker is stopped and started, and the binary
// continued (SIGCONT). Its connections are gone; the coordinator reloaded the open
// transaction. Whether the binary commits it whole or aborts it whole and resumes from the
// committed cursor (within --retry-timeout), it must end in sync with every record once for
// read_committed readers, for keysetsync's reader and two independent ones.
func midTransaction(t *testing.T, bin string, b *proctest.Broker) {
	const records = 20000
	a := newAPI(t, playground.Config{Records: records, PageSize: 50, Seed: 4})
	args, dataTopic, cursorTopic := syncArgs(t, a, "--batch-records", "200", "--retry-timeout", "2m", "--kafka-wait", "0", "--log-level", "debug")
	tg := kafkatest.Target{Name: "dedicated", Brokers: []string{brokerAddr}}

	var mu sync.Mutex
	armed := false
	frozen := make(chan struct{}, 1)
	p := proctest.Start(t, bin, args, proctest.Options{Name: "once", Log: true, OnLine: func(p *proctest.Proc, line string) {
		mu.Lock()
		defer mu.Unlock()
		if !armed || !strings.Contains(line, `msg="producing batch"`) {
			return
		}
		armed = false
		// The delay only chooses where in the transaction the freeze lands.
		time.AfterFunc(time.Duration(rand.IntN(8000))*time.Microsecond, func() {
			_ = p.Signal(syscall.SIGSTOP)
			frozen <- struct{}{}
		})
	}})
	p.WaitLine(t, `msg="batch committed"`, time.Minute) // the topics exist, a commit went through
	open := 0
	for attempt := 1; open == 0; attempt++ {
		require.LessOrEqual(t, attempt, freezeAttempts, "no freeze found a transaction open")
		mu.Lock()
		armed = true
		mu.Unlock()
		select {
		case <-frozen:
		case <-p.Done():
			require.FailNowf(t, "sync ended", "once ended (exit %d) before a freeze found a transaction open; stderr ends with:\n%s", p.ExitCode(), p.Tail(20))
		}
		awaitState(t, p.Pid(), 'T')
		open = len(kafkatest.ReadUncommitted(t, tg, dataTopic)) - len(kafkatest.ReadAll(t, tg, dataTopic))
		if open == 0 {
			require.NoError(t, p.Signal(syscall.SIGCONT))
		}
	}
	committedBefore := len(kafkatest.ReadAll(t, tg, dataTopic))
	t.Logf("froze the binary with a transaction open: %d records produced in it, %d committed before", open, committedBefore)

	stopTook := b.Stop()
	startTook := b.Start()
	t.Logf("broker stopped (took %s) and started (took %s) with the transaction open", stopTook.Round(time.Millisecond), startTook.Round(time.Millisecond))
	require.NoError(t, p.Signal(syscall.SIGCONT))
	p.Wait(t, 3*time.Minute)
	require.Equal(t, 0, p.ExitCode(), "once exits 0 after the broker came back; stderr ends with:\n%s", p.Tail(30))
	t.Logf("%d retry warnings, %d batches committed in all", p.Count("failed, retrying"), p.Count(`msg="batch committed"`))
	for _, l := range p.Lines() {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Logf("  %s", l)
		}
	}

	committed := kafkatest.ReadAll(t, tg, dataTopic)
	all := kafkatest.ReadUncommitted(t, tg, dataTopic)
	assert.Len(t, committed, records, "read_committed messages: every record once")
	// The transaction's state survives the restart (the coordinator reloads it), so the
	// binary may go on with it and commit it whole; or the pass fails, aborts it whole and
	// resumes from the committed cursor. Never a part of it.
	aborted := len(all) - len(committed)
	assert.True(t, aborted == 0 || aborted >= open, "%d records aborted, the open transaction had %d: neither committed nor aborted whole", aborted, open)
	if aborted == 0 {
		t.Logf("the open transaction was committed after the restart: the binary went on with it")
	} else {
		t.Logf("the open transaction was aborted (%d records in the log, invisible to read_committed readers) and the pass resumed from the committed cursor", aborted)
	}
	dups, examples := kafkatest.Versions(committed, 10)
	assert.Zero(t, dups, "read_committed duplicate record versions: %v", examples)
	_, missing, stale := verify(t, bin, a, dataTopic)
	assert.Zero(t, missing, "records lost")
	assert.Zero(t, stale)
	c := committedCursor(t, cursorTopic, "restart")
	assert.EqualValues(t, records, c.Records, "the cursor covers every record")
	t.Logf("read_committed %d messages, read_uncommitted %d (%d aborted); cursor seq %d", len(committed), len(all), len(all)-len(committed), c.Seq)
	independent(t, a, dataTopic, records)
}

// awaitState waits until process pid is in state (a letter of /proc/pid/stat: 'T' stopped).
func awaitState(t *testing.T, pid int, state byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		require.NoError(t, err)
		if i := strings.LastIndexByte(string(st), ')'); i > 0 && i+2 < len(st) && st[i+2] == state {
			return
		}
		require.True(t, time.Now().Before(deadline), "process %d not in state %c within 10s: %s", pid, state, st)
		time.Sleep(time.Millisecond) // polling the kernel's view of the process
	}
}
