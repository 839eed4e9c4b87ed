package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/internal/topic"
	"github.com/keysetsync/keysetsync/pipeline"
)

// tailMaxWait is how long one fetch waits at the end of a partition for new messages.
const tailMaxWait = 500 * time.Millisecond

// tailTimeLayout is RFC 3339 with the milliseconds of a Kafka timestamp, always three digits.
const tailTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// tailRetryFor bounds how long retryable Kafka errors (broker down, leader moving) are retried
// in a row before tail gives up.
const tailRetryFor = time.Minute

// tailLine is one line of tail's output. Value is the JSON null for a tombstone; it is left
// out, and Error set, when the value does not decode.
type tailLine struct {
	Partition int               `json:"partition"`
	Offset    int64             `json:"offset"`
	Timestamp string            `json:"timestamp"`
	Key       *string           `json:"key"`
	Headers   map[string]string `json:"headers"`
	Value     json.RawMessage   `json:"value,omitempty"`
	Error     string            `json:"error,omitempty"`
}

// newToolUser is a decoded value as the tools print it: the field names of the source API, times
// in RFC 3339 UTC, null kept for an absent optional field.
func newToolUser(u avro.User) avro.UserJSON[string, *string] {
	updated := toolTime(u.UpdatedAt)
	j := avro.UserJSON[string, *string]{ID: u.ID, Name: u.Name, Email: u.Email, Address: u.Address, Company: u.Company, Job: u.Job, UpdatedAt: &updated}
	if u.CreatedAt != nil {
		s := toolTime(*u.CreatedAt)
		j.CreatedAt = &s
	}
	return j
}

// toolTime formats t as RFC 3339 in UTC, with fractional seconds only when there are some.
func toolTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// topicReadFlags are the flags of the tools that read the data topic (tail, snapshot): where
// the topic is, how to reach it, and how its values are framed.
type topicReadFlags struct {
	brokers, topic string
	sec            kafkaSecurityFlags
	reg            registryFlags
	source         sourceFlags // only its --schema
}

func (f *topicReadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.brokers, "brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers")
	fs.StringVar(&f.topic, "topic", "users", "data topic to read")
	fs.StringVar(&f.source.schemaFile, "schema", "", "Avro schema file (.avsc) the values were written with (default: the built-in users schema)")
	f.sec.register(fs)
	f.reg.registerRead(fs)
}

func (f *topicReadFlags) validate() []error {
	errs := append(f.sec.validate(), f.reg.validate()...)
	if _, err := f.source.schema(); err != nil {
		errs = append(errs, err)
	}
	if f.topic == "" {
		errs = append(errs, errors.New("--topic is empty"))
	}
	if len(brokerList(f.brokers)) == 0 {
		errs = append(errs, errors.New("--brokers is empty"))
	}
	return errs
}

// decoder decodes the topic's values as the flags say they were written.
func (f *topicReadFlags) decoder() (*valueDecoder, error) {
	s, err := f.source.schema()
	if err != nil {
		return nil, err
	}
	return newValueDecoder(s, &f.reg)
}

// client is a kafka-go client for the read-only tools; close releases its connections.
func (f *topicReadFlags) client(e *env, clientID string) (client *kafka.Client, close func(), err error) {
	transport, err := newKafkaTransport(&f.sec, clientID, stderrLogger(e))
	if err != nil {
		return nil, nil, err
	}
	return newKafkaClient(f.brokers, transport), transport.CloseIdleConnections, nil
}

