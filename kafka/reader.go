package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/retry"
)

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	Topic string
	// MaxWait is how long one fetch waits at the end of a partition for new records (default
	// 500ms): the most a record written then waits before Follow hands it over.
	MaxWait time.Duration
	// RetryFor bounds how long a call keeps retrying retryable errors (a broker down, a leader
	// moving) in a row before it gives up (default 1 minute). A missing topic is not retried.
	RetryFor time.Duration
	// Uncommitted reads as a consumer with isolation.level=read_uncommitted: up to the high
	// watermark, the records of open and aborted transactions included. By default a Reader
	// reads committed data only, as read_committed consumers do: it stops at the last stable
	// offset (a transaction still open holds back what follows it until it ends) and drops
	// the records of aborted transactions; Offsets' End is the last stable offset.
	Uncommitted bool
	// Deleted, if set, is told when Follow finds the records at offsets from to to-1 of a
	// partition deleted (retention, DeleteRecords) before they were read; it goes on at to.
	Deleted func(partition int, from, to int64)
}

// Reader reads one topic without a consumer group: it commits nothing and disturbs no
// consumer. It is safe for concurrent use, one goroutine per partition.
type Reader struct {
	client *Client
	cfg    ReaderConfig
}

// NewReader returns a Reader of cfg.Topic.
func (c *Client) NewReader(cfg ReaderConfig) *Reader {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 500 * time.Millisecond
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = time.Minute
	}
	return &Reader{client: c, cfg: cfg}
}

// Offsets are the bounds of one partition: the first offset it still holds and its end, the
// offset of the next record written to it.
type Offsets struct {
	First, End int64
}

// Partitions returns the partition ids of the topic (see Client.Partitions).
func (r *Reader) Partitions(ctx context.Context) ([]int, error) {
	var parts []int
	err := r.retry(ctx, func() error {
		var err error
		parts, err = r.client.Partitions(ctx, r.cfg.Topic)
		return err
	})
	return parts, err
}

// Offsets returns the bounds of each of partitions.
func (r *Reader) Offsets(ctx context.Context, partitions []int) (map[int]Offsets, error) {
	var reqs []kafkago.OffsetRequest
	for _, p := range partitions {
		reqs = append(reqs, kafkago.FirstOffsetOf(p), kafkago.LastOffsetOf(p))
	}
	res, err := r.listOffsets(ctx, partitions, reqs)
	if err != nil {
		return nil, err
	}
	out := make(map[int]Offsets, len(res))
	for p, po := range res {
		out[p] = Offsets{First: po.FirstOffset, End: po.LastOffset}
	}
	return out, nil
}

// OffsetsAt returns, for each of partitions, the first offset whose timestamp is at or after t,
// or the partition's end when it has none.
func (r *Reader) OffsetsAt(ctx context.Context, partitions []int, t time.Time) (map[int]int64, error) {
	bounds, err := r.Offsets(ctx, partitions)
	if err != nil {
		return nil, err
	}
	var reqs []kafkago.OffsetRequest
	for _, p := range partitions {
		reqs = append(reqs, kafkago.TimeOffsetOf(p, t))
	}
	// Asked separately from the bounds: kafka-go files an answer by its timestamp, and "none
	// found" comes back as timestamp -1, the code of the last offset.
	at, err := r.listOffsets(ctx, partitions, reqs)
	if err != nil {
		return nil, err
	}
	out := make(map[int]int64, len(partitions))
	for _, p := range partitions {
		out[p] = bounds[p].End
		for off := range at[p].Offsets {
			// At most one: the first offset with a timestamp >= t. Kafka answers -1 when no
			// record is that late, which kafka-go files here too: the end, then.
			if off >= 0 {
				out[p] = off
			}
		}
	}
	return out, nil
}

// Follow reads partition from offset on and calls fn with the records of each fetch, in offset
// order, until ctx ends (nil), fn fails (its error, as it is), or a fetch fails with an error
// that is not retryable or still fails after RetryFor. At the end of the partition it waits for
// new records.
func (r *Reader) Follow(ctx context.Context, partition int, offset int64, fn func([]Record) error) error {
	name := r.cfg.Topic
	tr := &txnReader{c: r.client.client, topic: name, partition: partition, committed: !r.cfg.Uncommitted, maxWait: r.cfg.MaxWait}
	var failingSince time.Time
	delay := 50 * time.Millisecond
	var recs []Record
	empty := 0
	for ctx.Err() == nil {
		res, err := tr.fetchOnce(ctx, offset)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, kafkago.OffsetOutOfRange) {
			// Retention or DeleteRecords removed the records at offset: go on from the
			// partition's first offset, and say so.
			first, ferr := r.client.listOffsets(ctx, name, []int{partition}, []kafkago.OffsetRequest{kafkago.FirstOffsetOf(partition)}, false)
			if ferr != nil {
				return Classify(ferr)
			}
			if first := first[partition].FirstOffset; first > offset {
				if r.cfg.Deleted != nil {
					r.cfg.Deleted(partition, offset, first)
				}
				offset = first
				continue
			}
		}
		if err != nil {
			err = Classify(err)
			if !r.retryable(err) {
				return fmt.Errorf("fetch %s/%d at offset %d: %w", name, partition, offset, err)
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > r.cfg.RetryFor {
				return fmt.Errorf("fetch %s/%d at offset %d: still failing after %s: %w", name, partition, offset, r.cfg.RetryFor, err)
			}
			if retry.Sleep(ctx, delay) != nil {
				return nil
			}
			delay = min(2*delay, 2*time.Second)
			continue
		}
		failingSince, delay = time.Time{}, 50*time.Millisecond
		recs = recs[:0]
		// Control records, aborted transactions and holes left by compaction are stepped
		// over; fn sees every record below the end (read committed: the last stable offset).
		next, err := tr.step(ctx, res, offset, tr.end(res), &empty, func(rec Record) error {
			recs = append(recs, rec)
			return nil
		})
		if err != nil {
			return Classify(err)
		}
		if len(recs) > 0 {
			if err := fn(recs); err != nil {
				return err
			}
		}
		offset = next
	}
	return nil
}

