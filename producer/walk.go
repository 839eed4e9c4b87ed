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
	User        avro.User
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
}

// WalkOptions tune a Walker; the zero value is the strict default.
type WalkOptions struct {
	// Lookback re-reads this far behind the position: records the source committed late, with
	// an updatedAt older than the position, are then still delivered once.
	Lookback time.Duration
	// SkipInvalid returns an invalid record as a Record with Invalid set and goes on, instead
	// of stopping with its *RecordError.
	SkipInvalid bool
	// MaxRecordBytes refuses a record whose Avro value is larger (0: 1,000,000 bytes, below
	// the broker's default message.max.bytes, so a record never fails the produce instead).
	MaxRecordBytes int
	// MaxFuture refuses an updatedAt later than now + MaxFuture (0: 24h): a clock gone wrong
	// at the source would otherwise carry the cursor past every future record.
	MaxFuture time.Duration
	// DeletedField, when set, names a record field that marks a delete: true, or a non-empty
	// string such as a deletedAt time (false, null, "" or a missing field: not deleted; any
	// other JSON value makes the record invalid). A deleted record is returned with Deleted set
	// and no Value; the cursor treats it like any other record. Empty: the field is never read,
	// and pages are decoded in one pass as usual.
	DeletedField string
	// Now is the clock for MaxFuture (nil: time.Now).
	Now func() time.Time
	// Observer is told about pages, API retries and failures, and the records counted in
	// WalkStats (nil: NopObserver).
	Observer Observer
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
type Walker struct {
	src   *Source
	codec *avro.Codec
	log   *slog.Logger
	opt   WalkOptions

	at     time.Time         // position: greatest valid updatedAt returned
	seen   map[string]seenAt // delivered ids with updatedAt in [at - Lookback, at]
	low    time.Time         // no record of the next page may be older: what the request asked from
	pruned int               // len(seen) after the last prune

	q       Query
	page    int
	done    bool
	stalled int
	stats   WalkStats
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
	w := &Walker{src: src, codec: codec, log: log, opt: opt, at: at, seen: make(map[string]seenAt, len(c.Delivered)+len(c.Lookback))}
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
	return w
}

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
	before, lowBefore, skipped := w.at, w.low, w.stats.Skipped
	recs, first, last, err := w.add(raw)
	if n := w.stats.Skipped - skipped; n > 0 {
		w.opt.Observer.Skipped(n)
	}
	if err != nil {
		return recs, err
	}
	if raw.Next == nil {
		w.done = true
		return recs, nil
	}
	// Progress is a new record, a later position, or (re-reading a lookback window, where the
	// position stays put) a later point to read from.
	if len(recs) == 0 && !w.at.After(before) && !last.After(lowBefore) {
		if w.stalled++; w.stalled >= 3 {
			return nil, fmt.Errorf("%w: %d pages in a row (up to page %d, %s) brought nothing new and did not move past %s",
				ErrNoProgress, w.stalled, w.page, raw.URL, lowBefore.Format(cursor.TimeLayout))
		}
	} else {
		w.stalled = 0
	}
	switch {
	case first.IsZero():
		w.q = Query{Token: raw.Next}
	case w.q.Token == nil && first.Equal(w.q.Since) && last.Equal(w.q.Since):
		w.stats.TieOverflows++
		w.opt.Observer.TieOverflow()
		w.log.Error("more records share one updatedAt than a page holds and the API cannot page through them; records at this timestamp beyond this page may be missing",
			"page", w.page, "updated_at", w.q.Since.Format(cursor.TimeLayout), "page_records", raw.Len(), "tie_overflows", w.stats.TieOverflows)
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
// of the page's first and last valid records.
func (w *Walker) add(raw *RawPage) (recs []Record, first, last time.Time, err error) {
	for i := range raw.Len() {
		r, rerr := w.check(raw, i, last)
		if rerr != nil {
			if !w.opt.SkipInvalid {
				w.opt.Observer.InvalidRecord()
				return recs, first, last, rerr
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
			recs = append(recs, Record{Raw: b, Page: w.page, Index: i, URL: raw.URL, Invalid: rerr, User: avro.User{ID: rerr.ID}})
			continue
		}
		u := r.User
		if first.IsZero() {
			first = u.UpdatedAt
		}
		last = u.UpdatedAt
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
	return recs, first, last, nil
}

// check decodes and validates record i of the current page; prev is the updatedAt of the
// page's previous valid record.
func (w *Walker) check(raw *RawPage, i int, prev time.Time) (Record, *RecordError) {
	fail := func(id, field string, err error) (Record, *RecordError) {
		return Record{}, &RecordError{Page: w.page, Index: i, ID: id, Field: field, Err: err}
	}
	u, err := raw.user(w.page, i)
	if err != nil {
		var re *RecordError
		if errors.As(err, &re) {
			return Record{}, re
		}
		return fail("", "", err)
	}
	switch {
	case !prev.IsZero() && u.UpdatedAt.Before(prev):
		return fail(u.ID, "updatedAt", fmt.Errorf("%s is before the previous record's %s: records must be sorted by updatedAt",
			u.UpdatedAt.Format(cursor.TimeLayout), prev.Format(cursor.TimeLayout)))
	case u.UpdatedAt.Before(w.low):
		return fail(u.ID, "updatedAt", fmt.Errorf("%s is older than the cursor %s: the API ignored updated_since or went backwards",
			u.UpdatedAt.Format(cursor.TimeLayout), w.low.Format(cursor.TimeLayout)))
	case u.UpdatedAt.After(w.opt.Now().Add(w.opt.MaxFuture)):
		return fail(u.ID, "updatedAt", fmt.Errorf("%s is more than %s in the future: the source's clock or data is wrong",
			u.UpdatedAt.Format(cursor.TimeLayout), w.opt.MaxFuture))
	}
	if w.opt.DeletedField != "" {
		deleted, err := deletedMark(raw.Raw(i), w.opt.DeletedField)
		if err != nil {
			return fail(u.ID, w.opt.DeletedField, err)
		}
		if deleted {
			return Record{User: u, Fingerprint: deletedFingerprint, Deleted: true}, nil
		}
	}
	value, err := w.codec.Append(nil, &u)
	if err != nil {
		return fail(u.ID, "", err)
	}
	if len(value) > w.opt.MaxRecordBytes {
		return fail(u.ID, "", fmt.Errorf("its Avro value is %d bytes, over the limit of %d", len(value), w.opt.MaxRecordBytes))
	}
	return Record{User: u, Value: value, Fingerprint: fingerprint(value)}, nil
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
	return q.Since.Format(cursor.TimeLayout)
}
