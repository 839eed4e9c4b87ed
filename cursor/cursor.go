// Package cursor holds the position of each pipeline in its source API and the stores that make
// that position durable.
//
// A cursor says: every record with updatedAt before LastUpdatedAt, and the records listed in
// Delivered at exactly LastUpdatedAt, were acknowledged by Kafka. The pipeline commits a cursor
// only after that is true, so a cursor is never ahead of acknowledged data.
package cursor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Version is the cursor format written by this build. Readers accept this version and older.
const Version = 1

// TimeLayout is the playground API's time format, YYYY-MM-DDTHH:MM:SSZ. Cursor times are
// written in it when they are whole seconds (FormatTime), so a cursor of such an API reads
// exactly like the Fivetran example's state.
const TimeLayout = "2006-01-02T15:04:05Z"

// FormatTime writes a cursor time: RFC 3339 in UTC, with a fraction only when the time has
// one (APIs with millisecond or finer update times), so whole seconds give TimeLayout.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseTime reads a cursor time written by FormatTime (or any RFC 3339 time, made UTC).
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// Start is where a pipeline with no committed cursor begins: before any record.
var Start = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)

// Cursor is the committed position of one pipeline.
type Cursor struct {
	Pipeline string
	// LastUpdatedAt is the greatest updatedAt delivered so far (UTC), as precise as the API's
	// times.
	LastUpdatedAt time.Time
	// Delivered maps the id of every record delivered with updatedAt == LastUpdatedAt to a
	// fingerprint of its content. The API's times have a finite precision (whole seconds in the
	// playground), so the next pass must re-read LastUpdatedAt inclusively: this set lets it
	// skip what it already sent, and the fingerprint lets a record that changed again within
	// that same second through.
	Delivered map[string]string
	// Lookback holds the records delivered with updatedAt inside the lookback window before
	// LastUpdatedAt (empty without --lookback). A pass re-reads that window to catch records
	// the source committed late, and skips these when their content is unchanged.
	Lookback map[string]Delivery
	// Seq increases by one with every commit of the pipeline; the highest wins on load, so the
	// cursor survives a change in the number of partitions of the cursor topic.
	Seq int64
	// CommittedAt is when the cursor was written (informational).
	CommittedAt time.Time
	// Records is the running total of records delivered by the pipeline (informational).
	Records int64
	// ReadFrom says where Load found this cursor ("topic/partition offset N" for a
	// KafkaStore), so errors about its content can point at the record; empty when it was not
	// read from a topic. It is not part of the stored value.
	ReadFrom string
}

// MaxSeq is the largest Seq a cursor record may carry: 2^53, the largest integer a JSON number
// holds exactly in most tools (jq, JavaScript). A record beyond it is corrupt (Unmarshal) and is
// never written (Marshal): a Seq near 2^63 would wrap on the next commit, so the cursor could no
// longer move and every pass would re-send the same records.
const MaxSeq = 1 << 53

// Delivery is a record delivered at UpdatedAt with content Fingerprint.
type Delivery struct {
	UpdatedAt   time.Time
	Fingerprint string
}

// Store keeps the committed cursor of each pipeline.
//
// The contract every implementation meets (see internal/cursortest):
//   - Load returns the cursor most recently committed for the pipeline, or an error wrapping
//     ErrNotFound when none was ever committed. Cursors of other pipelines never interfere.
//   - Commit returns nil only once the cursor is durable: a Load after it, from this process or
//     any other, returns that cursor or a later one.
//   - A Commit that fails may or may not have become durable. Callers must not assume either;
//     they resume from Load.
//   - Commit refuses a Seq outside 0..MaxSeq, and nothing is stored.
type Store interface {
	Load(ctx context.Context, pipeline string) (Cursor, error)
	Commit(ctx context.Context, c Cursor) error
	Close() error
}

var (
	// ErrNotFound is returned by Load when the pipeline has never committed a cursor.
	ErrNotFound = errors.New("no cursor committed")
	// ErrNotCompacted is returned by NewKafkaStore when the cursor topic exists without
	// cleanup.policy=compact: its cursors would eventually be deleted by retention.
	ErrNotCompacted = errors.New("cursor topic is not compacted")
	// ErrCorrupt is returned by Load when a cursor record of the pipeline cannot be decoded
	// (see CorruptError). Starting over would re-send the whole source, so this is never
	// papered over.
	ErrCorrupt = errors.New("corrupt cursor record")
	// ErrFuture marks a loaded cursor whose LastUpdatedAt lies further ahead of now than the
	// pipeline allows: a pass from it would skip every record until then.
	ErrFuture = errors.New("cursor is in the future")
)

