package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/keysetsync/keysetsync/sink"
)

// TxnRecord is one record read by TxnReadPartition.
type TxnRecord = Record

// TxnFirstOffset, as TxnReadPartition's from, reads from the partition's log start offset.
const TxnFirstOffset int64 = -2

// txnFetchMaxBytes bounds one fetch answer (per partition and in all). A first batch that is
// larger is sent whole anyway (KIP-74).
const txnFetchMaxBytes = 4 << 20

// TxnReadPartition reads one partition of topic from offset from (or TxnFirstOffset) up to the
// end it finds when it starts, calling fn for each record in offset order, and returns the
// offset to read from next time (that end, or from if from is at or past it). fn's error
// stops the read and is returned as is.
//
// With committed, it reads as a consumer with isolation.level=read_committed does: up to the
// last stable offset (LSO), so it never returns a record of a transaction still open, and
// never waits for one either, and it drops the records of aborted transactions. Without it,
// it reads up to the high watermark and returns every record written, aborted ones included.
// Transaction markers (control batches) are never returned.
//
// kafka-go's Client.Fetch cannot do the first: it sends isolation_level=1 but returns aborted
// transactions' records, as it ignores the answer's aborted transactions. This sends Fetch
// itself and filters as Kafka's clients do (franz-go's kgo aborter, the Java Fetcher's
// abortedProducerIds): the answer lists, for the fetched range, each aborted transaction as
// (producer id, first offset). A transactional batch of producer P is aborted when P has a
// listed transaction whose first offset is at or before the batch; P's next abort marker
// (a control batch whose record type is 0) ends that transaction, so P's later batches are
// checked against its next listed one. The list is per answer: the broker lists every aborted
// transaction overlapping the fetched range, including one that began before it.
//
// A compacted topic may hold a batch whose last records were removed (KAFKA-5443) while the
// batch keeps its offset range; the next offset is then past what its records show, and
// kafka-go does not expose the batch's last offset. When a fetch makes no progress for that
// reason, the end of the batch is found by bisection (see skipBatch).
//
// Transient answers (a leader moving, metadata not yet propagated: isTransient) and
// transport failures are retried with backoff until ctx ends; OFFSET_OUT_OF_RANGE (from
// before the log start or past the high watermark) is not.
func TxnReadPartition(ctx context.Context, kc *Client, topicName string, partition int, from int64, committed bool, fn func(TxnRecord) error) (int64, error) {
	r := &txnReader{c: kc.client, topic: topicName, partition: partition, committed: committed}
	return r.read(ctx, from, fn)
}

type txnReader struct {
	c         *kafkago.Client
	topic     string
	partition int
	committed bool
	// maxWait is how long a fetch at the end waits for records (0: it answers at once).
	maxWait time.Duration
	// few: a failed fetch or list offsets is retried only for a transient Kafka answer, 10
	// attempts at most (Scan: a network failure is the caller's to retry); otherwise every
	// transient failure, transport ones included, is retried until ctx ends.
	few bool
}

func (r *txnReader) read(ctx context.Context, from int64, fn func(TxnRecord) error) (int64, error) {
	if from < 0 {
		if from != TxnFirstOffset {
			return from, r.errorf(fmt.Errorf("invalid offset %d", from), "read")
		}
		start, err := r.logStart(ctx)
		if err != nil {
			return from, err
		}
		from = start
	}
	next, end := from, int64(-1)
	empty := 0
	for end < 0 || next < end {
		res, err := r.fetch(ctx, next)
		if err != nil {
			return next, err
		}
		if end < 0 {
			if end = r.end(res); next >= end {
				return next, nil
			}
		}
		if next, err = r.step(ctx, res, next, end, &empty, fn); err != nil {
			return next, err
		}
	}
	return next, nil
}

// end is where reading stops in a fetch answer: the last stable offset read committed (no
// record of a transaction still open), the high watermark otherwise.
func (r *txnReader) end(res *fetch.ResponsePartition) int64 {
	if r.committed {
		return res.LastStableOffset
	}
	return res.HighWatermark
}

