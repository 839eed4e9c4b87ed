package main

import (
	"bytes"
	"cmp"
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

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/kafka"
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
	uncommitted    bool
}

// registerReadUncommitted adds --read-uncommitted to a reading tool.
func registerReadUncommitted(fs *flag.FlagSet, p *bool) {
	fs.BoolVar(p, "read-uncommitted", false, "also read records of open and aborted transactions (default: committed data only)")
}

func (f *topicReadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.brokers, "brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers")
	fs.StringVar(&f.topic, "topic", "users", "data topic to read")
	fs.StringVar(&f.source.schemaFile, "schema", "", "Avro schema file (.avsc) the values were written with (default: the built-in users schema)")
	registerReadUncommitted(fs, &f.uncommitted)
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

// client is the Kafka client of the read-only tools; Close releases its connections.
func (f *topicReadFlags) client(e *env, clientID string) (*kafka.Client, error) {
	return newKafkaClient(&f.sec, f.brokers, clientID, stderrLogger(e))
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
	client, err := rf.client(e, "keysetsync-tail")
	if err != nil {
		return err
	}
	defer client.Close()

	t := &tailer{dec: dec, topic: rf.topic, key: *key, max: *maxMessages, out: e.stdout, stderr: e.stderr}
	rd := client.NewReader(kafka.ReaderConfig{Topic: rf.topic, MaxWait: tailMaxWait, RetryFor: tailRetryFor, Uncommitted: rf.uncommitted,
		Deleted: func(p int, from, to int64) {
			t.warn("tail: %s/%d: offsets %d to %d were deleted before they were read; going on at %d", rf.topic, p, from, to-1, to)
		}})
	parts, err := rd.Partitions(ctx)
	if ctx.Err() != nil {
		return nil // interrupted before anything was printed: a stop, not a failure
	}
	if err != nil {
		return fmt.Errorf("topic %q on %s: %w", rf.topic, rf.brokers, err)
	}
	slices.Sort(parts)
	start, err := tailStart(ctx, rd, parts, *fromBeginning, fromTime)
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

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.stop = cancel
	errc := make(chan error, len(parts))
	for _, p := range parts {
		go func() { errc <- t.partition(ctx, rd, p, start[p]) }()
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
func tailStart(ctx context.Context, rd *kafka.Reader, parts []int, fromBeginning bool, from time.Time) (map[int]int64, error) {
	if !from.IsZero() {
		return rd.OffsetsAt(ctx, parts, from)
	}
	bounds, err := rd.Offsets(ctx, parts)
	if err != nil {
		return nil, err
	}
	start := map[int]int64{}
	for _, p := range parts {
		if fromBeginning {
			start[p] = bounds[p].First
		} else {
			start[p] = bounds[p].End
		}
	}
	return start, nil
}

// tailer prints the messages of one topic; one goroutine per partition shares it.
type tailer struct {
	dec   *valueDecoder
	topic string
	key   string
	max   int // 0: no limit
	stop  func()

	mu      sync.Mutex
	out     io.Writer
	stderr  io.Writer
	printed int
	buf     bytes.Buffer
}

// errTailDone ends a partition's reading once --max-messages are printed.
var errTailDone = errors.New("printed --max-messages")

// partition prints partition p from offset until ctx ends or --max-messages are printed (nil),
// or an error that retrying did not cure.
func (t *tailer) partition(ctx context.Context, rd *kafka.Reader, p int, offset int64) error {
	err := rd.Follow(ctx, p, offset, func(recs []kafka.Record) error {
		lines, err := t.decode(recs)
		if err != nil {
			return err
		}
		if done, err := t.print(lines); err != nil || done {
			return cmp.Or(err, errTailDone)
		}
		return nil
	})
	if errors.Is(err, errTailDone) {
		return nil
	}
	return err
}

// decode turns records into output lines (only those with --key when it is set).
func (t *tailer) decode(recs []kafka.Record) ([][]byte, error) {
	var lines [][]byte
	for _, r := range recs {
		if t.key != "" && string(r.Key) != t.key {
			continue
		}
		line := tailLine{Partition: r.Partition, Offset: r.Offset, Timestamp: r.Time.UTC().Format(tailTimeLayout), Headers: map[string]string{}}
		if r.Key != nil {
			s := string(r.Key)
			line.Key = &s
		}
		for _, h := range r.Headers {
			line.Headers[h.Key] = string(h.Value)
		}
		if r.Value == nil {
			line.Value = json.RawMessage("null")
		} else if u, err := t.dec.decode(r.Value); err != nil {
			line.Error = fmt.Sprintf("value of %d bytes does not decode as %s: %v", len(r.Value), t.dec.name(), err)
		} else if line.Value, err = json.Marshal(u); err != nil {
			return lines, fmt.Errorf("encode value at %s/%d offset %d: %w", t.topic, r.Partition, r.Offset, err)
		}
		b, err := json.Marshal(line)
		if err != nil {
			return lines, fmt.Errorf("encode message at %s/%d offset %d: %w", t.topic, r.Partition, r.Offset, err)
		}
		lines = append(lines, b)
	}
	return lines, nil
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
