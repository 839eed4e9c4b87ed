package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/sink"
)

// Record is one record read by Scan. Value is nil for a tombstone.
type Record struct {
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []sink.Header
	Time      time.Time
}

// Scan reads every partition of name from its first offset up to the end offset it observed
// when it started, calling fn for each record in offset order within a partition. It returns
// as soon as that data is read: it never waits for more to arrive, which is what makes loading
// a cursor take milliseconds (a kafka-go Reader would wait MaxWait at the end of a partition).
func (c *Client) Scan(ctx context.Context, name string, fn func(Record) error) error {
	parts, err := c.Partitions(ctx, name)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := c.scanPartition(ctx, name, p, fn); err != nil {
			return Classify(err)
		}
	}
	return nil
}

func (c *Client) scanPartition(ctx context.Context, name string, partition int, fn func(Record) error) error {
	var bounds map[int]kafkago.PartitionOffsets
	err := retryTemporary(ctx, func() error {
		var err error
		bounds, err = c.listOffsets(ctx, name, []int{partition}, []kafkago.OffsetRequest{kafkago.FirstOffsetOf(partition), kafkago.LastOffsetOf(partition)})
		return err
	})
	if err != nil {
		return err
	}
	first, end := bounds[partition].FirstOffset, bounds[partition].LastOffset
	for offset := first; offset < end; {
		var f *kafkago.FetchResponse
		err := retryTemporary(ctx, func() error {
			var err error
			f, err = c.client.Fetch(ctx, &kafkago.FetchRequest{
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

// readBatch calls fn with each record of rr at or after offset and before end, and returns the
// offset to fetch next.
func readBatch(rr kafkago.RecordReader, name string, partition int, offset, end int64, fn func(Record) error) (int64, error) {
	next := offset
	if rr == nil {
		return next, nil
	}
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
		rec := Record{Partition: partition, Offset: r.Offset, Headers: headers(r.Headers), Time: r.Time}
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

// retryTemporary retries fn, up to 10 times from 20 ms, while it fails with a transient Kafka
// error (see isTransient), such as NOT_LEADER_OR_FOLLOWER while a new topic's leader is still
// being elected or a leader moves. Network failures are left to the caller, whose retries span a
// broker restart.
func retryTemporary(ctx context.Context, fn func() error) error {
	transient := func(err error) bool { t, _ := isTransient(err); return t }
	return retry.Do(ctx, retry.Policy{Attempts: 10, FirstDelay: 20 * time.Millisecond, MaxDelay: time.Second, Retryable: transient},
		func() (bool, error) { return false, fn() })
}

// headers converts kafka-go's headers; nil stays nil.
func headers(hs []kafkago.Header) []sink.Header {
	if hs == nil {
		return nil
	}
	out := make([]sink.Header, len(hs))
	for i, h := range hs {
		out[i] = sink.Header{Key: h.Key, Value: h.Value}
	}
	return out
}
