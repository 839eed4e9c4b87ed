package producer

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
)

// Record is one new or changed record, validated and encoded, or, with
// WalkOptions.SkipInvalid, an invalid record (Invalid set) to be sent to a dead-letter topic.
type Record struct {
	ID          string          // the Kafka key; for an invalid record, what could be read of it
	UpdatedAt   time.Time       // the record's update time (zero for an invalid record)
	Value       []byte          // Avro binary; nil for an invalid record
	Fingerprint string          // identifies the content, see cursor.Cursor.Delivered
	Raw         json.RawMessage // as the API sent it; set for invalid records only
	Page, Index int             // where it was: page of the pass (1-based), index in the page
	URL         string          // the request that returned it
	Invalid     *RecordError    // why the record cannot be delivered, nil for a valid one
	// Deleted marks a delete (WalkOptions.DeletedField): Value is nil and the record is
	// written as a tombstone. Its Fingerprint is deletedFingerprint.
	Deleted bool
}

// deletedFingerprint is the fingerprint of a deleted record: no Avro value to hash, and distinct
// from every hash, so a record deleted and undeleted within one second is delivered again.
const deletedFingerprint = "deleted"

// WalkStats counts what a Walker saw.
type WalkStats struct {
	Pages        int // pages fetched
	Fetched      int // records fetched
	Skipped      int // records already delivered (same id, updatedAt and content)
	Invalid      int // invalid records returned for the dead-letter topic
	Late         int // records found inside the lookback window that had not been delivered
	Deleted      int // records returned as deletes (WalkOptions.DeletedField)
	TieOverflows int // pages full of one timestamp that the API could not page through
	// Overflows names the first maxOverflowsKept tie overflows (TieOverflows counts them all):
	// where records may be missing.
	Overflows []TieOverflow
}

// TieOverflow is one page full of a single update time that the API could not page through:
// records at At beyond the Delivered ones the walk saw there may be missing, and nothing
// read through this API can tell how many.
type TieOverflow struct {
	At        time.Time // the update time shared by more records than a page holds
	Page      int       // the page of the pass that was full of it
	PageSize  int       // records on that page
	Delivered int       // records at At the walk read before it followed the API's token past them
}

// maxOverflowsKept bounds WalkStats.Overflows: the count goes on, the list stops.
const maxOverflowsKept = 20

// WalkOptions tune a Walker; the zero value is the strict default.
type WalkOptions struct {
	// Lookback re-reads this far behind the position: records the source committed late, with
	// an updatedAt older than the position, are then still delivered once.
	Lookback time.Duration
	// SkipInvalid returns an invalid record as a Record with Invalid set and goes on, instead
	// of stopping with its *RecordError.
	SkipInvalid bool
	// MaxRecordBytes refuses a record whose Avro value is larger (0: 1,000,000 bytes). The
	// Syncer applies it to the record's whole Kafka message, together with what its topics
	// accept (Config.TopicMaxMessageBytes), so a record never fails the produce instead.
	MaxRecordBytes int
	// MaxFuture refuses an updatedAt later than now + MaxFuture (0: 24h): a clock gone wrong
	// at the source would otherwise carry the cursor past every future record.
	MaxFuture time.Duration
	// DeletedField, when set, is the path (a.b.c) of a record field that marks a delete: true,
	// or a non-empty string such as a deletedAt time (false, null, "" or a missing field: not
	// deleted; any other JSON value makes the record invalid). A deleted record is returned
	// with Deleted set and no Value; the cursor treats it like any other record.
	DeletedField Path
	// Schema, when set, is the Avro schema records are mapped to by field name (any
	// contract). Nil: the built-in users schema, encoded by the Walker's codec when the API
	// has the playground's contract, else mapped like a custom schema.
	Schema *avro.Schema
	// AcceptTieOverflow makes a tie overflow (records that may be missing, see TieOverflow)
	// a logged and counted event only; without it Syncer.Sync ends such a pass, once it
	// committed what it delivered, with a *TieOverflowError.
	AcceptTieOverflow bool
	// Now is the clock for MaxFuture (nil: time.Now).
	Now func() time.Time
	// Observer is told about pages, API retries and failures, and the records counted in
	// WalkStats (nil: NopObserver).
	Observer Observer
	// fits, set by the Syncer, refuses a valid record whose Kafka message would be larger than
	// its topic accepts: the record is then invalid like any other (size.go).
	fits func(r Record) error
}

// seenAt is one delivered record: when it was updated and what it contained.
type seenAt struct {
	at time.Time
	fp string
}

