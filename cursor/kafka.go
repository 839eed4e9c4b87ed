package cursor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/internal/topic"
)

// KafkaConfig configures a KafkaStore.
type KafkaConfig struct {
	// Client talks to the cluster; its Transport is shared with the data writer.
	Client *kafka.Client
	// Topic holds the cursors, one key per pipeline. It must be compacted.
	Topic string
	// ReplicationFactor for the topic when it is created; -1 lets the broker decide.
	ReplicationFactor int
	Logger            *slog.Logger
}

// KafkaStore keeps cursors in a compacted Kafka topic: key = pipeline name, value = the JSON of
// Marshal. Several pipelines may share the topic.
type KafkaStore struct {
	client *kafka.Client
	topic  string
	writer *kafka.Writer
	log    *slog.Logger
}

var _ Store = (*KafkaStore)(nil)

// NewKafkaStore checks the cursor topic, creating it compacted when it is missing, and refuses a
// topic that exists without compaction (ErrNotCompacted).
func NewKafkaStore(ctx context.Context, cfg KafkaConfig) (*KafkaStore, error) {
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
	info, err := topic.Ensure(ctx, cfg.Client, topic.Spec{
		Name:              cfg.Topic,
		Partitions:        1,
		ReplicationFactor: cfg.ReplicationFactor,
		Configs:           map[string]string{"cleanup.policy": "compact"},
	})
	if err != nil {
		return nil, fmt.Errorf("cursor topic: %w", err)
	}
	if policy := info.Configs["cleanup.policy"]; !strings.Contains(policy, "compact") {
		return nil, fmt.Errorf("%w: topic %q has cleanup.policy=%q; set cleanup.policy=compact on it or choose another --cursor-topic", ErrNotCompacted, cfg.Topic, policy)
	}
	if info.Created {
		log.Info("created cursor topic", "topic", cfg.Topic, "cleanup.policy", "compact")
	}
	w := &kafka.Writer{
		Addr:         cfg.Client.Addr,
		Topic:        cfg.Topic,
		Transport:    cfg.Client.Transport,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		// One cursor per write: send it at once rather than waiting for a batch to fill.
		BatchSize:    1,
		BatchTimeout: time.Millisecond,
		// Uncompressed on purpose: kafka-go has open bugs reading compressed batches that
		// compaction has rewritten.
		Compression: 0,
	}
	return &KafkaStore{client: cfg.Client, topic: cfg.Topic, writer: w, log: log}, nil
}

// Commit implements Store.
func (s *KafkaStore) Commit(ctx context.Context, c Cursor) error {
	if c.Pipeline == "" {
		return errors.New("commit cursor: empty pipeline name")
	}
	b, err := Marshal(c)
	if err != nil {
		return fmt.Errorf("commit cursor of %q: %w", c.Pipeline, err)
	}
	// kafka-go picks at random between a done context and a write that completed at once: a
	// cancelled commit must fail, never land by chance.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("commit cursor of %q: %w", c.Pipeline, err)
	}
	if err := s.writer.WriteMessages(ctx, kafka.Message{Key: []byte(c.Pipeline), Value: b}); err != nil {
		return fmt.Errorf("commit cursor of %q to topic %q: %w", c.Pipeline, s.topic, err)
	}
	return nil
}

// Load implements Store. It reads the cursor topic up to the end offsets it observed when it
// started (topic.Scan), and keeps the cursor of pipeline with the highest Seq.
//
// A record of the pipeline that cannot be decoded is an error (a *CorruptError naming its
// offset) unless a later record of the pipeline in the same partition supersedes it: a cursor
// written after it (keysetsync cursor set or reset does exactly that) or a tombstone. The error
// carries the highest readable cursor, so such a new cursor can take a higher Seq.
func (s *KafkaStore) Load(ctx context.Context, pipeline string) (Cursor, error) {
	var best Cursor
	found := false
	corrupt := map[int]*CorruptError{} // by partition: the last unreadable record not yet superseded
	err := topic.Scan(ctx, s.client, s.topic, func(r topic.Record) error {
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
			best, found = Cursor{}, false
			return nil
		}
		c, err := Unmarshal(r.Value)
		if err != nil {
			corrupt[r.Partition] = &CorruptError{Pipeline: pipeline, At: at, Err: err}
			return nil
		}
		c.Pipeline, c.ReadFrom = pipeline, at
		if !found || c.Seq >= best.Seq {
			best, found = c, true
		}
		return nil
	})
	if err != nil {
		return Cursor{}, fmt.Errorf("load cursor of %q: %w", pipeline, err)
	}
	for _, p := range slices.Sorted(maps.Keys(corrupt)) {
		e := corrupt[p]
		if found {
			e.Readable = &best
		}
		return Cursor{}, fmt.Errorf("load cursor of %q: %w", pipeline, e)
	}
	if !found {
		return Cursor{}, fmt.Errorf("pipeline %q in topic %q: %w", pipeline, s.topic, ErrNotFound)
	}
	return best, nil
}

// Close implements Store.
func (s *KafkaStore) Close() error { return s.writer.Close() }
