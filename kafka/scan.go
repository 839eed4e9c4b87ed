package kafka

import (
	"context"
	"time"

	"github.com/keysetsync/keysetsync/sink"
)

// Record is one record read by Scan, TxnReadPartition or a Reader. Value is nil for a
// tombstone.
type Record struct {
	Partition int
	Offset    int64
	Key       []byte // nil: no key
	Value     []byte // nil: a tombstone
	Headers   []sink.Header
	Time      time.Time
}

// ScanOptions tune ScanWith.
type ScanOptions struct {
	// Uncommitted reads as a consumer with isolation.level=read_uncommitted: up to the high
	// watermark, the records of open and aborted transactions included. By default a scan
	// reads committed data only (see TxnReadPartition): what read_committed consumers see.
	Uncommitted bool
}

// Scan is ScanWith with the default options: committed data only.
func (c *Client) Scan(ctx context.Context, name string, fn func(Record) error) error {
	return c.ScanWith(ctx, name, ScanOptions{}, fn)
}

// ScanWith reads every partition of name from its first offset up to the end it observed when
// it started (the last stable offset, or with Uncommitted the high watermark), calling fn for
// each record in offset order within a partition. It returns as soon as that data is read: it
// never waits for more to arrive, which is what makes loading a cursor take milliseconds (a
// kafka-go Reader would wait MaxWait at the end of a partition). Read committed, it drops the
// records of aborted transactions and stops before a transaction still open, as Kafka's
// read_committed consumers do; a topic without transactions reads the same either way.
//
// Transient Kafka answers (a leader being elected) are retried a few times; a network failure
// is returned at once, left to the caller's retries, which span a broker restart.
func (c *Client) ScanWith(ctx context.Context, name string, opts ScanOptions, fn func(Record) error) error {
	parts, err := c.Partitions(ctx, name)
	if err != nil {
		return err
	}
	for _, p := range parts {
		r := &txnReader{c: c.client, topic: name, partition: p, committed: !opts.Uncommitted, few: true}
		if _, err := r.read(ctx, TxnFirstOffset, fn); err != nil {
			return Classify(err)
		}
	}
	return nil
}