// Walker reads a keyset API from a position and returns each record that is new since then
// exactly once. Its position (a timestamp, the records seen at exactly that timestamp, and
// with a lookback those seen inside the window behind it) is what a cursor stores.
//
// The API's scroll_param filter is exclusive (updatedAt > last), so following it would skip
// the records that share the last timestamp of a page but did not fit on it: the bug of the
// reference example. A Walker instead asks again from that timestamp, inclusively, and drops
// what it already returned there. Only when a whole page carries the one timestamp it asked
// from can that not make progress; then the API cannot page through the tie, and the Walker
// follows scroll_param and reports a tie overflow.
//
// When the API takes an after-id parameter (a compound keyset), the Walker continues each
// page from (last update time, last id) instead: ties of any width are paged through exactly,
// and there is no overflow. Each pass still starts inclusively at the position and drops what
// it delivered there, so a record changed again within the position's time unit, whose id
// sorts before the last one delivered, is not missed.
type Walker struct {
	src    *Source
	codec  *avro.Codec
	schema *avro.Schema // nil: users through codec (the playground's contract, fast path)
	mapOpt avro.MapOptions
	after  bool // the contract has an after-id parameter: ties are paged through exactly
	log    *slog.Logger
	opt    WalkOptions

	at     time.Time         // position: greatest valid updatedAt returned
	seen   map[string]seenAt // delivered ids with updatedAt in [at - Lookback, at]
	low    time.Time         // no record of the next page may be older: what the request asked from
	pruned int               // len(seen) after the last prune

	q         Query
	page      int
	done      bool
	stalled   int
	stats     WalkStats
	remaining int64 // records the API said follow the last page; -1: it never said
}

// NewWalker starts at the position of c (cursor.Start and nothing seen for a first sync).
func NewWalker(src *Source, codec *avro.Codec, c cursor.Cursor, opt WalkOptions, log *slog.Logger) *Walker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opt.MaxRecordBytes <= 0 {
		opt.MaxRecordBytes = 1_000_000
	}
	if opt.MaxFuture <= 0 {
		opt.MaxFuture = 24 * time.Hour
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	opt.Observer = observerOrNop(opt.Observer)
	at := c.LastUpdatedAt
	if at.IsZero() {
		at = cursor.Start
	}
	w := &Walker{src: src, codec: codec, schema: opt.Schema, log: log, opt: opt, at: at, seen: make(map[string]seenAt, len(c.Delivered)+len(c.Lookback))}
	contract := src.Contract()
	w.after = contract.AfterIDParam != ""
	w.mapOpt = avro.MapOptions{NumericTimeUnit: contract.TimeFormat.Unit()}
	if w.schema == nil && !src.fast {
		w.schema = codec.Schema()
	}
	for id, fp := range c.Delivered {
		w.seen[id] = seenAt{at: at, fp: fp}
	}
	for id, d := range c.Lookback {
		w.seen[id] = seenAt{at: d.UpdatedAt, fp: d.Fingerprint}
	}
	w.low = at
	if opt.Lookback > 0 && at.After(cursor.Start.Add(opt.Lookback)) {
		w.low = at.Add(-opt.Lookback)
	}
	w.q = Query{Since: w.low}
	w.remaining = -1
	return w
}

// Remaining is how many records the API said follow the last page fetched (the contract's
// TotalPath less that page's records), or false when it never said.
func (w *Walker) Remaining() (int64, bool) { return w.remaining, w.remaining >= 0 }

// Position returns the cursor fields (LastUpdatedAt, Delivered, Lookback) that cover every
// record Next returned so far. The maps are copies.
func (w *Walker) Position() cursor.Cursor {
	w.prune()
	c := cursor.Cursor{LastUpdatedAt: w.at, Delivered: map[string]string{}}
	for id, s := range w.seen {
		switch {
		case s.at.Equal(w.at):
			c.Delivered[id] = s.fp
		case c.Lookback == nil:
			c.Lookback = map[string]cursor.Delivery{id: {UpdatedAt: s.at, Fingerprint: s.fp}}
		default:
			c.Lookback[id] = cursor.Delivery{UpdatedAt: s.at, Fingerprint: s.fp}
		}
	}
	return c
}

// prune forgets what fell out of the window: nothing older than it can come back.
func (w *Walker) prune() {
	edge := w.at.Add(-w.opt.Lookback)
	for id, s := range w.seen {
		if s.at.Before(edge) {
			delete(w.seen, id)
		}
	}
	w.pruned = len(w.seen)
}

// atCount is how many records the walk holds as delivered at its position.
func (w *Walker) atCount() int {
	n := 0
	for _, s := range w.seen {
		if s.at.Equal(w.at) {
			n++
		}
	}
	return n
}

// Stats returns the counts so far.
func (w *Walker) Stats() WalkStats { return w.stats }

