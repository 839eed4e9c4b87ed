// Package cursor holds the position of each pipeline in its source API and the stores that make
// that position durable.
//
// A cursor says: every record with updatedAt before LastUpdatedAt, and the records listed in
// Delivered at exactly LastUpdatedAt, were acknowledged by Kafka. The pipeline commits a cursor
// only after that is true, so a cursor is never ahead of acknowledged data.
package cursor

import (
	"github.com/keysetsync/keysetsync/retry"

	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
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
	// DeliveredPartial says Delivered is not every record delivered at LastUpdatedAt: more of
	// them were delivered than MaxBytes can list (a wide tie). A pass then resumes from LastID
	// when it can prove the tie is settled, and otherwise re-sends what it cannot tell apart
	// (duplicates, never a loss).
	DeliveredPartial bool
	// LastID, with an API that pages by (update time, id), is the id of the last record read
	// at LastUpdatedAt in the API's order: every record at LastUpdatedAt up to it was read.
	LastID string
	// TieSettled says the API already held later records when the records at LastUpdatedAt
	// were read, so none of them could change after: a partial cursor resumes from LastID
	// without reading them again.
	TieSettled bool
	// Lookback holds the records delivered with updatedAt inside the lookback window before
	// LastUpdatedAt (empty without --lookback), each as its Digest mapped to its updatedAt. A
	// pass re-reads that window to catch records the source committed late, and skips these
	// when their content is unchanged.
	Lookback map[uint64]time.Time
	// LookbackFrom, when set, is where Lookback's records start: records delivered inside the
	// window before it were too many to list within MaxBytes, and re-reading the window
	// re-sends them (duplicates, never a loss).
	LookbackFrom time.Time
	// Seq increases by one with every commit of the pipeline; the highest wins on load, so the
	// cursor survives a change in the number of partitions of the cursor topic.
	Seq int64
	// CommittedAt is when the cursor was written (informational).
	CommittedAt time.Time
	// Records is the running total of records delivered by the pipeline (informational).
	Records int64
	// Backfill, when set, is a parallel backfill in flight: the position above (LastUpdatedAt,
	// Delivered, DeliveredPartial, LastID, TieSettled) is that of its lowest unfinished range,
	// so every record before it was acknowledged, and Backfill lists the ranges after it up to
	// the horizon. A reader that ignores it resumes sequentially from the position: it only
	// re-sends.
	Backfill *Backfill
	// ReadFrom says where Load found this cursor ("topic/partition offset N" for a
	// kafka.CursorStore), so errors about its content can point at the record; empty when it was not
	// read from a topic. It is not part of the stored value.
	ReadFrom string
}

// Backfill is the state of a parallel backfill: the ranges between the cursor's own position
// and Horizon, each walked by its own keyset walk.
type Backfill struct {
	// Horizon is where the backfill ends: the final sequential walk of the pass starts there.
	Horizon time.Time
	// Ranges are the ranges after the one the cursor's position is in, by From, each ending
	// where the next begins (the last at Horizon). The cursor's own range ends at the first
	// From (at Horizon when there is none).
	Ranges []Range
}

// Range is one range of a Backfill: [From, the next range's From).
type Range struct {
	From time.Time
	// Done says every record of the range was acknowledged; the position fields are then
	// unset.
	Done bool
	// The range's position, as the cursor's fields of the same names: From, exact and nothing
	// delivered, for a range not started.
	LastUpdatedAt    time.Time
	Delivered        map[string]string
	DeliveredPartial bool
	LastID           string
	TieSettled       bool
}

// Position is c's position fields alone (LastUpdatedAt, Delivered, DeliveredPartial, LastID,
// TieSettled): where a walk resumes, without the pipeline's counters or a backfill.
func (c Cursor) Position() Cursor {
	return Cursor{LastUpdatedAt: c.LastUpdatedAt, Delivered: c.Delivered, DeliveredPartial: c.DeliveredPartial, LastID: c.LastID, TieSettled: c.TieSettled}
}

// RangeAt is the unfinished range starting at from whose walk stands at pos's position.
func RangeAt(from time.Time, pos Cursor) Range {
	return Range{From: from, LastUpdatedAt: pos.LastUpdatedAt, Delivered: pos.Delivered, DeliveredPartial: pos.DeliveredPartial, LastID: pos.LastID, TieSettled: pos.TieSettled}
}