// step hands the records of the fetch answer res at offset next and below end to fn, and
// returns the offset to fetch next. empty counts the answers in a row that brought nothing
// below end although there is data there: not expected from Kafka, so after a few it fails
// rather than loop for ever.
func (r *txnReader) step(ctx context.Context, res *fetch.ResponsePartition, next, end int64, empty *int, fn func(Record) error) (int64, error) {
	batches, err := txnBatches(res)
	if err != nil {
		return next, r.errorf(err, "fetch at offset %d", next)
	}
	n, err := r.process(res, batches, next, end, fn)
	if err != nil {
		return n, err
	}
	switch {
	case n > next || next >= end:
		*empty = 0
	case len(batches) > 0:
		// Every record of the batch holding next is before it: its tail was compacted.
		if n, err = r.skipBatch(ctx, next, end, batches[0].Offset()); err != nil {
			return next, err
		}
	default:
		if *empty++; *empty > 3 {
			return next, r.errorf(fmt.Errorf("no records at offset %d below the end %d (high watermark %d, last stable offset %d)",
				next, end, res.HighWatermark, res.LastStableOffset), "read")
		}
	}
	return n, nil
}

// process hands the records of one fetch answer at offset next to fn and returns the offset
// after the last one it went past (next if none).
func (r *txnReader) process(res *fetch.ResponsePartition, batches []txnBatch, next, end int64, fn func(TxnRecord) error) (int64, error) {
	var ab txnAborter
	if r.committed {
		ab = txnNewAborter(res.AbortedTransactions)
	}
	for _, b := range batches {
		base := b.Offset()
		if base >= end {
			return end, nil
		}
		// Batches follow each other: one starting after next means the offsets before it
		// are gone (compacted).
		next = max(next, base)
		switch b := b.(type) {
		case *protocol.ControlBatch:
			rec, err := b.ReadControlRecord()
			if err != nil {
				return next, r.errorf(err, "control record at offset %d", base)
			}
			if r.committed && b.Attributes.Transactional() && rec.Type == txnControlAbort {
				ab.ended(b.ProducerID, base)
			}
			// A control batch holds its one marker record.
			next = max(next, base+1)
			txnDrain(b)
		case *protocol.RecordBatch:
			aborted := r.committed && b.Attributes.Transactional() && ab.aborted(b.ProducerID, base)
			n, err := r.records(b, next, end, aborted, fn)
			if err != nil {
				return n, err
			}
			next = n
		default: // v0/v1 message sets: no transactions
			n, err := r.records(b, next, end, false, fn)
			if err != nil {
				return n, err
			}
			next = n
		}
		if next >= end {
			return end, nil
		}
	}
	return next, nil
}

// records hands a batch's records from offset next (a batch may start before the offset
// fetched) and below end to fn, unless the batch is aborted, and returns the offset after the
// last record it went past.
func (r *txnReader) records(b protocol.RecordReader, next, end int64, aborted bool, fn func(TxnRecord) error) (int64, error) {
	defer txnDrain(b)
	for {
		rec, err := b.ReadRecord()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return next, nil
			}
			return next, r.errorf(err, "decode record after offset %d", next)
		}
		off := rec.Offset
		if off < next || off >= end || aborted {
			txnCloseRecord(rec)
			if off >= end {
				return end, nil
			}
			next = max(next, off+1)
			continue
		}
		tr, err := r.record(rec)
		if err != nil {
			return next, err
		}
		if err := fn(tr); err != nil {
			return next, err
		}
		next = off + 1
	}
}

func (r *txnReader) record(rec *protocol.Record) (TxnRecord, error) {
	defer txnCloseRecord(rec)
	tr := TxnRecord{Partition: r.partition, Offset: rec.Offset, Time: rec.Time}
	var err error
	if tr.Key, err = protocol.ReadAll(rec.Key); err != nil {
		return tr, r.errorf(err, "key of record at offset %d", rec.Offset)
	}
	if tr.Value, err = protocol.ReadAll(rec.Value); err != nil {
		return tr, r.errorf(err, "value of record at offset %d", rec.Offset)
	}
	if len(rec.Headers) > 0 {
		tr.Headers = make([]sink.Header, len(rec.Headers))
		for i, h := range rec.Headers {
			tr.Headers[i] = sink.Header{Key: h.Key, Value: slices.Clone(h.Value)}
		}
	}
	return tr, nil
}