// Next fetches the next page and returns its new records in order. After the last page it
// returns io.EOF. On an invalid record (without SkipInvalid) it returns the valid records before
// it together with a *RecordError; the position then covers exactly the records returned.
func (w *Walker) Next(ctx context.Context) ([]Record, error) {
	if w.done {
		return nil, io.EOF
	}
	w.page++
	w.log.Debug("fetching page", "page", w.page, "updated_since", sinceOf(w.q), "scroll", w.q.Token != nil)
	raw, err := w.src.fetch(ctx, w.page, w.q, w.opt.Observer)
	if err != nil {
		return nil, err
	}
	w.stats.Pages++
	w.stats.Fetched += raw.Len()
	if raw.Total != nil {
		w.remaining = max(*raw.Total-int64(raw.Len()), 0)
		if !raw.More {
			w.remaining = 0
		}
		w.opt.Observer.RecordsRemaining(w.remaining)
	}
	before, lowBefore, afterBefore, skipped := w.at, w.low, w.q.AfterID, w.stats.Skipped
	recs, first, last, lastID, err := w.add(raw)
	if n := w.stats.Skipped - skipped; n > 0 {
		w.opt.Observer.Skipped(n)
	}
	if err != nil {
		return recs, err
	}
	if !raw.More {
		w.done = true
		return recs, nil
	}
	// Progress is a new record, a later position, or (re-reading a lookback window, where the
	// position stays put, or paging through a tie by id) a later point to read from.
	if len(recs) == 0 && !w.at.After(before) && !last.After(lowBefore) && !(w.after && lastID != afterBefore) {
		if w.stalled++; w.stalled >= 3 {
			return nil, fmt.Errorf("%w: %d pages in a row (up to page %d, %s) brought nothing new and did not move past %s",
				ErrNoProgress, w.stalled, w.page, raw.URL, cursor.FormatTime(lowBefore))
		}
	} else {
		w.stalled = 0
	}
	switch {
	case first.IsZero() && raw.Next == nil:
		// The page's records (dead letters here) go with the error: the position covers them.
		return recs, fmt.Errorf("%w: page %d (%s) has no valid record to continue from and the API gave no next token",
			ErrNoProgress, w.page, raw.URL)
	case first.IsZero():
		w.q = Query{Token: raw.Next}
	case w.after:
		w.q = Query{Since: last, AfterID: lastID}
	case w.q.Token != nil && last.Equal(lowBefore) && raw.Next != nil:
		// Following the token through a tie wider than a page: asking from its time again
		// would start the tie over.
		w.q = Query{Token: raw.Next}
	case w.q.Token == nil && first.Equal(w.q.Since) && last.Equal(w.q.Since) && raw.Next == nil:
		// What the page brought that was new goes with the error: the position covers it.
		return recs, fmt.Errorf("%w: page %d (%s) holds only records at %s, more than a page, and the API gives no next token to page through them: configure its after-id parameter",
			ErrNoProgress, w.page, raw.URL, w.src.Contract().TimeFormat.Format(last))
	case w.q.Token == nil && first.Equal(w.q.Since) && last.Equal(w.q.Since):
		w.stats.TieOverflows++
		if len(w.stats.Overflows) < maxOverflowsKept {
			w.stats.Overflows = append(w.stats.Overflows, TieOverflow{At: last, Page: w.page, PageSize: raw.Len(), Delivered: w.atCount()})
		}
		w.opt.Observer.TieOverflow()
		w.log.Error("more records share one updatedAt than a page holds and the API cannot page through them; records at this timestamp beyond this page may be missing (an API with an after-id parameter avoids this)",
			"page", w.page, "updated_at", cursor.FormatTime(w.q.Since), "page_records", raw.Len(), "tie_overflows", w.stats.TieOverflows)
		w.q = Query{Token: raw.Next}
	default:
		w.q = Query{Since: last}
	}
	if !last.IsZero() {
		w.low = last
	}
	return recs, nil
}