// Position is where the walk of r, an unfinished range, stands, as a cursor's position fields.
func (r Range) Position() Cursor {
	return Cursor{LastUpdatedAt: r.LastUpdatedAt, Delivered: r.Delivered, DeliveredPartial: r.DeliveredPartial, LastID: r.LastID, TieSettled: r.TieSettled}
}

// End is where range i of b ends: the next range's From, or Horizon for the last.
func (b *Backfill) End(i int) time.Time {
	if i+1 < len(b.Ranges) {
		return b.Ranges[i+1].From
	}
	return b.Horizon
}

// Clone returns a copy of b that shares nothing with it that a walk changes (the Delivered
// maps are shared: they are copies already, never written after).
func (b *Backfill) Clone() *Backfill {
	if b == nil {
		return nil
	}
	return &Backfill{Horizon: b.Horizon, Ranges: slices.Clone(b.Ranges)}
}

// check refuses a backfill whose ranges do not follow the cursor's position in order up to
// the horizon, each position inside its range.
func (b *Backfill) check(last time.Time) error {
	if !last.Before(b.Horizon) {
		return fmt.Errorf("last_updated_at %s is not before the backfill horizon %s", FormatTime(last), FormatTime(b.Horizon))
	}
	prev := last
	for i, r := range b.Ranges {
		if !r.From.After(prev) {
			return fmt.Errorf("range %d starts at %s, not after %s", i, FormatTime(r.From), FormatTime(prev))
		}
		end := b.End(i)
		if !r.From.Before(end) {
			return fmt.Errorf("range %d starts at %s, not before its end %s", i, FormatTime(r.From), FormatTime(end))
		}
		if !r.Done && (r.LastUpdatedAt.Before(r.From) || !r.LastUpdatedAt.Before(end)) {
			return fmt.Errorf("range %d [%s, %s): last_updated_at %s is outside it", i, FormatTime(r.From), FormatTime(end), FormatTime(r.LastUpdatedAt))
		}
		prev = r.From
	}
	return nil
}

// MaxSeq is the largest Seq a cursor record may carry: 2^53, the largest integer a JSON number
// holds exactly in most tools (jq, JavaScript). A record beyond it is corrupt (Unmarshal) and is
// never written (Marshal): a Seq near 2^63 would wrap on the next commit, so the cursor could no
// longer move and every pass would re-send the same records.
const MaxSeq = 1 << 53

// MaxBytes bounds the JSON of a committed cursor, whatever the width of a tie or the records in
// a lookback window: the broker accepts it, and loading it stays cheap.
const MaxBytes = 64 << 10

// MaxLastIDBytes bounds LastID: a longer id cannot be a resume position and is not stored.
const MaxLastIDBytes = 1 << 10

// EntryBytes is an upper bound on the JSON bytes one id of Delivered adds to a cursor with a
// fingerprint of fpLen bytes; a Lookback entry adds LookbackEntryBytes more. Callers use it
// to keep a cursor within MaxBytes without marshalling it.
func EntryBytes(id string, fpLen int) int {
	n := 6 + fpLen // "id":"fp",
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case b < 0x20, b == '"', b == '\\', b == '<', b == '>', b == '&':
			n += 6 // \u00XX at worst
		case b >= 0x80:
			n += 2 // U+2028/9 (3 bytes) become 6
		default:
			n++
		}
	}
	return n
}

// LookbackEntryBytes bounds what one Lookback digest adds to a cursor's JSON: 8 bytes of
// digest and at most 10 of varint time, in base64.
const LookbackEntryBytes = 24

// Digest identifies a delivered record (its id, update time and content fingerprint) in 8
// bytes: what a lookback window keeps of it. Two different records share a digest with a
// chance of about 2^-64, the same order as two contents sharing a fingerprint.
func Digest(id string, at time.Time, fingerprint string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(at.UnixNano()))
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write(b[:])
	h.Write([]byte(fingerprint))
	return h.Sum64()
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

// RecordStore is a Store whose cursors are records of a topic (kafka.CursorStore): a writer
// that commits a batch and a record atomically (a Kafka transaction) can commit the cursor
// covering the batch with it, instead of calling Commit after it (the pipeline's exactly-once
// mode).
//
// Writing the record that Record returns is a Commit: Load afterwards returns c or a later
// cursor, as after Commit, provided Load reads only committed records (read_committed), so
// that the record of a transaction that never committed is never loaded.
type RecordStore interface {
	Store
	// Record returns the record that commits c: its topic, key and value. It refuses what
	// Commit refuses (an empty pipeline name, a Seq outside 0..MaxSeq).
	Record(c Cursor) (topic string, key, value []byte, err error)
}

