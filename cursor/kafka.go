package cursor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

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
	if err := s.writer.WriteMessages(ctx, kafka.Message{Key: []byte(c.Pipeline), Value: b}); err != nil {
		return fmt.Errorf("commit cursor of %q to topic %q: %w", c.Pipeline, s.topic, err)
	}
	return nil
}

// Load implements Store. It reads every partition of the cursor topic up to the end offset it
// observed when it started, so it returns as soon as that data is read instead of waiting for
// more to arrive, and keeps the cursor of pipeline with the highest Seq.
func (s *KafkaStore) Load(ctx context.Context, pipeline string) (Cursor, error) {
	parts, err := topic.Partitions(ctx, s.client, s.topic)
	if err != nil {
		return Cursor{}, fmt.Errorf("load cursor of %q: %w", pipeline, err)
	}
	var best Cursor
	found := false
	for _, p := range parts {
		c, ok, err := s.loadPartition(ctx, pipeline, p)
		if err != nil {
			return Cursor{}, fmt.Errorf("load cursor of %q: %w", pipeline, err)
		}
		if ok && (!found || c.Seq >= best.Seq) {
			best, found = c, true
		}
	}
	if !found {
		return Cursor{}, fmt.Errorf("pipeline %q in topic %q: %w", pipeline, s.topic, ErrNotFound)
	}
	return best, nil
}

func (s *KafkaStore) loadPartition(ctx context.Context, pipeline string, partition int) (Cursor, bool, error) {
	res, err := s.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{s.topic: {kafka.FirstOffsetOf(partition), kafka.LastOffsetOf(partition)}},
	})
	if err != nil {
		return Cursor{}, false, fmt.Errorf("list offsets of %s/%d: %w", s.topic, partition, err)
	}
	var first, end int64 = -1, -1
	for _, po := range res.Topics[s.topic] {
		if po.Partition != partition {
			continue
		}
		if po.Error != nil {
			return Cursor{}, false, fmt.Errorf("list offsets of %s/%d: %w", s.topic, partition, po.Error)
		}
		first, end = po.FirstOffset, po.LastOffset
	}
	if first < 0 || end < 0 {
		return Cursor{}, false, fmt.Errorf("list offsets of %s/%d: no answer for the partition", s.topic, partition)
	}
	var best Cursor
	found := false
	for offset := first; offset < end; {
		f, err := s.client.Fetch(ctx, &kafka.FetchRequest{
			Topic: s.topic, Partition: partition, Offset: offset,
			MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 100 * time.Millisecond,
		})
		if err != nil {
			return Cursor{}, false, fmt.Errorf("fetch %s/%d at offset %d: %w", s.topic, partition, offset, err)
		}
		if f.Error != nil {
			return Cursor{}, false, fmt.Errorf("fetch %s/%d at offset %d: %w", s.topic, partition, offset, f.Error)
		}
		next, err := s.scan(f.Records, pipeline, partition, offset, &best, &found)
		if err != nil {
			return Cursor{}, false, err
		}
		if next == offset {
			// Nothing at or after offset in this answer: compaction or an aborted transaction
			// left a hole; the end offset is still ahead, so the next fetch moves on from the
			// broker's high watermark view.
			if f.HighWatermark <= offset {
				break
			}
			next = offset + 1
		}
		offset = next
	}
	return best, found, nil
}

// scan reads one fetch answer, keeps the newest cursor of pipeline and returns the next offset.
func (s *KafkaStore) scan(rr kafka.RecordReader, pipeline string, partition int, offset int64, best *Cursor, found *bool) (int64, error) {
	next := offset
	for {
		r, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return next, nil
		}
		if err != nil {
			return next, fmt.Errorf("read %s/%d at offset %d: %w", s.topic, partition, next, err)
		}
		if r.Offset < offset {
			continue // a batch may start before the offset asked for
		}
		next = r.Offset + 1
		key, err := protocol.ReadAll(r.Key)
		if err != nil {
			return next, fmt.Errorf("read key at %s/%d offset %d: %w", s.topic, partition, r.Offset, err)
		}
		if string(key) != pipeline {
			continue
		}
		val, err := protocol.ReadAll(r.Value)
		if err != nil {
			return next, fmt.Errorf("read value at %s/%d offset %d: %w", s.topic, partition, r.Offset, err)
		}
		if val == nil {
			// A tombstone deletes the pipeline's cursor: start over.
			*best, *found = Cursor{}, false
			continue
		}
		c, err := Unmarshal(val)
		if err != nil {
			return next, fmt.Errorf("cursor of %q at %s/%d offset %d: %w", pipeline, s.topic, partition, r.Offset, err)
		}
		c.Pipeline = pipeline
		if !*found || c.Seq >= best.Seq {
			*best, *found = c, true
		}
	}
}

// Close implements Store.
func (s *KafkaStore) Close() error { return s.writer.Close() }