// skipBatch finds where the batch starting at base, all of whose remaining records are before
// next, ends: the smallest offset above next whose fetch no longer starts with that batch (a
// fetch answers from the start of the batch holding the offset asked for). Every offset in
// between belongs to the batch and holds no record. Bisection between next and end takes a
// few dozen fetches at most, and only on a compacted topic.
func (r *txnReader) skipBatch(ctx context.Context, next, end, base int64) (int64, error) {
	lo, hi := next, end // fetching lo answers the batch; fetching hi does not
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		res, err := r.fetch(ctx, mid)
		if err != nil {
			return next, err
		}
		batches, err := txnBatches(res)
		if err != nil {
			return next, r.errorf(err, "fetch at offset %d", mid)
		}
		if len(batches) > 0 && batches[0].Offset() == base {
			lo = mid
		} else {
			hi = mid
		}
		for _, b := range batches {
			txnDrain(b)
		}
	}
	return hi, nil
}

// fetch sends one Fetch for the partition at offset and returns its answer, retrying
// transient failures (isTransient).
func (r *txnReader) fetch(ctx context.Context, offset int64) (*fetch.ResponsePartition, error) {
	var out *fetch.ResponsePartition
	err := txnRetry(ctx, nil, r.isTransient(), nil, func(ctx context.Context) error {
		var err error
		out, err = r.fetchOnce(ctx, offset)
		return err
	})
	if err != nil {
		return nil, r.errorf(err, "fetch at offset %d", offset)
	}
	return out, nil
}

// isTransient is the retry rule of one request (see few).
func (r *txnReader) isTransient() func(context.Context, error) bool {
	if !r.few {
		return txnReadTransient
	}
	attempts := 0
	return func(_ context.Context, err error) bool {
		attempts++
		transient, _ := isTransient(err)
		return transient && attempts < 10
	}
}

// fetchOnce sends one Fetch for the partition at offset and returns its answer or its error,
// a partition's error code as a kafkago.Error.
func (r *txnReader) fetchOnce(ctx context.Context, offset int64) (*fetch.ResponsePartition, error) {
	iso := int8(0)
	if r.committed {
		iso = 1
	}
	req := &fetch.Request{
		ReplicaID: -1,
		// A read fetches only offsets below the end, which are there: no reason to wait;
		// a Reader's Follow waits at the end for more.
		MaxWaitTime:    int32(r.maxWait.Milliseconds()),
		MinBytes:       1,
		MaxBytes:       txnFetchMaxBytes,
		IsolationLevel: iso,
		SessionEpoch:   -1, // no fetch session
		Topics: []fetch.RequestTopic{{Topic: r.topic, Partitions: []fetch.RequestPartition{{
			Partition: int32(r.partition), CurrentLeaderEpoch: -1, FetchOffset: offset, LogStartOffset: -1, PartitionMaxBytes: txnFetchMaxBytes,
		}}}},
	}
	res, err := txnRoundTrip[*fetch.Response](ctx, r.c, req, "fetch")
	if err != nil {
		return nil, err
	}
	if res.ErrorCode != 0 {
		return nil, kafkago.Error(res.ErrorCode)
	}
	for _, t := range res.Topics {
		for i, p := range t.Partitions {
			if t.Topic == r.topic && int(p.Partition) == r.partition {
				if p.ErrorCode != 0 {
					return nil, kafkago.Error(p.ErrorCode)
				}
				return &t.Partitions[i], nil
			}
		}
	}
	return nil, fmt.Errorf("partition missing from the fetch answer: %w", kafkago.NetworkException)
}