// listOffsets is Client.listOffsets, retried.
func (r *Reader) listOffsets(ctx context.Context, partitions []int, reqs []kafkago.OffsetRequest) (map[int]kafkago.PartitionOffsets, error) {
	var res map[int]kafkago.PartitionOffsets
	err := r.retry(ctx, func() error {
		var err error
		res, err = r.client.listOffsets(ctx, r.cfg.Topic, partitions, reqs, !r.cfg.Uncommitted)
		return err
	})
	return res, err
}

// retryable: a missing topic is not worth waiting for.
func (r *Reader) retryable(err error) bool {
	return !errors.Is(err, ErrUnknownTopic) && retry.IsRetryable(err)
}

// retry calls fn until it succeeds, fails with an error that is not retryable, ctx ends, or it
// has failed for RetryFor; the error is classified.
func (r *Reader) retry(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(r.cfg.RetryFor)
	delay := 20 * time.Millisecond
	for {
		err := Classify(fn())
		if err == nil || !r.retryable(err) || time.Now().After(deadline) {
			return err
		}
		if retry.Sleep(ctx, delay) != nil {
			return err
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// listOffsets sends reqs (for partitions of name) and returns the answer per partition; a
// partition's error or a partition without an answer fails it. committed asks for the last
// stable offset as a partition's last offset, instead of the high watermark.
func (c *Client) listOffsets(ctx context.Context, name string, partitions []int, reqs []kafkago.OffsetRequest, committed bool) (map[int]kafkago.PartitionOffsets, error) {
	what := fmt.Sprintf("topic %q", name)
	if len(partitions) == 1 {
		what = fmt.Sprintf("%s/%d", name, partitions[0])
	}
	res, err := c.offsetsOf(ctx, what, map[string][]kafkago.OffsetRequest{name: reqs}, committed)
	if err != nil {
		return nil, err
	}
	out := make(map[int]kafkago.PartitionOffsets, len(res))
	for tp, po := range res {
		out[tp.partition] = po
	}
	return out, nil
}

// lastOffsets asks for the last offset of every partition of parts (topic -> partitions) in one
// ListOffsets call, which kafka-go sends as one request per partition leader; committed asks
// for the last stable offsets.
func (c *Client) lastOffsets(ctx context.Context, parts map[string][]int, committed bool) (map[txnPartition]int64, error) {
	reqs := map[string][]kafkago.OffsetRequest{}
	for topic, ps := range parts {
		for _, p := range ps {
			reqs[topic] = append(reqs[topic], kafkago.LastOffsetOf(p))
		}
	}
	res, err := c.offsetsOf(ctx, fmt.Sprint(parts), reqs, committed)
	if err != nil {
		return nil, err
	}
	out := make(map[txnPartition]int64, len(res))
	for tp, po := range res {
		out[tp] = po.LastOffset
	}
	return out, nil
}

// offsetsOf sends reqs (by topic) in one ListOffsets call and returns the answer per partition;
// a partition's error or a requested partition without an answer fails it. what names the
// request in the error of a failed call.
func (c *Client) offsetsOf(ctx context.Context, what string, reqs map[string][]kafkago.OffsetRequest, committed bool) (map[txnPartition]kafkago.PartitionOffsets, error) {
	iso := kafkago.ReadUncommitted
	if committed {
		iso = kafkago.ReadCommitted
	}
	res, err := c.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: reqs, IsolationLevel: iso})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", what, err)
	}
	out := map[txnPartition]kafkago.PartitionOffsets{}
	for topic, pos := range res.Topics {
		for _, po := range pos {
			if po.Error != nil {
				return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, po.Partition, po.Error)
			}
			out[txnPartition{topic, po.Partition}] = po
		}
	}
	for topic, rs := range reqs {
		for _, r := range rs {
			if _, ok := out[txnPartition{topic, r.Partition}]; !ok {
				// A broker's glitch, not a verdict on the partition: retryable, as a network error.
				return nil, fmt.Errorf("list offsets of %s/%d: no answer for the partition: %w", topic, r.Partition, kafkago.NetworkException)
			}
		}
	}
	return out, nil
}
