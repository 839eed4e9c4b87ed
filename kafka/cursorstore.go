package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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
// name, value = the JSON of cursor.Marshal. Several pipelines may share the topic.
type CursorStore struct {
	client *Client
	topic  string
	writer *kafkago.Writer
	log    *slog.Logger
}

var _ cursor.RecordStore = (*CursorStore)(nil)

// NewCursorStore checks the cursor topic, creating it compacted when it is missing, and refuses
// a topic that exists without compaction (cursor.ErrNotCompacted).
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
		Configs:           map[string]string{"cleanup.policy": "compact"},
	})
	if err != nil {
		return nil, fmt.Errorf("cursor topic: %w", err)
	}
	if policy := info.Configs["cleanup.policy"]; !strings.Contains(policy, "compact") {
		return nil, fmt.Errorf("%w: topic %q has cleanup.policy=%q; set cleanup.policy=compact on it or choose another cursor topic", cursor.ErrNotCompacted, cfg.Topic, policy)
	}
	if info.Created {
		log.Info("created cursor topic", "topic", cfg.Topic, "cleanup.policy", "compact")
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
	return &CursorStore{client: cfg.Client, topic: cfg.Topic, writer: w, log: log}, nil
}

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

// Load implements cursor.Store. It reads the cursor topic up to the end offsets it observed when it
// started (Client.Scan), and keeps the cursor of pipeline with the highest Seq.
//
// A record of the pipeline that cannot be decoded is an error (a *CorruptError naming its
// offset) unless a later record of the pipeline in the same partition supersedes it: a cursor
// written after it (keysetsync cursor set or reset does exactly that) or a tombstone. The error
// carries the highest readable cursor, so such a new cursor can take a higher Seq.
func (s *CursorStore) Load(ctx context.Context, pipeline string) (cursor.Cursor, error) {
	var best cursor.Cursor
	found := false
	corrupt := map[int]*cursor.CorruptError{} // by partition: the last unreadable record not yet superseded
	err := s.client.Scan(ctx, s.topic, func(r Record) error {
		if string(r.Key) != pipeline {
			return nil
		}
		at := fmt.Sprintf("%s/%d offset %d", s.topic, r.Partition, r.Offset)
		if prev := corrupt[r.Partition]; prev != nil {
			s.log.Warn("an unreadable cursor record is superseded by a later one", "pipeline", pipeline, "unreadable_at", prev.At, "err", prev.Err, "superseded_by", at)
			delete(corrupt, r.Partition)
		}
		if r.Value == nil {
			// A tombstone deletes the pipeline's cursor: start over.
			best, found = cursor.Cursor{}, false
			return nil
		}
		c, err := cursor.Unmarshal(r.Value)
		if err != nil {
			corrupt[r.Partition] = &cursor.CorruptError{Pipeline: pipeline, At: at, Err: err}
			return nil
		}
		c.Pipeline, c.ReadFrom = pipeline, at
		if !found || c.Seq >= best.Seq {
			best, found = c, true
		}
		return nil
	})
	if err != nil {
		return cursor.Cursor{}, fmt.Errorf("load cursor of %q: %w", pipeline, err)
	}
	for _, p := range slices.Sorted(maps.Keys(corrupt)) {
		e := corrupt[p]
		if found {
			e.Readable = &best
		}
		return cursor.Cursor{}, fmt.Errorf("load cursor of %q: %w", pipeline, e)
	}
	if !found {
		return cursor.Cursor{}, fmt.Errorf("pipeline %q in topic %q: %w", pipeline, s.topic, cursor.ErrNotFound)
	}
	return best, nil
}

// Close implements cursor.Store.
func (s *CursorStore) Close() error { return s.writer.Close() }
