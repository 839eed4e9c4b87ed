package topic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// Record is one record read by Scan. Value is nil for a tombstone.
type Record struct {
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kafka.Header
	Time      time.Time
}

// Scan reads every partition of name from its first offset up to the end offset it observed
// when it started, calling fn for each record in offset order within a partition. It returns
// as soon as that data is read: it never waits for more to arrive, which is what makes loading
// a cursor take milliseconds (a kafka-go Reader would wait MaxWait at the end of a partition).
func Scan(ctx context.Context, c *kafka.Client, name string, fn func(Record) error) error {
	parts, err := Partitions(ctx, c, name)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := scanPartition(ctx, c, name, p, fn); err != nil {
			return err
		}
	}
	return nil
}

func scanPartition(ctx context.Context, c *kafka.Client, name string, partition int, fn func(Record) error) error {
	var first, end int64 = -1, -1
	err := retryTemporary(ctx, func() error {
		res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{
			Topics: map[string][]kafka.OffsetRequest{name: {kafka.FirstOffsetOf(partition), kafka.LastOffsetOf(partition)}},
		})
		if err != nil {
			return err
		}
		for _, po := range res.Topics[name] {
			if po.Partition == partition {
				if po.Error != nil {
					return po.Error
				}
				first, end = po.FirstOffset, po.LastOffset
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list offsets of %s/%d: %w", name, partition, err)
	}
	if first < 0 || end < 0 {
		return fmt.Errorf("list offsets of %s/%d: no answer for the partition", name, partition)
	}
	for offset := first; offset < end; {
		var f *kafka.FetchResponse
		err := retryTemporary(ctx, func() error {
			var err error
			f, err = c.Fetch(ctx, &kafka.FetchRequest{
				Topic: name, Partition: partition, Offset: offset,
				MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond,
			})
			if err == nil {
				err = f.Error
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("fetch %s/%d at offset %d: %w", name, partition, offset, err)
		}
		next, err := readBatch(f.Records, name, partition, offset, end, fn)
		if err != nil {
			return err
		}
		if next == offset {
			// Nothing at or after offset in the answer: the rest is control records or holes
			// left by compaction. Stop at the high watermark; otherwise step over the offset.
			if f.HighWatermark <= offset {
				return nil
			}
			next = offset + 1
		}
		offset = next
	}
	return nil
}

func readBatch(rr kafka.RecordReader, name string, partition int, offset, end int64, fn func(Record) error) (int64, error) {
	next := offset
	for {
		r, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return next, nil
		}
		if err != nil {
			return next, fmt.Errorf("read %s/%d at offset %d: %w", name, partition, next, err)
		}
		if r.Offset < offset {
			continue // a batch may start before the offset asked for
		}
		if r.Offset >= end {
			return end, nil
		}
		next = r.Offset + 1
		rec := Record{Partition: partition, Offset: r.Offset, Headers: r.Headers, Time: r.Time}
		if rec.Key, err = protocol.ReadAll(r.Key); err != nil {
			return next, fmt.Errorf("read key at %s/%d offset %d: %w", name, partition, r.Offset, err)
		}
		if rec.Value, err = protocol.ReadAll(r.Value); err != nil {
			return next, fmt.Errorf("read value at %s/%d offset %d: %w", name, partition, r.Offset, err)
		}
		if err := fn(rec); err != nil {
			return next, err
		}
	}
}

// retryTemporary retries fn for a few seconds while it fails with a transient Kafka error (see
// Transient), such as NOT_LEADER_OR_FOLLOWER while a new topic's leader is still being elected
// or a leader moves. Network failures are left to the caller, whose retries span a broker
// restart.
func retryTemporary(ctx context.Context, fn func() error) error {
	delay := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if transient, _ := Transient(err); err == nil || !transient || attempt == 10 {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}