func runTail(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "tail", "Print the messages of the data topic as JSON lines, values decoded: one object per message with\n"+
		"partition, offset, timestamp, key, headers and value (null for a tombstone; \"error\" instead\n"+
		"when it does not decode). Starts at the end of every partition unless --from-beginning or --from,\n"+
		"and follows new messages until SIGINT/SIGTERM, or stops after --max-messages. Reads without a\n"+
		"consumer group: it commits nothing and does not disturb other consumers.")
	var rf topicReadFlags
	rf.register(fs)
	fromBeginning := fs.Bool("from-beginning", false, "start at the first message of every partition")
	from := fs.String("from", "", "start, per partition, at the first message produced at or after this RFC 3339 time")
	key := fs.String("key", "", "print only the messages with this key (a record id)")
	maxMessages := fs.Int("max-messages", 0, "stop after printing this many messages (0: follow until SIGINT/SIGTERM)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	errs := rf.validate()
	if *maxMessages < 0 {
		errs = append(errs, fmt.Errorf("--max-messages %d: must not be negative", *maxMessages))
	}
	var fromTime time.Time
	if *from != "" {
		var err error
		if fromTime, err = time.Parse(time.RFC3339Nano, *from); err != nil {
			errs = append(errs, fmt.Errorf("--from %q: want an RFC 3339 time such as 2024-01-15T10:30:00Z", *from))
		}
		if *fromBeginning {
			errs = append(errs, errors.New("--from-beginning and --from exclude each other"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}

	dec, err := rf.decoder()
	if err != nil {
		return err
	}
	client, closeClient, err := rf.client(e, "keysetsync-tail")
	if err != nil {
		return err
	}
	defer closeClient()

	var parts []int
	err = retryKafka(ctx, func() error {
		parts, err = topic.Partitions(ctx, client, rf.topic)
		return err
	})
	if ctx.Err() != nil {
		return nil // interrupted before anything was printed: a stop, not a failure
	}
	if err != nil {
		return fmt.Errorf("topic %q on %s: %w", rf.topic, rf.brokers, err)
	}
	slices.Sort(parts)
	start, err := tailStart(ctx, client, rf.topic, parts, *fromBeginning, fromTime)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	where := "the end"
	switch {
	case *fromBeginning:
		where = "the beginning"
	case *from != "":
		where = "the first message at or after " + toolTime(fromTime)
	}
	offs := make([]string, 0, len(parts))
	for _, p := range parts {
		offs = append(offs, fmt.Sprintf("%d:%d", p, start[p]))
	}
	mode := "following until SIGINT/SIGTERM"
	if *maxMessages > 0 {
		mode = fmt.Sprintf("stopping after %d messages", *maxMessages)
	}
	// This line also tells scripts (and tests) that the start offsets are fixed.
	fmt.Fprintf(e.stderr, "tail: topic %q from %s (partition:offset %s), %s\n", rf.topic, where, strings.Join(offs, " "), mode)

	t := &tailer{client: client, dec: dec, topic: rf.topic, key: *key, max: *maxMessages, out: e.stdout, stderr: e.stderr}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.stop = cancel
	errc := make(chan error, len(parts))
	for _, p := range parts {
		go func() { errc <- t.partition(ctx, p, start[p]) }()
	}
	var first error
	for range parts {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel() // one partition failed: stop the others too
		}
	}
	return first
}

// tailStart returns the offset each partition starts at: its first offset, its end, or the
// first offset whose timestamp is at or after from (the end when there is none).
func tailStart(ctx context.Context, c *kafka.Client, name string, parts []int, fromBeginning bool, from time.Time) (map[int]int64, error) {
	list := func(reqs []kafka.OffsetRequest) (map[int]kafka.PartitionOffsets, error) {
		var out map[int]kafka.PartitionOffsets
		err := retryKafka(ctx, func() error {
			res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{name: reqs}})
			if err != nil {
				return err
			}
			out = map[int]kafka.PartitionOffsets{}
			for _, po := range res.Topics[name] {
				if po.Error != nil {
					return fmt.Errorf("partition %d: %w", po.Partition, po.Error)
				}
				out[po.Partition] = po
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list offsets of topic %q: %w", name, err)
		}
		for _, p := range parts {
			if _, ok := out[p]; !ok {
				return nil, fmt.Errorf("list offsets of topic %q: no answer for partition %d", name, p)
			}
		}
		return out, nil
	}
	var reqs []kafka.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	bounds, err := list(reqs)
	if err != nil {
		return nil, err
	}
	start := map[int]int64{}
	for _, p := range parts {
		if fromBeginning {
			start[p] = bounds[p].FirstOffset
		} else {
			start[p] = bounds[p].LastOffset
		}
	}
	if from.IsZero() {
		return start, nil
	}
	reqs = reqs[:0]
	for _, p := range parts {
		reqs = append(reqs, kafka.TimeOffsetOf(p, from))
	}
	// Asked separately from the bounds: kafka-go files an answer by its timestamp, and "none
	// found" comes back as timestamp -1, the code of the last offset.
	at, err := list(reqs)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		for off := range at[p].Offsets {
			start[p] = off // at most one: the first offset with a timestamp >= from
		}
	}
	return start, nil
}

// tailer prints the messages of one topic; one goroutine per partition shares it.
type tailer struct {
	client *kafka.Client
	dec    *valueDecoder
	topic  string
	key    string
	max    int // 0: no limit
	stop   func()

	mu      sync.Mutex
	out     io.Writer
	stderr  io.Writer
	printed int
	buf     bytes.Buffer
}

// partition fetches partition p from offset until ctx ends (nil) or an error that retrying for
// tailRetryFor did not cure.
func (t *tailer) partition(ctx context.Context, p int, offset int64) error {
	var failingSince time.Time
	delay := 50 * time.Millisecond
	for ctx.Err() == nil {
		f, err := t.client.Fetch(ctx, &kafka.FetchRequest{
			Topic: t.topic, Partition: p, Offset: offset,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: tailMaxWait,
		})
		if err == nil {
			err = f.Error
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, kafka.OffsetOutOfRange) {
			// Retention or DeleteRecords removed the messages at offset: go on from the
			// partition's first offset, and say so.
			first, ferr := t.firstOffset(ctx, p)
			if ferr != nil {
				return ferr
			}
			if first > offset {
				t.warn("tail: %s/%d: offsets %d to %d were deleted before they were read; going on at %d", t.topic, p, offset, first-1, first)
				offset = first
				continue
			}
		}
		if err != nil {
			if !tailRetryable(err) {
				return fmt.Errorf("fetch %s/%d at offset %d: %w", t.topic, p, offset, err)
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > tailRetryFor {
				return fmt.Errorf("fetch %s/%d at offset %d: still failing after %s: %w", t.topic, p, offset, tailRetryFor, err)
			}
			if !sleepCtx(ctx, delay) {
				return nil
			}
			delay = min(2*delay, 2*time.Second)
			continue
		}
		failingSince, delay = time.Time{}, 50*time.Millisecond
		lines, next, err := t.decode(f.Records, p, offset)
		if err != nil {
			return err
		}
		if done, err := t.print(lines); err != nil || done {
			return err
		}
		if next == offset && f.HighWatermark > offset {
			// Nothing readable at offset although more follows: control records or a hole left
			// by compaction. Step over it.
			next = offset + 1
		}
		offset = next
	}
	return nil
}

func (t *tailer) firstOffset(ctx context.Context, p int) (int64, error) {
	res, err := t.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{t.topic: {kafka.FirstOffsetOf(p)}}})
	if err != nil {
		return 0, fmt.Errorf("list offsets of %s/%d: %w", t.topic, p, err)
	}
	for _, po := range res.Topics[t.topic] {
		if po.Partition == p {
			if po.Error != nil {
				return 0, fmt.Errorf("list offsets of %s/%d: %w", t.topic, p, po.Error)
			}
			return po.FirstOffset, nil
		}
	}
	return 0, fmt.Errorf("list offsets of %s/%d: no answer for the partition", t.topic, p)
}

