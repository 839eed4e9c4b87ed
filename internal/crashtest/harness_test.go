//go:build unix

package crashtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/pipelinetest"
	"github.com/keysetsync/keysetsync/internal/proctest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/source"
)

// Log messages of the binary that mark where it is (the msg="..." of its key=value lines).
const (
	msgFetch       = "fetching page"                         // debug, before a page request
	msgProduce     = "producing batch"                       // debug, before the produce
	msgAcked       = "batch acknowledged, committing cursor" // debug, before the cursor write
	msgCommitted   = "batch committed"                       // info, after the cursor write
	msgPassDone    = "pass finished"                         // info, end of a pass
	pipelineName   = "crash"
	runTimeout     = 60 * time.Second // bound on one run of the binary
	batchRecords   = 100
	playgroundPage = 50
	// updatesPerSecond is the rate of the API's background updates. It is below playgroundPage
	// on purpose: RunUpdates never stamps more than that many records with one second, however
	// its goroutine is scheduled, so every tie fits in a page and no run can end in a tie
	// overflow (an API limitation, which `once` reports by exiting 1, not a crash bug).
	updatesPerSecond = 30
)

// isMsg reports whether the slog text line carries msg="m".
func isMsg(line, m string) bool { return strings.Contains(line, ` msg="`+m+`"`) }

// harness is a playground served in-process with random updates running, a Kafka target with
// fresh topics, and the binary syncing one into the other.
type harness struct {
	bin         string
	tg          kafkatest.Target
	api         *playground.Server
	url         string
	snapshotURL string // the API's /snapshot, for the independent consumers
	topic       string
	cursorTopic string
	client      *kafka.Client
	codec       *avro.Codec
	stopUpdates func()   // stops RunUpdates and waits for it; idempotent
	flags       []string // extra flags of once and run
	inFlight    int      // batches the binary may have produced and not committed (--max-in-flight)
	exactlyOnce bool     // flags do not say --delivery at-least-once

	store   *kafka.CursorStore // opened on first use: the binary creates the cursor topic
	data    *topicTail
	encoded map[playground.User][]byte // Avro value of each API record version seen
	prev    cursor.Cursor              // last cursor checked

	trapMu sync.Mutex
	trap   *trap // armed for the current run, kfake only

	warnings []string // WARN and ERROR lines the binary printed, for the report
	// backfills and resumed count the runs that started a parallel backfill, and that
	// resumed one from the cursor a killed run left.
	backfills, resumed int
	unsettled          int // settle calls that found a commit's markers on one partition and not yet the other
}

// note keeps the WARN and ERROR lines of a finished run: none are expected, and a tie overflow
// (an API limitation, not a crash bug) would explain a lost record.
func (h *harness) note(p *proctest.Proc) {
	for _, l := range p.Lines() {
		if isMsg(l, "backfill started: the cursor is far behind, walking ranges up to the horizon concurrently") {
			h.backfills++
		}
		if isMsg(l, "resuming a backfill") {
			h.resumed++
		}
		if strings.Contains(l, " level=WARN ") || strings.Contains(l, " level=ERROR ") {
			h.warnings = append(h.warnings, l)
		}
	}
}

// trap acts on the binary from inside kfake when the nth produce request of a run to topic
// (or, endTxn, the nth EndTxn that commits) arrives, while the binary waits for the answer:
// fire kills it (or signals it), then kfake either applies the request (the broker has the
// data, or committed the transaction, and the binary may never hear back) or drops it (the
// connection closes, nothing is applied).
type trap struct {
	topic  string
	endTxn bool
	n      int
	store  bool
	fire   func(*proctest.Proc)
	proc   *proctest.Proc // set once the process started
	seen   int
	fired  bool
}

// arm sets the trap of the next run (nil: none).
func (h *harness) arm(tr *trap) {
	h.trapMu.Lock()
	defer h.trapMu.Unlock()
	h.trap = tr
}

// armed attaches the started process to the armed trap.
func (h *harness) armed(p *proctest.Proc) {
	h.trapMu.Lock()
	defer h.trapMu.Unlock()
	if h.trap != nil {
		h.trap.proc = p
	}
}

// installTrap adds the kfake control functions that spring armed traps.
func (h *harness) installTrap(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return h.spring(func(tr *trap) bool { return !tr.endTxn && producesTo(req, tr.topic) })
	})
	c.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return h.spring(func(tr *trap) bool {
			end, ok := req.(*kmsg.EndTxnRequest)
			return tr.endTxn && ok && end.Commit
		})
	})
}

