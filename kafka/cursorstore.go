package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/cursor"
)

// CursorStoreConfig configures a CursorStore.
type CursorStoreConfig struct {
	// Client talks to the cluster; its connections are shared with the data writer.
	Client *Client
	// Topic holds the cursors, one key per pipeline. It must be compacted.
	Topic string
	// ReplicationFactor for the topic when it is created; -1 lets the broker decide.
	ReplicationFactor int
	Logger            *slog.Logger
}

// CursorStore is the cursor.Store that keeps cursors in a compacted Kafka topic: key = pipeline
// name, value = the JSON of cursor.Marshal. Several pipelines may share the topic, and the
// pipelines of one process should share one CursorStore of it: it reads the topic once and
// follows it (see Load).
type CursorStore struct {
	client *Client
	topic  string
	writer *kafkago.Writer
	follow *follower
	log    *slog.Logger
}

var _ cursor.RecordStore = (*CursorStore)(nil)

// NewCursorStore checks the cursor topic, creating it with CursorTopicConfigs when it is missing,
// refuses a topic that exists without compaction (cursor.ErrNotCompacted), logs a warning per
// setting that keeps an existing one growing (CheckCursorTopic), and starts reading it.
func NewCursorStore(ctx context.Context, cfg CursorStoreConfig) (*CursorStore, error) {
	if cfg.Client == nil || cfg.Topic == "" {
		return nil, errors.New("cursor store: client and topic are required")
	}
	if cfg.ReplicationFactor == 0 {
		cfg.ReplicationFactor = -1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	info, err := cfg.Client.EnsureTopic(ctx, TopicSpec{
		Name:              cfg.Topic,
		Partitions:        1,
		ReplicationFactor: cfg.ReplicationFactor,
		Configs:           CursorTopicConfigs(),
	})
	if err != nil {
		return nil, fmt.Errorf("cursor topic: %w", err)
	}
	if policy := info.Configs["cleanup.policy"]; !strings.Contains(policy, "compact") {
		return nil, fmt.Errorf("%w: topic %q has cleanup.policy=%q; set cleanup.policy=compact on it or choose another cursor topic", cursor.ErrNotCompacted, cfg.Topic, policy)
	}
	if info.Created {
		configs := TopicConfigFlag(CursorTopicConfigs())
		log.Info("created cursor topic", "topic", cfg.Topic, "configs", configs.String())
	}
	for _, w := range info.CheckCursorTopic(cfg.Topic) {
		log.Warn(w.Msg, w.Attrs...)
	}
	w := &kafkago.Writer{
		Addr:         cfg.Client.client.Addr,
		Topic:        cfg.Topic,
		Transport:    cfg.Client.transport,
		Balancer:     &kafkago.Murmur2Balancer{},
		RequiredAcks: kafkago.RequireAll,
		// One cursor per write: send it at once rather than waiting for a batch to fill.
		BatchSize:    1,
		BatchTimeout: time.Millisecond,
		// Uncompressed on purpose: kafka-go has open bugs reading compressed batches that
		// compaction has rewritten.
		Compression: 0,
	}
	return &CursorStore{client: cfg.Client, topic: cfg.Topic, writer: w, follow: newFollower(cfg.Client, cfg.Topic, log), log: log}, nil
}

// Topic returns the cursor topic.
func (s *CursorStore) Topic() string { return s.topic }

// Record implements cursor.RecordStore: the cursor topic, the pipeline's name and the JSON of
// cursor.Marshal, what Commit writes.
func (s *CursorStore) Record(c cursor.Cursor) (topic string, key, value []byte, err error) {
	if c.Pipeline == "" {
		return "", nil, nil, errors.New("commit cursor: empty pipeline name")
	}
	b, err := cursor.Marshal(c)
	if err != nil {
		return "", nil, nil, fmt.Errorf("commit cursor of %q: %w", c.Pipeline, err)
	}
	return s.topic, []byte(c.Pipeline), b, nil
}

// Commit implements cursor.Store.
func (s *CursorStore) Commit(ctx context.Context, c cursor.Cursor) error {
	_, _, b, err := s.Record(c)
	if err != nil {
		return err
	}
	// kafka-go picks at random between a done context and a write that completed at once: a
	// cancelled commit must fail, never land by chance.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit cursor of %q: %w", c.Pipeline, err)
	}
	if err := s.writer.WriteMessages(ctx, kafkago.Message{Key: []byte(c.Pipeline), Value: b}); err != nil {
		return Classify(fmt.Errorf("commit cursor of %q to topic %q: %w", c.Pipeline, s.topic, err))
	}
	return nil
}

// Load implements cursor.Store. It waits until the store's follower has read the cursor topic up
// to the end offsets listed after Load began (the last stable offsets: committed records only),
// then answers from memory: the cursor of pipeline with the highest Seq. An idle topic costs one
// ListOffsets, whatever its size; Loads that wait at the same time share one read.
//
// A record of the pipeline that cannot be decoded is an error (a *CorruptError naming its
// offset) unless a later record of the pipeline in the same partition supersedes it: a cursor
// written after it (keysetsync cursor set or reset does exactly that) or a tombstone. The error
// carries the highest readable cursor, so such a new cursor can take a higher Seq.
func (s *CursorStore) Load(ctx context.Context, pipeline string) (cursor.Cursor, error) {
	if err := s.follow.await(ctx); err != nil {
		return cursor.Cursor{}, fmt.Errorf("load cursor of %q: %w", pipeline, err)
	}
	return s.follow.cursorOf(pipeline)
}

