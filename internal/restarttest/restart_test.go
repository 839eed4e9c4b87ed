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
	"regexp"
	"strconv"
	"strings"
	"sync"
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
	server *playground.Server
	url    string
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
	return api{server: s, url: srv.URL + "/pagination/keyset", gate: g}
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
		args, dataTopic, cursorTopic := syncArgs(t, a, "--batch-records", "200", "--retry-timeout", "2m", "--kafka-wait", "0")
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
		assert.LessOrEqual(t, c.Records, int64(messages), "the cursor counts no more records than the topic holds")
		assert.EqualValues(t, records, c.Records, "the cursor covers every record")
		t.Logf("%d messages for %d records: %d duplicates; cursor seq %d, records_delivered %d", messages, records, messages-records, c.Seq, c.Records)

		// A second once sends nothing.
		again := proctest.Start(t, bin, args, proctest.Options{Name: "once again", Log: true})
		again.Wait(t, time.Minute)
		require.Equal(t, 0, again.ExitCode())
		m2, _, _ := verify(t, bin, a, dataTopic)
		assert.Equal(t, messages, m2, "nothing new to send")
	})
}