// logStart asks the partition's leader for its log start offset.
func (r *txnReader) logStart(ctx context.Context) (int64, error) {
	var start int64
	err := txnRetry(ctx, nil, r.isTransient(), nil, func(ctx context.Context) error {
		res, err := r.c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{
			Topics: map[string][]kafkago.OffsetRequest{r.topic: {kafkago.FirstOffsetOf(r.partition)}},
		})
		if err != nil {
			return err
		}
		for _, p := range res.Topics[r.topic] {
			if p.Partition == r.partition {
				if p.Error != nil {
					return p.Error
				}
				start = p.FirstOffset
				return nil
			}
		}
		return fmt.Errorf("partition missing from the list offsets answer: %w", kafkago.NetworkException)
	})
	if err != nil {
		return 0, r.errorf(err, "log start offset")
	}
	return start, nil
}

func (r *txnReader) errorf(cause error, format string, args ...any) error {
	iso := "read_uncommitted"
	if r.committed {
		iso = "read_committed"
	}
	return fmt.Errorf("%s/%d (%s): %s: %w", r.topic, r.partition, iso, fmt.Sprintf(format, args...), cause)
}

// txnReadTransient: failures of a fetch or list offsets after which the same request may
// succeed.
func txnReadTransient(ctx context.Context, err error) bool {
	if transient, isKafka := isTransient(err); isKafka {
		return transient
	}
	return txnTransport(ctx, err)
}

// txnBatch is one batch of a fetch answer: *protocol.RecordBatch, *protocol.ControlBatch
// or *protocol.MessageSet.
type txnBatch interface {
	protocol.RecordReader
	Offset() int64 // the base offset
}

// txnBatches lists the batches of a fetch answer: kafka-go decodes a record set into a
// RecordStream of batches which keep each batch's producer id and attributes (the stream's
// own ReadRecord skips the control batches and loses the rest). A batch cut off by the
// answer's size is not in it.
func txnBatches(res *fetch.ResponsePartition) ([]txnBatch, error) {
	var readers []protocol.RecordReader
	switch rs := res.RecordSet.Records.(type) {
	case nil:
		return nil, nil
	case *protocol.RecordStream:
		readers = rs.Records
	default:
		readers = []protocol.RecordReader{rs}
	}
	out := make([]txnBatch, len(readers))
	for i, r := range readers {
		b, ok := r.(txnBatch)
		if !ok {
			return nil, fmt.Errorf("fetch answer: unexpected batch %T", r)
		}
		out[i] = b
	}
	return out, nil
}

// txnControlAbort is the type of an abort marker's control record (commit is 1).
const txnControlAbort = 0

// txnAborter holds a fetch answer's aborted transactions: per producer id, the first offsets
// of its aborted transactions not yet ended by an abort marker, ascending (the broker need not
// list them in order).
type txnAborter map[int64][]int64

func txnNewAborter(list []fetch.ResponseTransaction) txnAborter {
	a := txnAborter{}
	for _, t := range list {
		a[t.ProducerID] = append(a[t.ProducerID], t.FirstOffset)
	}
	for pid := range a {
		slices.Sort(a[pid])
	}
	return a
}

// aborted reports whether producer pid's transactional batch at base belongs to an aborted
// transaction: its earliest open aborted transaction began at or before base.
func (a txnAborter) aborted(pid, base int64) bool {
	first := a[pid]
	return len(first) > 0 && first[0] <= base
}

// ended records producer pid's abort marker at offset: the aborted transaction it closes is
// over, so the producer's later batches are judged by its next one.
func (a txnAborter) ended(pid, offset int64) {
	if first := a[pid]; len(first) > 0 && first[0] <= offset {
		a[pid] = first[1:]
	}
}

// txnDrain reads what is left of a batch, closing each record's key and value, which
// returns the answer's buffers to kafka-go's pool.
func txnDrain(b protocol.RecordReader) {
	for {
		rec, err := b.ReadRecord()
		if err != nil {
			return
		}
		txnCloseRecord(rec)
	}
}

func txnCloseRecord(rec *protocol.Record) {
	if rec.Key != nil {
		rec.Key.Close()
	}
	if rec.Value != nil {
		rec.Value.Close()
	}
}