// add validates a page in order and keeps its new records. first and last are the updatedAt
// of the page's first and last valid records, lastID the id of the last.
func (w *Walker) add(raw *RawPage) (recs []Record, first, last time.Time, lastID string, err error) {
	for i := range raw.Len() {
		r, rerr := w.check(raw, i, last)
		if rerr == nil && w.opt.fits != nil {
			if err := w.opt.fits(r); err != nil {
				rerr = &RecordError{Page: w.page, Index: i, ID: r.ID, Err: err}
			}
		}
		if rerr != nil {
			if !w.opt.SkipInvalid {
				w.opt.Observer.InvalidRecord()
				return recs, first, last, lastID, rerr
			}
			b := raw.Raw(i)
			key := "invalid:" + fingerprint(b)
			if _, dup := w.seen[key]; dup {
				w.stats.Skipped++
				continue
			}
			w.seen[key] = seenAt{at: w.at, fp: "invalid"}
			w.stats.Invalid++
			w.opt.Observer.InvalidRecord()
			recs = append(recs, Record{Raw: b, Page: w.page, Index: i, URL: raw.URL, Invalid: rerr, ID: rerr.ID})
			continue
		}
		u := &r
		if first.IsZero() {
			first = u.UpdatedAt
		}
		last, lastID = u.UpdatedAt, u.ID
		if s, ok := w.seen[u.ID]; ok && s.at.Equal(u.UpdatedAt) && s.fp == r.Fingerprint {
			w.stats.Skipped++
			continue
		}
		if u.UpdatedAt.Before(w.at) {
			w.stats.Late++
			w.opt.Observer.LateRecord()
		}
		if u.UpdatedAt.After(w.at) {
			w.at = u.UpdatedAt
			if w.opt.Lookback == 0 {
				clear(w.seen) // nothing before at can come back: keep the map small
			}
		}
		w.seen[u.ID] = seenAt{at: u.UpdatedAt, fp: r.Fingerprint}
		if len(w.seen) > 2*w.pruned+10000 {
			w.prune()
		}
		r.Page, r.Index, r.URL = w.page, i, raw.URL
		if r.Deleted {
			w.stats.Deleted++
		}
		recs = append(recs, r)
	}
	return recs, first, last, lastID, nil
}

// check decodes and validates record i of the current page; prev is the updatedAt of the
// page's previous valid record.
func (w *Walker) check(raw *RawPage, i int, prev time.Time) (Record, *RecordError) {
	fail := func(id, field string, err error) (Record, *RecordError) {
		return Record{}, &RecordError{Page: w.page, Index: i, ID: id, Field: field, Err: err}
	}
	var (
		u   avro.User      // the record, on the fast path
		obj map[string]any // the record, mapped to w.schema
		r   Record
	)
	if w.schema == nil {
		var err error
		if u, err = raw.user(w.page, i); err != nil {
			var re *RecordError
			if errors.As(err, &re) {
				return Record{}, re
			}
			return fail("", "", err)
		}
		r.ID, r.UpdatedAt = u.ID, u.UpdatedAt
	} else {
		var err error
		if obj, err = raw.object(i); err != nil {
			return fail("", "", err)
		}
		id, at, field, err := w.src.Contract().key(obj)
		if err != nil {
			return fail(id, field, err)
		}
		r.ID, r.UpdatedAt = id, at
	}
	switch {
	case !prev.IsZero() && r.UpdatedAt.Before(prev):
		return fail(r.ID, "updatedAt", fmt.Errorf("%s is before the previous record's %s: records must be sorted by updatedAt",
			cursor.FormatTime(r.UpdatedAt), cursor.FormatTime(prev)))
	case r.UpdatedAt.Before(w.low):
		return fail(r.ID, "updatedAt", fmt.Errorf("%s is older than the cursor %s: the API ignored updated_since or went backwards",
			cursor.FormatTime(r.UpdatedAt), cursor.FormatTime(w.low)))
	case r.UpdatedAt.After(w.opt.Now().Add(w.opt.MaxFuture)):
		return fail(r.ID, "updatedAt", fmt.Errorf("%s is more than %s in the future: the source's clock or data is wrong",
			cursor.FormatTime(r.UpdatedAt), w.opt.MaxFuture))
	}
	if len(w.opt.DeletedField) > 0 {
		if obj == nil {
			var err error
			if obj, err = raw.object(i); err != nil {
				return fail(r.ID, "", err)
			}
		}
		v, _ := w.opt.DeletedField.lookup(obj)
		deleted, err := deletedMark(v)
		if err != nil {
			return fail(r.ID, w.opt.DeletedField.String(), err)
		}
		if deleted {
			r.Fingerprint, r.Deleted = deletedFingerprint, true
			return r, nil
		}
	}
	var err error
	if w.schema == nil {
		r.Value, err = w.codec.Append(nil, &u)
	} else {
		r.Value, err = w.schema.Append(nil, obj, w.mapOpt)
	}
	if err != nil {
		var fe *avro.FieldError
		if errors.As(err, &fe) {
			return fail(r.ID, fe.Path, fe.Err)
		}
		return fail(r.ID, "", err)
	}
	if len(r.Value) > w.opt.MaxRecordBytes {
		return fail(r.ID, "", fmt.Errorf("its Avro value is %d bytes, over the limit of %d", len(r.Value), w.opt.MaxRecordBytes))
	}
	r.Fingerprint = fingerprint(r.Value)
	return r, nil
}

// fingerprint identifies a record's content, so a record that changed again within the
// cursor's second is told apart from the copy already delivered.
func fingerprint(value []byte) string {
	h := fnv.New64a()
	h.Write(value)
	return hex.EncodeToString(h.Sum(nil))
}

func sinceOf(q Query) string {
	if q.Token != nil {
		return ""
	}
	return cursor.FormatTime(q.Since)
}