// spring springs the armed trap if the request matches it, as a kfake control function.
func (h *harness) spring(matches func(*trap) bool) (kmsg.Response, error, bool) {
	h.trapMu.Lock()
	defer h.trapMu.Unlock()
	tr := h.trap
	if tr == nil || tr.fired || tr.proc == nil || !matches(tr) {
		return nil, nil, false
	}
	if tr.seen++; tr.seen < tr.n {
		return nil, nil, false
	}
	tr.fired = true
	tr.fire(tr.proc)
	if tr.store {
		return nil, nil, false // kfake applies it now, before it reads any later request
	}
	return nil, errors.New("crashtest: producer killed, request dropped"), true
}

func producesTo(req kmsg.Request, name string) bool {
	pr, ok := req.(*kmsg.ProduceRequest)
	if !ok {
		return false
	}
	for _, tp := range pr.Topics {
		if tp.Topic == name {
			return true
		}
	}
	return false
}

func newHarness(t *testing.T, bin string, tg kafkatest.Target, cfg playground.Config) *harness {
	t.Helper()
	// RunUpdates' widest tie (see its doc) must fit in a page, or a run could fail by timing.
	require.Less(t, math.Ceil(cfg.UpdatesPerSecond)+math.Ceil(cfg.LateUpdatesPerSecond), float64(cfg.PageSize),
		"updates per second against pages of %d", cfg.PageSize)
	api, err := playground.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	h := &harness{
		bin: bin, tg: tg, api: api, url: srv.URL + "/pagination/keyset", snapshotURL: srv.URL + playground.SnapshotPath, exactlyOnce: true,
		topic: kafkatest.Topic(t, "users"), cursorTopic: kafkatest.Topic(t, "cursors"),
		client: tg.Kafka(t), codec: codec, encoded: map[playground.User][]byte{},
	}
	h.data = newTopicTail(h.client, h.topic)
	if tg.Fake != nil {
		h.installTrap(tg.Fake)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		api.RunUpdates(ctx)
	}()
	h.stopUpdates = func() { cancel(); <-stopped }
	t.Cleanup(h.stopUpdates)
	return h
}

// syncArgs are the arguments of once or run against the harness.
func (h *harness) syncArgs(cmd string, extra ...string) []string {
	return slices.Concat([]string{cmd,
		"--log-level", "debug",
		"--batch-records", fmt.Sprint(batchRecords),
		"--api-url", h.url,
		"--api-max-attempts", "2",
		"--brokers", strings.Join(h.tg.Brokers, ","),
		"--topic", h.topic,
		"--cursor-topic", h.cursorTopic,
		"--pipeline", pipelineName,
		"--topic-replication-factor", "1",
	}, h.flags, extra)
}

// once runs `keysetsync once` to completion and requires exit status 0.
func (h *harness) once(t *testing.T) {
	t.Helper()
	p := proctest.Start(t, h.bin, h.syncArgs("once"), proctest.Options{})
	st := p.Wait(t, runTimeout)
	h.note(p)
	require.Equal(t, 0, st.ExitCode(), "once: %v; stderr ends with:\n%s", st, p.Tail(30))
	require.Contains(t, p.Tail(1), "ok=true", "the last line is the pass summary")
}

// verify runs `keysetsync verify` and requires exit status 0 with nothing missing or stale.
func (h *harness) verify(t *testing.T) {
	t.Helper()
	p := proctest.Start(t, h.bin, []string{"verify", "--api-url", h.url, "--brokers", strings.Join(h.tg.Brokers, ","), "--topic", h.topic}, proctest.Options{})
	st := p.Wait(t, runTimeout)
	out := p.Stdout()
	require.Equal(t, 0, st.ExitCode(), "verify: %v\nstdout:\n%s\nstderr:\n%s", st, out, p.Tail(30))
	require.Contains(t, out, "missing=0 stale=0 extra=0")
	t.Logf("verify: %s", strings.SplitN(out, "\n", 2)[0])
}