// decode turns the records of one fetch at or after offset into output lines (only those with
// --key when it is set) and returns the offset to fetch next.
func (t *tailer) decode(rr kafka.RecordReader, p int, offset int64) ([][]byte, int64, error) {
	var lines [][]byte
	next := offset
	if rr == nil {
		return nil, next, nil
	}
	for {
		r, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return lines, next, nil
		}
		if err != nil {
			return lines, next, fmt.Errorf("read %s/%d at offset %d: %w", t.topic, p, next, err)
		}
		if r.Offset < offset {
			continue // a batch may start before the offset asked for
		}
		next = r.Offset + 1
		k, err := protocol.ReadAll(r.Key)
		if err != nil {
			return lines, next, fmt.Errorf("read key at %s/%d offset %d: %w", t.topic, p, r.Offset, err)
		}
		if t.key != "" && string(k) != t.key {
			continue
		}
		v, err := protocol.ReadAll(r.Value)
		if err != nil {
			return lines, next, fmt.Errorf("read value at %s/%d offset %d: %w", t.topic, p, r.Offset, err)
		}
		line := tailLine{Partition: p, Offset: r.Offset, Timestamp: r.Time.UTC().Format(tailTimeLayout), Headers: map[string]string{}}
		if k != nil {
			s := string(k)
			line.Key = &s
		}
		for _, h := range r.Headers {
			line.Headers[h.Key] = string(h.Value)
		}
		if v == nil {
			line.Value = json.RawMessage("null")
		} else if u, err := t.dec.decode(v); err != nil {
			line.Error = fmt.Sprintf("value of %d bytes does not decode as %s: %v", len(v), t.dec.name(), err)
		} else if line.Value, err = json.Marshal(u); err != nil {
			return lines, next, fmt.Errorf("encode value at %s/%d offset %d: %w", t.topic, p, r.Offset, err)
		}
		b, err := json.Marshal(line)
		if err != nil {
			return lines, next, fmt.Errorf("encode message at %s/%d offset %d: %w", t.topic, p, r.Offset, err)
		}
		lines = append(lines, b)
	}
}

// print writes lines, at most up to --max-messages in all; done is true once that many are out.
func (t *tailer) print(lines [][]byte) (done bool, err error) {
	if len(lines) == 0 {
		return false, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.max > 0 && t.printed >= t.max {
		return true, nil
	}
	t.buf.Reset()
	for _, l := range lines {
		t.buf.Write(l)
		t.buf.WriteByte('\n')
		t.printed++
		if t.max > 0 && t.printed == t.max {
			done = true
			break
		}
	}
	if _, err := t.out.Write(t.buf.Bytes()); err != nil {
		return true, fmt.Errorf("write output: %w", err)
	}
	if done {
		t.stop() // the other partitions stop too
	}
	return done, nil
}

// warn writes one line to stderr, between the lines of output.
func (t *tailer) warn(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.stderr, format+"\n", args...)
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// tailRetryable reports whether a Kafka call may succeed if tried again. A missing topic is not
// worth waiting for: it fails at once.
func tailRetryable(err error) bool {
	return !errors.Is(err, kafka.UnknownTopicOrPartition) && pipeline.IsRetryable(err)
}

// retryKafka calls fn until it succeeds, fails with an error that is not retryable, ctx ends, or
// it has failed for tailRetryFor.
func retryKafka(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(tailRetryFor)
	delay := 20 * time.Millisecond
	for {
		err := fn()
		if err == nil || !tailRetryable(err) || time.Now().After(deadline) {
			return err
		}
		if !sleepCtx(ctx, delay) {
			return err
		}
		delay = min(2*delay, 2*time.Second)
	}
}