var (
	// ErrNotFound is returned by Load when the pipeline has never committed a cursor.
	ErrNotFound = errors.New("no cursor committed")
	// ErrNotCompacted is returned by kafka.NewCursorStore when the cursor topic exists without
	// cleanup.policy=compact: its cursors would eventually be deleted by retention.
	ErrNotCompacted = retry.Permanent("cursor topic is not compacted")
	// ErrCorrupt is returned by Load when a cursor record of the pipeline cannot be decoded
	// (see CorruptError). Starting over would re-send the whole source, so this is never
	// papered over.
	ErrCorrupt = retry.Permanent("corrupt cursor record")
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
	return fmt.Sprintf("cursor of %q at %s: %v; no later cursor record supersedes it: repair it, or commit a new cursor over it",
		e.Pipeline, e.At, e.Err)
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
	Partial       bool                 `json:"delivered_partial,omitempty"`
	LastID        string               `json:"last_id,omitempty"`
	TieSettled    bool                 `json:"tie_settled,omitempty"`
	Lookback      map[string][2]string `json:"delivered_in_lookback,omitempty"` // read only: id -> [updatedAt, fingerprint]
	Digests       string               `json:"lookback_digests,omitempty"`      // see encodeLookback
	LookbackFrom  string               `json:"lookback_from,omitempty"`
	Seq           int64                `json:"seq"`
	CommittedAt   string               `json:"committed_at,omitempty"`
	Records       int64                `json:"records_delivered"`
	Backfill      *wireBackfill        `json:"backfill,omitempty"`
}

type wireBackfill struct {
	Horizon string      `json:"horizon"`
	Ranges  []wireRange `json:"ranges,omitempty"`
}

type wireRange struct {
	From          string            `json:"from"`
	Done          bool              `json:"done,omitempty"`
	LastUpdatedAt string            `json:"last_updated_at,omitempty"`
	Delivered     map[string]string `json:"delivered_at_last_updated_at,omitempty"`
	Partial       bool              `json:"delivered_partial,omitempty"`
	LastID        string            `json:"last_id,omitempty"`
	TieSettled    bool              `json:"tie_settled,omitempty"`
}

func marshalBackfill(b *Backfill) *wireBackfill {
	w := &wireBackfill{Horizon: FormatTime(b.Horizon), Ranges: make([]wireRange, len(b.Ranges))}
	for i, r := range b.Ranges {
		wr := wireRange{From: FormatTime(r.From), Done: r.Done}
		if !r.Done {
			wr.LastUpdatedAt, wr.Delivered, wr.Partial, wr.LastID, wr.TieSettled = FormatTime(r.LastUpdatedAt), r.Delivered, r.DeliveredPartial, r.LastID, r.TieSettled
		}
		w.Ranges[i] = wr
	}
	return w
}

// parseField reads the time of a cursor's JSON field, or says which field holds what and what it
// should hold.
func parseField(field, s string) (time.Time, error) {
	t, err := ParseTime(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time such as %s", field, s, TimeLayout)
	}
	return t, nil
}