// CorruptError is a cursor record of the pipeline that cannot be decoded and that no later
// record of the pipeline in the same partition supersedes. Writing a new cursor (keysetsync
// cursor set or reset) is the way out: it lands after the bad record in its partition.
type CorruptError struct {
	Pipeline string
	At       string // where the record is: "topic/partition offset N"
	Err      error  // why it cannot be read; wraps ErrCorrupt
	// Readable is the cursor of the highest Seq among the pipeline's readable records, nil if
	// none: a new cursor must have a higher Seq to win over it.
	Readable *Cursor
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("cursor of %q at %s: %v; no later cursor record supersedes it: repair it, or write a new cursor over it with keysetsync cursor set --pipeline %s --to <time> (or cursor reset)",
		e.Pipeline, e.At, e.Err, e.Pipeline)
}

// Unwrap returns the cause, which wraps ErrCorrupt.
func (e *CorruptError) Unwrap() error { return e.Err }

// checkSeq refuses a Seq that a cursor record may not carry (see MaxSeq).
func checkSeq(seq int64) error {
	if seq < 0 || seq > MaxSeq {
		return fmt.Errorf("seq %d is outside 0..2^53 (%d)", seq, int64(MaxSeq))
	}
	return nil
}

// wire is the JSON value stored in the cursor topic. last_updated_at keeps the field name of the
// Fivetran keyset example's state, so tools that read that state read ours too.
type wire struct {
	Version       int                  `json:"version"`
	Pipeline      string               `json:"pipeline"`
	LastUpdatedAt string               `json:"last_updated_at"`
	Delivered     map[string]string    `json:"delivered_at_last_updated_at,omitempty"`
	Lookback      map[string][2]string `json:"delivered_in_lookback,omitempty"` // id -> [updatedAt, fingerprint]
	Seq           int64                `json:"seq"`
	CommittedAt   string               `json:"committed_at,omitempty"`
	Records       int64                `json:"records_delivered"`
}

// Marshal encodes c as the JSON value of a cursor record. A Seq outside 0..MaxSeq is refused.
func Marshal(c Cursor) ([]byte, error) {
	if err := checkSeq(c.Seq); err != nil {
		return nil, err
	}
	w := wire{
		Version:       Version,
		Pipeline:      c.Pipeline,
		LastUpdatedAt: FormatTime(c.LastUpdatedAt),
		Delivered:     c.Delivered,
		Seq:           c.Seq,
		Records:       c.Records,
	}
	if len(c.Lookback) > 0 {
		w.Lookback = make(map[string][2]string, len(c.Lookback))
		for id, d := range c.Lookback {
			w.Lookback[id] = [2]string{FormatTime(d.UpdatedAt), d.Fingerprint}
		}
	}
	if !c.CommittedAt.IsZero() {
		w.CommittedAt = c.CommittedAt.UTC().Format(time.RFC3339Nano)
	}
	return json.Marshal(w)
}

// Unmarshal decodes the JSON value of a cursor record. A value with only last_updated_at (the
// Fivetran example's state) is accepted, so a user can seed a cursor by hand.
func Unmarshal(b []byte) (Cursor, error) {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return Cursor{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if w.Version > Version {
		return Cursor{}, fmt.Errorf("%w: version %d is newer than this build understands (%d)", ErrCorrupt, w.Version, Version)
	}
	t, err := ParseTime(w.LastUpdatedAt)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: last_updated_at %q: want an RFC 3339 time such as %s", ErrCorrupt, w.LastUpdatedAt, TimeLayout)
	}
	if err := checkSeq(w.Seq); err != nil {
		return Cursor{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	c := Cursor{Pipeline: w.Pipeline, LastUpdatedAt: t, Delivered: w.Delivered, Seq: w.Seq, Records: w.Records}
	for id, d := range w.Lookback {
		at, err := ParseTime(d[0])
		if err != nil {
			return Cursor{}, fmt.Errorf("%w: delivered_in_lookback[%q]: updatedAt %q: want an RFC 3339 time such as %s", ErrCorrupt, id, d[0], TimeLayout)
		}
		if c.Lookback == nil {
			c.Lookback = make(map[string]Delivery, len(w.Lookback))
		}
		c.Lookback[id] = Delivery{UpdatedAt: at, Fingerprint: d[1]}
	}
	if w.CommittedAt != "" {
		if c.CommittedAt, err = time.Parse(time.RFC3339Nano, w.CommittedAt); err != nil {
			return Cursor{}, fmt.Errorf("%w: committed_at %q: %w", ErrCorrupt, w.CommittedAt, err)
		}
	}
	return c, nil
}