// checkCursor checks, with the binary not running, that the committed cursor is not ahead of
// the data topic:
//   - its record count is at most the number of messages in the topic;
//   - every current API record with updatedAt before the cursor's LastUpdatedAt has its
//     current value in the topic. This holds while updates go on: an update made after the
//     binary read past a timestamp lands at "now", which is never before the newest record it
//     saw, so a current version older than the cursor existed when the binary read past it;
//   - every id the cursor lists as delivered (at LastUpdatedAt, or inside the lookback window)
//     has a message with that updatedAt;
//   - Seq and LastUpdatedAt never go back.
//
// It returns the cursor and the number of messages in the topic.
func (h *harness) checkCursor(t *testing.T) (cursor.Cursor, int) {
	t.Helper()
	ctx := t.Context()
	c, err := h.cursorStore(t).Load(ctx, pipelineName)
	if errors.Is(err, cursor.ErrNotFound) {
		require.Zero(t, h.prev.Seq, "a cursor was committed before, now there is none")
		return cursor.Cursor{}, 0
	}
	require.NoError(t, err)
	require.GreaterOrEqual(t, c.Seq, h.prev.Seq, "cursor seq went back")
	require.False(t, c.LastUpdatedAt.Before(h.prev.LastUpdatedAt), "cursor went back from %v to %v", h.prev.LastUpdatedAt, c.LastUpdatedAt)
	h.prev = c

	require.NoError(t, h.data.read(ctx))
	messages := h.data.count
	if h.exactlyOnce {
		// A committed transaction's markers land on its partitions one by one after EndTxn: the
		// killed run's last commit may show in the cursor topic before its records do, also
		// after settle, which saw the two agree before either showed. Its records follow
		// within milliseconds; a cursor committed without them never catches up and fails
		// below.
		deadline := time.Now().Add(settleTimeout)
		for c.Records > int64(messages) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				require.NoError(t, ctx.Err())
			case <-time.After(5 * time.Millisecond): // polling the broker for the markers
			}
			require.NoError(t, h.data.read(ctx))
			messages = h.data.count
		}
	}
	require.LessOrEqual(t, c.Records, int64(messages), "the cursor claims more records than the topic holds")

	// Read after the cursor and the topic: a record updated since has updatedAt >= the cursor.
	snap := h.api.Snapshot()
	var fresh []playground.User
	for _, u := range snap {
		if _, ok := h.encoded[u]; !ok {
			fresh = append(fresh, u)
		}
	}
	users := pipelinetest.ToAvro(t, fresh)
	for _, u := range fresh {
		a := users[u.ID]
		v, err := h.codec.Append(nil, &a)
		require.NoError(t, err)
		h.encoded[u] = v
	}
	var ahead []string
	for _, u := range snap {
		at, err := time.Parse(cursor.TimeLayout, u.UpdatedAt)
		require.NoError(t, err)
		if at.Before(c.LastUpdatedAt) && !h.data.hasValue(u.ID, h.encoded[u]) {
			ahead = append(ahead, u.ID+"@"+u.UpdatedAt)
		}
	}
	at := c.LastUpdatedAt.Format(cursor.TimeLayout)
	for id := range c.Delivered {
		if !h.data.hasVersion(id, at) {
			ahead = append(ahead, id+"@"+at+" (delivered at cursor)")
		}
	}
	for d, u := range c.Lookback {
		if !h.data.digests[d] {
			ahead = append(ahead, fmt.Sprintf("digest %016x@%s (delivered in lookback)", d, u.Format(cursor.TimeLayout)))
		}
	}
	sort.Strings(ahead)
	require.Empty(t, ahead[:min(len(ahead), 20)], "cursor seq=%d last_updated_at=%s is ahead of the data: %d records older than it are not in the topic %s (first 20 listed)",
		c.Seq, at, len(ahead), h.topic)
	return c, messages
}

// cursorStore opens the store on first use: the binary creates the cursor topic.
func (h *harness) cursorStore(t *testing.T) *kafka.CursorStore {
	t.Helper()
	if h.store == nil {
		s, err := kafka.NewCursorStore(t.Context(), kafka.CursorStoreConfig{Client: h.client, Topic: h.cursorTopic, ReplicationFactor: 1})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		h.store = s
	}
	return h.store
}

// settleTimeout bounds the wait for a commit's markers, far above the milliseconds they take.
const settleTimeout = 15 * time.Second

// settle awaits, exactly-once and with no binary running, a read_committed view in which the
// committed cursor counts exactly the committed data messages. A run that ended (killed, or
// exited) right after an EndTxn(commit) leaves the broker completing that commit: the
// coordinator answers EndTxn once the commit is decided, then writes the markers of the data
// and the cursor partitions one after the other, so for a moment a reader can see one
// partition's records and not the other's. Every commit carries its cursor, so the counts
// meet once the markers are written; a transaction committed without its cursor (or a cursor
// without its records) never lets them meet, and fails the test after settleTimeout.
func (h *harness) settle(t *testing.T) {
	t.Helper()
	if !h.exactlyOnce {
		return
	}
	ctx := t.Context()
	deadline := time.Now().Add(settleTimeout)
	for first := true; ; first = false {
		var records int64
		c, err := h.cursorStore(t).Load(ctx, pipelineName)
		if !errors.Is(err, cursor.ErrNotFound) {
			require.NoError(t, err)
			records = c.Records
		}
		require.NoError(t, h.data.read(ctx))
		if records == int64(h.data.count) {
			return
		}
		if first {
			h.unsettled++
		}
		require.True(t, time.Now().Before(deadline), "the committed cursor (seq %d) counts %d records, read_committed readers see %d messages in %s, for %s: a commit without its cursor, or a cursor without its records",
			c.Seq, records, h.data.count, h.topic, settleTimeout)
		select {
		case <-ctx.Done():
			require.NoError(t, ctx.Err())
		case <-time.After(5 * time.Millisecond): // polling the broker for the markers
		}
	}
}