func unmarshalBackfill(w *wireBackfill, last time.Time) (*Backfill, error) {
	var err error
	b := &Backfill{Ranges: make([]Range, len(w.Ranges))}
	if b.Horizon, err = parseField("horizon", w.Horizon); err != nil {
		return nil, err
	}
	for i, wr := range w.Ranges {
		r := Range{Done: wr.Done, Delivered: wr.Delivered, DeliveredPartial: wr.Partial, LastID: wr.LastID, TieSettled: wr.TieSettled}
		if r.From, err = parseField("from", wr.From); err != nil {
			return nil, fmt.Errorf("range %d: %w", i, err)
		}
		if !r.Done {
			if r.LastUpdatedAt, err = parseField("last_updated_at", wr.LastUpdatedAt); err != nil {
				return nil, fmt.Errorf("range %d: %w", i, err)
			}
		}
		b.Ranges[i] = r
	}
	if err := b.check(last); err != nil {
		return nil, err
	}
	return b, nil
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
		Partial:       c.DeliveredPartial,
		LastID:        c.LastID,
		TieSettled:    c.TieSettled,
		Seq:           c.Seq,
		Records:       c.Records,
	}
	if len(c.Lookback) > 0 {
		w.Digests = encodeLookback(c.LastUpdatedAt, c.Lookback)
	}
	if !c.LookbackFrom.IsZero() {
		w.LookbackFrom = FormatTime(c.LookbackFrom)
	}
	if !c.CommittedAt.IsZero() {
		w.CommittedAt = c.CommittedAt.UTC().Format(time.RFC3339Nano)
	}
	if c.Backfill != nil {
		if err := c.Backfill.check(c.LastUpdatedAt); err != nil {
			return nil, fmt.Errorf("backfill: %w", err)
		}
		w.Backfill = marshalBackfill(c.Backfill)
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
	t, err := parseField("last_updated_at", w.LastUpdatedAt)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err := checkSeq(w.Seq); err != nil {
		return Cursor{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	c := Cursor{Pipeline: w.Pipeline, LastUpdatedAt: t, Delivered: w.Delivered, DeliveredPartial: w.Partial, LastID: w.LastID, TieSettled: w.TieSettled, Seq: w.Seq, Records: w.Records}
	if w.LookbackFrom != "" {
		if c.LookbackFrom, err = parseField("lookback_from", w.LookbackFrom); err != nil {
			return Cursor{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
	}
	for id, d := range w.Lookback { // the format before lookback_digests
		at, err := parseField("updatedAt", d[0])
		if err != nil {
			return Cursor{}, fmt.Errorf("%w: delivered_in_lookback[%q]: %w", ErrCorrupt, id, err)
		}
		if c.Lookback == nil {
			c.Lookback = make(map[uint64]time.Time, len(w.Lookback))
		}
		c.Lookback[Digest(id, at, d[1])] = at
	}
	if w.Digests != "" {
		if c.Lookback, err = decodeLookback(t, w.Digests, c.Lookback); err != nil {
			return Cursor{}, fmt.Errorf("%w: lookback_digests: %w", ErrCorrupt, err)
		}
	}
	if w.CommittedAt != "" {
		if c.CommittedAt, err = time.Parse(time.RFC3339Nano, w.CommittedAt); err != nil {
			return Cursor{}, fmt.Errorf("%w: committed_at %q: %w", ErrCorrupt, w.CommittedAt, err)
		}
	}
	if w.Backfill != nil {
		if c.Backfill, err = unmarshalBackfill(w.Backfill, t); err != nil {
			return Cursor{}, fmt.Errorf("%w: backfill: %w", ErrCorrupt, err)
		}
	}
	return c, nil
}

// encodeLookback writes the lookback digests newest first, each as the uvarint of nanoseconds
// from the previous one's time (the first's from last) and its 8 bytes, in unpadded base64:
// 9 to 18 bytes a record whatever the spread of their times.
func encodeLookback(last time.Time, lb map[uint64]time.Time) string {
	type entry struct {
		d  uint64
		at time.Time
	}
	es := make([]entry, 0, len(lb))
	for d, at := range lb {
		es = append(es, entry{d, at})
	}
	slices.SortFunc(es, func(a, b entry) int {
		if c := b.at.Compare(a.at); c != 0 {
			return c
		}
		return cmp.Compare(a.d, b.d)
	})
	b := make([]byte, 0, 12*len(es))
	prev := last
	for _, e := range es {
		b = binary.AppendUvarint(b, uint64(max(prev.Sub(e.at), 0)))
		b = binary.BigEndian.AppendUint64(b, e.d)
		prev = e.at
	}
	return base64.RawStdEncoding.EncodeToString(b)
}

func decodeLookback(last time.Time, enc string, into map[uint64]time.Time) (map[uint64]time.Time, error) {
	b, err := base64.RawStdEncoding.DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("want unpadded base64: %w", err)
	}
	if into == nil {
		into = map[uint64]time.Time{}
	}
	prev := last
	for len(b) > 0 {
		delta, n := binary.Uvarint(b)
		if n <= 0 || len(b) < n+8 || delta > math.MaxInt64 {
			return nil, errors.New("truncated or malformed entry")
		}
		prev = prev.Add(-time.Duration(delta))
		into[binary.BigEndian.Uint64(b[n:])] = prev
		b = b[n+8:]
	}
	return into, nil
}
