//go:build unix

package crashtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
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
	topic       string
	cursorTopic string
	client      *kafka.Client
	codec       *avro.Codec
	stopUpdates func()   // stops RunUpdates and waits for it; idempotent
	flags       []string // extra flags of once and run
	inFlight    int      // batches the binary may have produced and not committed (--max-in-flight)

	store   *kafka.CursorStore // opened on first use: the binary creates the cursor topic
	data    *topicTail
	encoded map[playground.User][]byte // Avro value of each API record version seen
	prev    cursor.Cursor              // last cursor checked

	trapMu sync.Mutex
	trap   *trap // armed for the current run, kfake only

	warnings []string // WARN and ERROR lines the binary printed, for the report
}

// note keeps the WARN and ERROR lines of a finished run: none are expected, and a tie overflow
// (an API limitation, not a crash bug) would explain a lost record.
func (h *harness) note(p *proctest.Proc) {
	for _, l := range p.Lines() {
		if strings.Contains(l, " level=WARN ") || strings.Contains(l, " level=ERROR ") {
			h.warnings = append(h.warnings, l)
		}
	}
}

// trap acts on the binary from inside kfake when the nth produce request of a run to topic
// arrives, while the binary waits for the answer: fire kills it (or signals it), then kfake
// either stores the request (the broker has the data, the binary may never hear back) or drops
// it (the connection closes, nothing is stored).
type trap struct {
	topic string
	n     int
	store bool
	fire  func(*proctest.Proc)
	proc  *proctest.Proc // set once the process started
	seen  int
	fired bool
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

// installTrap adds the kfake control function that springs armed traps.
func (h *harness) installTrap(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		h.trapMu.Lock()
		defer h.trapMu.Unlock()
		tr := h.trap
		if tr == nil || tr.fired || tr.proc == nil || !producesTo(req, tr.topic) {
			return nil, nil, false
		}
		if tr.seen++; tr.seen < tr.n {
			return nil, nil, false
		}
		tr.fired = true
		tr.fire(tr.proc)
		if tr.store {
			return nil, nil, false // kfake stores it now, before it reads any later request
		}
		return nil, errors.New("crashtest: producer killed, request dropped"), true
	})
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
		bin: bin, tg: tg, api: api, url: srv.URL + "/pagination/keyset",
		topic: kafkatest.Topic(t, "users"), cursorTopic: kafkatest.Topic(t, "cursors"),
		client: tg.Kafka(t), codec: codec, encoded: map[playground.User][]byte{},
	}
	h.data = newTopicTail(h.client, tg.Client(t), h.topic)
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
	if h.store == nil {
		s, err := kafka.NewCursorStore(ctx, kafka.CursorStoreConfig{Client: h.client, Topic: h.cursorTopic, ReplicationFactor: 1})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		h.store = s
	}
	c, err := h.store.Load(ctx, pipelineName)
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
	h.verify(t)
	c, _ := h.checkCursor(t)

	msgs := kafkatest.ReadAll(t, h.tg, h.topic)
	latest := map[string]avro.User{}
	seen := map[string]bool{}
	var r result
	r.messages = len(msgs)
	for _, m := range msgs {
		u, err := h.codec.Decode(m.Value)
		require.NoError(t, err, "offset %d", m.Offset)
		require.Equal(t, string(m.Key), u.ID, "the key is the id (offset %d)", m.Offset)
		require.Equal(t, u.UpdatedAt.Format(cursor.TimeLayout), m.Headers[pipeline.HeaderUpdatedAt], "updated_at header (offset %d)", m.Offset)
		require.Equal(t, pipelineName, m.Headers[pipeline.HeaderPipeline])
		k := string(m.Key) + "\x00" + m.Headers[pipeline.HeaderUpdatedAt] + "\x00" + string(m.Value)
		if seen[k] {
			r.duplicates++
		}
		seen[k] = true
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
	return r
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

// topicTail reads a topic incrementally: each read fetches only what was appended since the
// previous one, so checking after every kill stays cheap as the topic grows.
type topicTail struct {
	client   *kafka.Client
	raw      *kafkago.Client // for Fetch: Scan reads from the start, this from where it stopped
	topic    string
	next     map[int]int64
	count    int
	values   map[string]bool // id \x00 value
	versions map[string]bool // id \x00 updated_at header
	digests  map[uint64]bool // cursor.Digest of every message, as a cursor's lookback holds it
}

func newTopicTail(c *kafka.Client, raw *kafkago.Client, name string) *topicTail {
	return &topicTail{client: c, raw: raw, topic: name, next: map[int]int64{}, values: map[string]bool{}, versions: map[string]bool{}, digests: map[uint64]bool{}}
}

func (tt *topicTail) hasValue(id string, v []byte) bool { return tt.values[id+"\x00"+string(v)] }
func (tt *topicTail) hasVersion(id, at string) bool     { return tt.versions[id+"\x00"+at] }

func (tt *topicTail) read(ctx context.Context) error {
	parts, err := tt.client.Partitions(ctx, tt.topic)
	if err != nil {
		return err
	}
	for _, p := range parts {
		res, err := tt.raw.ListOffsets(ctx, &kafkago.ListOffsetsRequest{
			Topics: map[string][]kafkago.OffsetRequest{tt.topic: {kafkago.LastOffsetOf(p)}},
		})
		if err != nil {
			return fmt.Errorf("list offsets of %s/%d: %w", tt.topic, p, err)
		}
		end := int64(-1)
		for _, po := range res.Topics[tt.topic] {
			if po.Partition == p {
				if po.Error != nil {
					return fmt.Errorf("list offsets of %s/%d: %w", tt.topic, p, po.Error)
				}
				end = po.LastOffset
			}
		}
		if end < 0 {
			return fmt.Errorf("list offsets of %s/%d: no answer", tt.topic, p)
		}
		off := tt.next[p]
		for off < end {
			f, err := tt.raw.Fetch(ctx, &kafkago.FetchRequest{Topic: tt.topic, Partition: p, Offset: off, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond})
			if err == nil {
				err = f.Error
			}
			if err != nil {
				return fmt.Errorf("fetch %s/%d at %d: %w", tt.topic, p, off, err)
			}
			before := off
			for off < end {
				r, err := f.Records.ReadRecord()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return fmt.Errorf("read %s/%d at %d: %w", tt.topic, p, off, err)
				}
				if r.Offset < off {
					continue
				}
				key, err := protocol.ReadAll(r.Key)
				if err != nil {
					return err
				}
				value, err := protocol.ReadAll(r.Value)
				if err != nil {
					return err
				}
				var at string
				for _, hd := range r.Headers {
					if hd.Key == pipeline.HeaderUpdatedAt {
						at = string(hd.Value)
					}
				}
				tt.values[string(key)+"\x00"+string(value)] = true
				tt.versions[string(key)+"\x00"+at] = true
				if t, err := cursor.ParseTime(at); err == nil {
					tt.digests[cursor.Digest(string(key), t, source.Fingerprint(value))] = true
				}
				tt.count++
				off = r.Offset + 1
			}
			if off == before {
				return fmt.Errorf("fetch %s/%d at %d: no record before the end offset %d (high watermark %d)", tt.topic, p, off, end, f.HighWatermark)
			}
		}
		tt.next[p] = off
	}
	return nil
}