// awaitUpdate returns once the API's background updates have changed a record since the call.
func (h *harness) awaitUpdate(t *testing.T) {
	t.Helper()
	from := h.api.Stats().Updates
	require.Eventually(t, func() bool { return h.api.Stats().Updates > from }, 10*time.Second, 2*time.Millisecond,
		"the API made no update in 10s (%d updates/s configured)", h.api.Config().UpdatesPerSecond)
}

// result is what the final comparison found.
type result struct {
	messages   int
	ids        int
	lost       int // ids of the API whose latest value in the topic is missing or differs
	duplicates int // messages whose (id, updatedAt, value) was written before
}

// finish stops the updates, syncs the rest with one `once` to completion, runs verify, and
// compares the topic with the API independently: the latest value per id must equal the API's
// current record in every field.
func (h *harness) finish(t *testing.T) result {
	t.Helper()
	h.stopUpdates()
	h.once(t)
	h.settle(t)
	h.verify(t)
	c, _ := h.checkCursor(t)

	msgs := kafkatest.ReadAll(t, h.tg, h.topic)
	latest := map[string]avro.User{}
	var r result
	r.messages = len(msgs)
	var dupes []string
	r.duplicates, dupes = kafkatest.Versions(msgs, 10)
	for _, m := range msgs {
		u, err := h.codec.Decode(m.Value)
		require.NoError(t, err, "offset %d", m.Offset)
		require.Equal(t, string(m.Key), u.ID, "the key is the id (offset %d)", m.Offset)
		require.Equal(t, u.UpdatedAt.Format(cursor.TimeLayout), m.Headers[pipeline.HeaderUpdatedAt], "updated_at header (offset %d)", m.Offset)
		require.Equal(t, pipelineName, m.Headers[pipeline.HeaderPipeline])
		latest[u.ID] = u
	}
	want := pipelinetest.ToAvro(t, h.api.Snapshot())
	var lost []string
	for id, w := range want {
		g, ok := latest[id]
		if !ok {
			lost = append(lost, id+" (missing)")
			continue
		}
		if !assert.Equal(t, userFields(w), userFields(g), "latest value of %s in the topic", id) {
			lost = append(lost, id+" (stale)")
		}
	}
	sort.Strings(lost)
	r.ids, r.lost = len(latest), len(lost)
	assert.Empty(t, lost[:min(len(lost), 20)], "records lost (%d, first 20 listed); warnings and errors of the binary:\n%s", len(lost), strings.Join(h.warnings, "\n"))
	if len(h.warnings) > 0 {
		t.Logf("the binary printed %d WARN/ERROR lines, the first: %s", len(h.warnings), h.warnings[0])
	}
	assert.Len(t, latest, len(want), "ids in the topic the API does not have")
	// A message is written again only when its first copy was not covered by a commit, so the
	// duplicates never outnumber the messages written beyond the cursor's count.
	assert.LessOrEqual(t, int64(r.duplicates), int64(r.messages)-c.Records,
		"duplicates beyond the messages no cursor counts (messages=%d cursor.records=%d)", r.messages, c.Records)
	if h.exactlyOnce {
		// Each batch and its cursor are one transaction: a read_committed reader sees exactly
		// the messages the committed cursor counts, each record version once.
		assert.EqualValues(t, c.Records, r.messages, "read_committed messages against the committed cursor's count")
		assert.Zero(t, r.duplicates, "exactly-once: record versions written more than once (first 10): %v", dupes)
	}
	return r
}