// Close implements cursor.Store: it stops the follower and the writer. A store shared by
// several pipelines is closed once, by its owner, after them.
func (s *CursorStore) Close() error {
	s.follow.close()
	return s.writer.Close()
}

// The settings of a new cursor topic (CursorTopicConfigs). Compaction never touches a
// partition's active segment, and by the broker's defaults (segment.ms 7 days, segment.bytes
// 1 GiB) it rolls after a week: every cursor committed that week stays in the topic, and a
// process reads all of them when it starts. Rolling after an hour or 16 MiB, whichever comes
// first, bounds that to an hour of commits (1,000 pipelines committing every 30 s: 120,000
// records) or 16 MiB (a read of a fraction of a second); the files of a few rolled segments
// an hour are nothing to the broker, and compaction merges them.
const (
	cursorSegmentMs    = 60 * 60 * 1000
	cursorSegmentBytes = 16 << 20
	// The cleaner compacts a log once this share of it is superseded records. A cursor topic
	// is almost all superseded records and small once compacted, so cleaning it early costs
	// little (the broker's default is 0.5).
	cursorDirtyRatio = "0.1"
)

// Limits beyond which an existing cursor topic is warned about (CheckCursorTopic).
const (
	// The active segment is unbounded in practice when it rolls neither within a day nor
	// within 64 MiB.
	cursorWarnSegmentMs    = 24 * 60 * 60 * 1000
	cursorWarnSegmentBytes = 64 << 20
	// Records younger than min.compaction.lag.ms are never compacted.
	cursorWarnCompactionLagMs = 60 * 60 * 1000
	cursorWarnDirtyRatio      = 0.5
)

// CursorTopicConfigs returns the configs a missing cursor topic is created with: compacted, with
// an active segment that rolls within the hour or 16 MiB so that compaction can run on a small
// topic, records compactable at once (min.compaction.lag.ms 0) and cleaned early
// (min.cleanable.dirty.ratio 0.1).
func CursorTopicConfigs() map[string]string {
	return map[string]string{
		"cleanup.policy":            "compact",
		"segment.ms":                strconv.Itoa(cursorSegmentMs),
		"segment.bytes":             strconv.Itoa(cursorSegmentBytes),
		"min.cleanable.dirty.ratio": cursorDirtyRatio,
		"min.compaction.lag.ms":     "0",
	}
}

// CheckCursorTopic returns a warning for each setting of an existing cursor topic that keeps it
// growing: an active segment that rolls neither within a day nor within 64 MiB (compaction
// never cleans it), a min.compaction.lag.ms over an hour, a min.cleanable.dirty.ratio over the
// broker's default 0.5. A bigger topic is read at every start. Settings the broker does not
// report are not judged. The fix quotes CursorTopicConfigs' value.
func (i TopicInfo) CheckCursorTopic(name string) []ConfigWarning {
	num := func(k string) (float64, bool) {
		v, ok := i.Configs[k]
		if !ok {
			return 0, false
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		return n, err == nil
	}
	want := CursorTopicConfigs()
	fix := func(keys ...string) string {
		pairs := make([]string, len(keys))
		for j, k := range keys {
			pairs[j] = k + "=" + want[k]
		}
		return alterConfigCommand(name, pairs...)
	}
	var out []ConfigWarning
	segMs, okMs := num("segment.ms")
	segBytes, okBytes := num("segment.bytes")
	if okMs && okBytes && segMs > cursorWarnSegmentMs && segBytes > cursorWarnSegmentBytes {
		out = append(out, ConfigWarning{
			Msg: "the cursor topic's active segment rolls only after segment.ms or segment.bytes, and compaction never cleans an active segment: every cursor committed until then stays in the topic and is read at every start; keysetsync never alters an existing topic",
			Attrs: []any{"topic", name, "segment.ms", i.Configs["segment.ms"], "segment.bytes", i.Configs["segment.bytes"],
				"fix", fix("segment.ms", "segment.bytes")},
		})
	}
	if lag, ok := num("min.compaction.lag.ms"); ok && lag > cursorWarnCompactionLagMs {
		out = append(out, ConfigWarning{
			Msg:   "the cursor topic's min.compaction.lag.ms keeps every cursor younger than it from compaction: they stay in the topic and are read at every start; keysetsync never alters an existing topic",
			Attrs: []any{"topic", name, "min.compaction.lag.ms", i.Configs["min.compaction.lag.ms"], "fix", fix("min.compaction.lag.ms")},
		})
	}
	if ratio, ok := num("min.cleanable.dirty.ratio"); ok && ratio > cursorWarnDirtyRatio {
		out = append(out, ConfigWarning{
			Msg:   "the cursor topic's min.cleanable.dirty.ratio lets superseded cursors pile up before compaction runs: they are read at every start; keysetsync never alters an existing topic",
			Attrs: []any{"topic", name, "min.cleanable.dirty.ratio", i.Configs["min.cleanable.dirty.ratio"], "fix", fix("min.cleanable.dirty.ratio")},
		})
	}
	return out
}