// independent reads the data topic with two read_committed consumers that are not ours,
// librdkafka (scripts/check_topic.py) and Kafka's console consumer, and requires them to find
// what finish found: the same messages and duplicates, nothing missing or stale against the
// API (which must have stopped updating), and, exactly-once, no duplicate. It runs against the
// real broker only: what they would check on kfake is kfake, and a JVM start costs seconds.
func (h *harness) independent(t *testing.T, r result) {
	t.Helper()
	if h.tg.Fake != nil {
		return
	}
	maxDup := -1 // at-least-once: duplicates are counted, not refused
	if h.exactlyOnce {
		maxDup = 0
	}
	s := kafkatest.CheckTopicPy(t, h.tg.Brokers, h.topic, h.snapshotURL, maxDup)
	assert.EqualValues(t, r.messages, s["messages"], "librdkafka read_committed messages")
	assert.EqualValues(t, r.duplicates, s["duplicates"], "librdkafka duplicate record versions")

	msgs := kafkatest.ConsoleConsume(t, h.tg.Brokers, h.topic, r.messages)
	dups, examples := kafkatest.Versions(msgs, 10)
	assert.Equal(t, r.duplicates, dups, "console consumer duplicate record versions: %v", examples)
	latest := map[string][]byte{}
	for _, m := range msgs {
		latest[string(m.Key)] = m.Value
	}
	var wrong []string
	snap := h.api.Snapshot()
	for _, u := range snap {
		v, ok := h.encoded[u]
		require.True(t, ok, "checkCursor encoded every current record")
		if !bytes.Equal(latest[u.ID], v) {
			wrong = append(wrong, u.ID)
		}
	}
	sort.Strings(wrong)
	assert.Empty(t, wrong[:min(len(wrong), 20)], "console consumer: %d ids whose latest value is not the API's (first 20)", len(wrong))
	assert.Len(t, latest, len(snap), "console consumer: ids")
	t.Logf("independent read_committed consumers: librdkafka messages=%v duplicates=%v missing=%v stale=%v; console consumer messages=%d duplicates=%d ids=%d",
		s["messages"], s["duplicates"], s["missing"], s["stale"], len(msgs), dups, len(latest))
}

// userFields renders every field of u, so a comparison shows what differs.
func userFields(u avro.User) string {
	s := func(p *string) string {
		if p == nil {
			return "<null>"
		}
		return fmt.Sprintf("%q", *p)
	}
	created := "<null>"
	if u.CreatedAt != nil {
		created = u.CreatedAt.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("id=%s name=%s email=%s address=%s company=%s job=%s createdAt=%s updatedAt=%s",
		u.ID, s(u.Name), s(u.Email), s(u.Address), s(u.Company), s(u.Job), created, u.UpdatedAt.UTC().Format(time.RFC3339Nano))
}

// topicTail reads a topic incrementally, as a read_committed consumer does (kafka.TxnReadPartition):
// each read fetches only what became stable since the previous one, so checking after every
// kill stays cheap as the topic grows. An open transaction of a killed run holds the read at
// its first offset (the last stable offset) until the next run aborts it; its records are then
// dropped as aborted. Without transactions (at-least-once) this reads every record.
type topicTail struct {
	client   *kafka.Client
	topic    string
	next     map[int]int64
	count    int
	values   map[string]bool // id \x00 value
	versions map[string]bool // id \x00 updated_at header
	digests  map[uint64]bool // cursor.Digest of every message, as a cursor's lookback holds it
}

func newTopicTail(c *kafka.Client, name string) *topicTail {
	return &topicTail{client: c, topic: name, next: map[int]int64{}, values: map[string]bool{}, versions: map[string]bool{}, digests: map[uint64]bool{}}
}

func (tt *topicTail) hasValue(id string, v []byte) bool { return tt.values[id+"\x00"+string(v)] }
func (tt *topicTail) hasVersion(id, at string) bool     { return tt.versions[id+"\x00"+at] }

func (tt *topicTail) read(ctx context.Context) error {
	parts, err := tt.client.Partitions(ctx, tt.topic)
	if err != nil {
		return err
	}
	for _, p := range parts {
		from, ok := tt.next[p]
		if !ok {
			from = kafka.TxnFirstOffset
		}
		next, err := kafka.TxnReadPartition(ctx, tt.client, tt.topic, p, from, true, func(r kafka.TxnRecord) error {
			var at string
			for _, hd := range r.Headers {
				if hd.Key == pipeline.HeaderUpdatedAt {
					at = string(hd.Value)
				}
			}
			tt.values[string(r.Key)+"\x00"+string(r.Value)] = true
			tt.versions[string(r.Key)+"\x00"+at] = true
			if t, err := cursor.ParseTime(at); err == nil {
				tt.digests[cursor.Digest(string(r.Key), t, source.Fingerprint(r.Value))] = true
			}
			tt.count++
			return nil
		})
		if err != nil {
			return fmt.Errorf("read %s/%d committed from %d: %w", tt.topic, p, from, err)
		}
		tt.next[p] = next
	}
	return nil
}
