package source

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"slices"
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
	Resent       int // records sent again because the walk could not hold what it delivered (see Walker)
	Probes       int // requests asking whether a wide tie is settled (counted in Pages too)
	// Wait is the time spent waiting for the API's answers (RawPage.Wait), probes included.
	Wait time.Duration
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
	// Pipeline applies it to the record's whole Kafka message, together with what its topics
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
	// a logged and counted event only; without it Pipeline.Sync ends such a pass, once it
	// committed what it delivered, with a *TieOverflowError.
	AcceptTieOverflow bool
	// StateLimit is how many records of one update time, and separately of the lookback
	// window, the walk holds exactly (0: 10,000); see Walker.
	StateLimit int
	// MaxCursorBytes bounds the cursor Position returns (0: cursor.MaxBytes).
	MaxCursorBytes int
	// Now is the clock for MaxFuture (nil: time.Now).
	Now func() time.Time
	// Observer is told about pages, API retries and failures, and the records counted in
	// WalkStats (nil: NopObserver).
	Observer Observer
	// Limiter, when set, gates every API request of the walk (a parallel backfill's
	// concurrency limit; see Limiter).
	Limiter Limiter
	// Fits, when set (the pipeline sets it), refuses a valid record whose Kafka message would be larger than
	// its topic accepts: the record is then invalid like any other (size.go).
	Fits func(r Record) error
}

// seenAt is one delivered record: when it was updated and what it contained.
type seenAt struct {
	at time.Time
	fp string
	// of, for a dead letter, is the invalid record's own update time when it could be read
	// and is after the position it is held at: the position moves there when a valid record
	// of that time follows, and the dead letter moves with it, so that the inclusive re-read
	// of that time does not send it again.
	of time.Time
}

// defaultStateLimit is how many records one update time, and separately the lookback window,
// hold exactly in memory: a tie or a window beyond it is walked by position alone.
const defaultStateLimit = 10_000

// settleAfter is how far behind keysetsync's clock a time is settled even when the API holds
// nothing later: the source stamps changes with its current time, so nothing joins a time this
// old except a late commit (what --lookback is for).
const settleAfter = 10 * time.Minute

// CursorReserve is what a cursor's fields other than its delivered sets may take of a walk's
// WalkOptions.MaxCursorBytes (the pipeline name, LastID, times and counters): a walk lists
// delivered records only in what is left.
const CursorReserve = 4 << 10

// Walker reads a keyset API from a position and returns each record that is new since then
// exactly once. Its position (a timestamp, the records seen at exactly that timestamp, and
// with a lookback those seen inside the window behind it) is what a cursor stores.
//
// The API's scroll_param filter is exclusive (updatedAt > last), so following it would skip
// the records that share the last timestamp of a page but did not fit on it: the bug of the
// reference example. A Walker instead asks again from that timestamp, inclusively, and drops
// what it already returned there. Only when a whole page carries the one timestamp it asked
// from can that not make progress; then the API cannot page through the tie, and the Walker
// follows scroll_param. If the token's page goes on inside the tie, the token is a compound
// keyset and nothing is lost; if it jumps past it, that is a tie overflow, reported.
//
// When the API takes an after-id parameter (a compound keyset), a page that spans several
// times is followed, as above, by an inclusive request from its last time: the one request
// then holds that whole time and what comes after it, so a record changed again within that
// time unit, whose id sorts before the last one read, is not missed. Only a page full of one
// time (a tie wider than a page) is followed by (time, last id). Before paging through such a
// tie the Walker asks once whether the API holds anything later (a probe): if so, the
// source's clock is past the tie, nothing in it can change any more, and it is paged through
// by position alone, however wide, after re-reading its first page. If not, the tie may still
// be growing: it is paged through, then read again from its start before the Walker moves
// past it.
//
// State is bounded. The records of one time, and those of the lookback window, are held
// exactly up to WalkOptions.StateLimit each; a cursor lists them only while it stays within
// cursor.MaxBytes. Beyond that a settled tie resumes from (time, last id), and anything else
// the Walker cannot tell apart is sent again and counted in WalkStats.Resent: duplicates,
// never a loss.
type Walker struct {
	src    *Source
	codec  *avro.Codec
	schema *avro.Schema // nil: users through codec (the playground's contract, fast path)
	mapOpt avro.MapOptions
	after  bool          // the contract has an after-id parameter: ties are paged through exactly
	prec   time.Duration // the precision of the API's times (what its since parameter can say)
	log    *slog.Logger
	opt    WalkOptions

	at      time.Time            // position: greatest valid updatedAt returned
	atID    string               // with after-id: the id of the last record read at `at`, in the API's order
	atExact bool                 // seen holds every record returned at `at`
	atN     int                  // records of seen at `at`
	atBytes int                  // their cursor.EntryBytes
	seen    map[string]seenAt    // ids returned at `at` (and dead letters' keys)
	window  map[uint64]time.Time // with a lookback: cursor.Digest of records returned before `at`, in the window
	lbFrom  time.Time            // window records before it were dropped (zero: none)
	low     time.Time            // no record of the next page may be older: what the request asked from
	pruned  int                  // len(seen) after the last prune

	tieAt      time.Time // a tie wider than a page, paged through by (time, id)
	tieSettled bool      // the API held later records before tieAt was read: it cannot change
	probeFirst bool      // the first Next asks whether the cursor's partial tie is settled
	pending    *TieOverflow
	warned     bool // the lookback window's overflow was logged
	// rereadUntil is the cursor's LastID while a partial tie is read again from its start:
	// the records up to it were delivered before.
	rereadUntil string
	// resendAt is the time of a loaded position that is partial with no LastID to tell how far
	// its tie was read (no after-id parameter, or an id too long to keep): every record read at
	// it may have been delivered before, and is counted as resent, on whatever page it comes.
	resendAt time.Time
	tokens   map[uint64]struct{} // tokens followed since the last progress: a repeat is a loop

	// bound, when set, ends the walk at a range's end (a parallel backfill; see SetBound).
	bound Bound

	q         Query
	page      int
	done      bool
	stalled   int
	stats     WalkStats
	remaining int64 // records the API said follow the last page; -1: it never said
}

// WithDefaults fills in the documented defaults of the zero fields.
func (opt WalkOptions) WithDefaults() WalkOptions {
	if opt.MaxRecordBytes <= 0 {
		opt.MaxRecordBytes = 1_000_000
	}
	if opt.MaxFuture <= 0 {
		opt.MaxFuture = 24 * time.Hour
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.StateLimit <= 0 {
		opt.StateLimit = defaultStateLimit
	}
	if opt.MaxCursorBytes <= 0 {
		opt.MaxCursorBytes = cursor.MaxBytes
	}
	opt.Observer = observerOrNop(opt.Observer)
	return opt
}

// NewWalker starts at the position of c (cursor.Start and nothing seen for a first sync).
func NewWalker(src *Source, codec *avro.Codec, c cursor.Cursor, opt WalkOptions, log *slog.Logger) *Walker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opt = opt.WithDefaults()
	at := c.LastUpdatedAt
	if at.IsZero() {
		at = cursor.Start
	}
	w := &Walker{src: src, codec: codec, schema: opt.Schema, log: log, opt: opt, at: at, atExact: !c.DeliveredPartial,
		seen: make(map[string]seenAt, len(c.Delivered)), window: make(map[uint64]time.Time, len(c.Lookback)), lbFrom: c.LookbackFrom}
	contract := src.Contract()
	w.after = contract.AfterIDParam != ""
	w.prec = contract.TimeFormat.Precision()
	w.mapOpt = avro.MapOptions{NumericTimeUnit: contract.TimeFormat.Unit()}
	if w.schema == nil && !src.fast {
		w.schema = codec.Schema()
	}
	if w.after {
		w.atID = c.LastID
	}
	for id, fp := range c.Delivered {
		w.remember(id, at, fp)
	}
	if opt.Lookback > 0 {
		maps.Copy(w.window, c.Lookback)
	}
	w.low = at
	if opt.Lookback > 0 && at.After(cursor.Start.Add(opt.Lookback)) {
		w.low = at.Add(-opt.Lookback)
	}
	// The since parameter can only say times of the API's precision: ask from the step at or
	// before the position (a 1500ms lookback on a whole-second API asks from the whole second
	// before), and expect records from there.
	w.low = w.low.Truncate(w.prec)
	w.q = Query{Since: w.low}
	if !w.atExact && (!w.after || w.atID == "") {
		w.resendAt = at
	}
	switch {
	case !w.atExact && w.after && w.atID != "" && opt.Lookback == 0 && c.TieSettled:
		// The middle of a tie that could no longer change when it was read: go on from there.
		w.q = Query{Since: at, AfterID: w.atID}
		w.tieAt, w.tieSettled = at, true
	case !w.atExact && w.after && opt.Lookback == 0:
		w.probeFirst = true
	}
	w.remaining = -1
	return w
}

// Remaining is how many records the API said follow the last page fetched (the contract's
// TotalPath less that page's records), or false when it never said.
func (w *Walker) Remaining() (int64, bool) { return w.remaining, w.remaining >= 0 }

// Bound is the end of one range of a parallel backfill, which another range may move down
// (splitting off its unfetched part) while this walk reads it.
type Bound interface {
	// Lock returns the range's end: the walk returns no record at or after it and stops at the
	// first such record, which belongs to the next range. The end cannot move until Unlock.
	Lock() time.Time
	// Unlock releases the end, saying the walk has returned nothing later than upTo (zero:
	// this page moved nothing) and, with ended, that it read its range to the end. A split
	// must leave what was returned in this range: the new end stays after upTo.
	Unlock(upTo time.Time, ended bool)
}

// SetBound makes the walk one range of a parallel backfill: it ends at b's end, read once per
// page after the fetch, and its Position stays within maxCursorBytes (the range's share of a
// cursor; 0 keeps it). A walk with a lookback window cannot be bounded: its window reaches
// before the range. The pass's own walker keeps its tie state: the range it continues starts
// where it stands.
func (w *Walker) SetBound(b Bound, maxCursorBytes int) {
	w.bound = b
	if maxCursorBytes > 0 {
		w.opt.MaxCursorBytes = maxCursorBytes
	}
}

// Position returns the cursor fields (LastUpdatedAt, Delivered, Lookback and what says how
// complete they are) that cover every record Next returned so far, within
// WalkOptions.MaxCursorBytes. The maps are copies, at most that size.
func (w *Walker) Position() cursor.Cursor { return w.PositionWithin(w.opt.MaxCursorBytes) }

// PositionWithin is Position within maxCursorBytes instead of WalkOptions.MaxCursorBytes: a
// parallel backfill's range keeps to its share of the cursor while it runs, and hands the walk
// after the backfill what it holds, up to a whole cursor or more.
func (w *Walker) PositionWithin(maxCursorBytes int) cursor.Cursor {
	w.prune()
	c := cursor.Cursor{LastUpdatedAt: w.at, Delivered: map[string]string{}, LookbackFrom: w.lbFrom}
	if w.after && len(w.atID) <= cursor.MaxLastIDBytes {
		c.LastID = w.atID
		c.TieSettled = w.tieSettled && w.tieAt.Equal(w.at)
	}
	budget := maxCursorBytes - CursorReserve
	if w.atExact && w.atBytes <= budget {
		budget -= w.atBytes
		for id, s := range w.seen {
			if s.at.Equal(w.at) {
				c.Delivered[id] = s.fp
			}
		}
	} else {
		c.DeliveredPartial = true
	}
	if w.opt.Lookback == 0 || len(w.window) == 0 {
		return c
	}
	var from time.Time // keep the newest records, whole times at a time; the window before them is re-sent
	if len(w.window)*cursor.LookbackEntryBytes > budget {
		times := slices.SortedFunc(maps.Values(w.window), func(a, b time.Time) int { return b.Compare(a) })
		from = times[budget/cursor.LookbackEntryBytes].Add(time.Nanosecond)
		if from.After(c.LookbackFrom) {
			c.LookbackFrom = from
		}
		if !w.warned {
			w.warned = true
			w.log.Warn("the lookback window holds more records than a cursor can list; records of it before lookback_from are sent again on every pass (duplicates, counted in resent): shorten the lookback",
				"records_in_window", len(w.window), "lookback_from", cursor.FormatTime(c.LookbackFrom))
		}
	}
	c.Lookback = make(map[uint64]time.Time, len(w.window))
	for d, at := range w.window {
		if !at.Before(from) {
			c.Lookback[d] = at
		}
	}
	return c
}

// remember records id as returned at t with content fp, within the state limits.
func (w *Walker) remember(id string, t time.Time, fp string) {
	if !t.Equal(w.at) {
		if w.opt.Lookback > 0 {
			w.keepInWindow(id, t, fp)
		}
		return
	}
	if !w.atExact {
		return
	}
	s, ok := w.seen[id]
	if !ok {
		if w.atN >= w.opt.StateLimit {
			w.forgetAt()
			return
		}
		w.atN++
		w.atBytes += cursor.EntryBytes(id, len(fp))
	} else {
		w.atBytes += len(fp) - len(s.fp)
	}
	w.seen[id] = seenAt{at: t, fp: fp}
}

// keepInWindow holds a record returned before the position as delivered in the lookback
// window, which holds at most ten times StateLimit records.
func (w *Walker) keepInWindow(id string, t time.Time, fp string) {
	w.window[cursor.Digest(id, t, fp)] = t
	if len(w.window) > 10*w.opt.StateLimit {
		w.dropOldest()
	}
}

// forgetAt drops the records held at the position: there are more than the limit. From now on
// the position is (at, atID) alone, and records at `at` read again are sent again.
func (w *Walker) forgetAt() {
	clear(w.seen)
	w.atExact, w.atN, w.atBytes = false, 0, 0
	w.log.Debug("more records share one update time than the walk holds exactly; going on by position", "updated_at", cursor.FormatTime(w.at), "limit", w.opt.StateLimit)
}

// dropOldest halves the window's records, dropping the oldest: a record of the window before
// lbFrom read again is then sent again.
func (w *Walker) dropOldest() {
	times := slices.SortedFunc(maps.Values(w.window), time.Time.Compare)
	cut := times[len(times)/2]
	for d, at := range w.window {
		if !at.After(cut) {
			delete(w.window, d)
		}
	}
	if from := cut.Add(time.Nanosecond); from.After(w.lbFrom) {
		w.lbFrom = from
	}
}

// prune forgets what fell out of the window: nothing older than it can come back.
func (w *Walker) prune() {
	edge := w.at.Add(-w.opt.Lookback)
	for d, at := range w.window {
		if at.Before(edge) {
			delete(w.window, d)
		}
	}
	if !w.lbFrom.After(edge) {
		w.lbFrom = time.Time{}
	}
	w.pruned = len(w.window)
}

// advance moves the position to t, later than it: nothing is held at t yet. With a lookback
// the records at the old position join the window.
func (w *Walker) advance(t time.Time) {
	if w.opt.Lookback > 0 {
		if w.atExact {
			for id, s := range w.seen {
				w.keepInWindow(id, s.at, s.fp)
			}
		} else if from := w.at.Add(time.Nanosecond); from.After(w.lbFrom) {
			w.lbFrom = from // the old position's records were not held
		}
	}
	var carried []string // dead letters of time t, held at the old position
	for id, s := range w.seen {
		if s.of.Equal(t) {
			carried = append(carried, id)
		}
	}
	clear(w.seen)
	w.at, w.atID, w.atExact, w.atN, w.atBytes = t, "", true, 0, 0
	for _, id := range carried {
		w.remember(id, t, "invalid")
	}
}

// Stats returns the counts so far.
func (w *Walker) Stats() WalkStats { return w.stats }

// probe asks whether the API holds a record later than t: then the source's clock is past t,
// and no record can still join or change within t.
func (w *Walker) probe(ctx context.Context, t time.Time) (bool, error) {
	w.page++
	q := Query{Since: t.Add(w.prec)}
	w.log.Debug("probing for records after a wide tie", "page", w.page, "updated_at", cursor.FormatTime(t), "updated_since", sinceOf(q))
	raw, err := w.src.fetch(ctx, w.page, q, w.opt.Observer, w.opt.Limiter)
	if err != nil {
		return false, err
	}
	w.stats.Pages++
	w.stats.Probes++
	w.stats.Wait += raw.Wait
	// Only a record really later than t counts: an API that ignored the since parameter must
	// not make a tie look settled.
	for i := range raw.Len() {
		if at, ok := w.updatedAt(raw, i); ok && at.After(t) {
			return true, nil
		}
	}
	return t.Before(w.opt.Now().Add(-settleAfter)), nil
}

// invalidAt reads the update time of record i of raw, invalid for another reason, if it has
// a valid one: where its dead letter belongs.
func (w *Walker) invalidAt(raw *RawPage, i int) (time.Time, bool) {
	obj, err := raw.object(i)
	if err != nil {
		return time.Time{}, false
	}
	_, at, _, err := w.src.Contract().key(obj)
	return at, err == nil
}

// updatedAt reads the update time of record i of raw, if it has a valid one.
func (w *Walker) updatedAt(raw *RawPage, i int) (time.Time, bool) {
	if w.schema == nil {
		u, err := raw.user(w.page, i)
		return u.UpdatedAt, err == nil
	}
	obj, err := raw.object(i)
	if err != nil {
		return time.Time{}, false
	}
	_, at, _, err := w.src.Contract().key(obj)
	return at, err == nil
}

// Drain walks to the end, calling fn with every record in order, and returns nil once the last
// page is read. It stops at the first error of Next (after fn has seen the valid records Next
// returned with it) or of fn, and returns that error.
func (w *Walker) Drain(ctx context.Context, fn func(Record) error) error {
	for {
		recs, err := w.Next(ctx)
		for _, r := range recs {
			if ferr := fn(r); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Next fetches the next page and returns its new records in order. After the last page it
// returns io.EOF. On an invalid record (without SkipInvalid) it returns the valid records before
// it together with a *RecordError; the position then covers exactly the records returned.
func (w *Walker) Next(ctx context.Context) ([]Record, error) {
	if w.done {
		return nil, io.EOF
	}
	if w.probeFirst {
		// A partial cursor inside a tie not known to be settled: its records at the position
		// cannot be told apart, so the tie is read again from its start and re-sent.
		w.probeFirst = false
		settled, err := w.probe(ctx, w.at)
		if err != nil {
			return nil, err
		}
		w.tieAt, w.tieSettled = w.at, settled
		w.rereadUntil = w.atID
	}
	w.page++
	w.log.Debug("fetching page", "page", w.page, "updated_since", sinceOf(w.q), "scroll", w.q.Token != nil)
	raw, err := w.src.fetch(ctx, w.page, w.q, w.opt.Observer, w.opt.Limiter)
	if err != nil {
		return nil, err
	}
	w.stats.Pages++
	w.stats.Wait += raw.Wait
	w.stats.Fetched += raw.Len()
	if raw.Total != nil && w.bound == nil { // a range's walk cannot tell what remains of the pass
		w.remaining = max(*raw.Total-int64(raw.Len()), 0)
		if !raw.More {
			w.remaining = 0
		}
		w.opt.Observer.RecordsRemaining(w.remaining)
	}
	// Inside a tie that may have changed while it was paged through, nothing past it is taken
	// until the tie was read again from its start.
	var cut time.Time
	if w.after && w.q.AfterID != "" && !w.tieSettled && w.tieAt.Equal(w.q.Since) {
		cut = w.tieAt
	}
	before, lowBefore, afterBefore, skipped := w.at, w.low, w.q.AfterID, w.stats.Skipped
	// A backfill range's end is read under its lock, held while the page is taken, so that a
	// split cannot move the end below a record this page returns.
	var end time.Time
	if w.bound != nil {
		end = w.bound.Lock()
	}
	recs, first, last, lastID, beyond, ended, err := w.add(raw, cut, end)
	if w.bound != nil {
		ended = ended || err == nil && !beyond && !raw.More
		w.bound.Unlock(last, ended)
	}
	if n := w.stats.Skipped - skipped; n > 0 {
		w.opt.Observer.Skipped(n)
	}
	if w.pending != nil {
		w.settleOverflow(first)
	}
	if err != nil {
		return recs, err
	}
	if last.Equal(w.at) && !last.IsZero() {
		w.atID = lastID
	}
	if ended {
		w.done = true
		return recs, nil
	}
	if beyond {
		w.log.Debug("read past a tie that may have changed while it was paged through; reading it again from its start", "updated_at", cursor.FormatTime(w.tieAt))
		w.tieSettled = true // the API showed a later record: nothing within the tie can change now
		if !w.atExact {
			w.rereadUntil = w.atID // what the walk cannot tell apart up to there is sent again
		}
		w.q = Query{Since: w.tieAt}
		w.low = w.tieAt
		w.stalled = 0
		return recs, nil
	}
	if !raw.More {
		w.done = true
		return recs, nil
	}
	// Progress is a new record, a later position, or (re-reading a lookback window, where the
	// position stays put, or paging through a tie by id or by a token) a later point to read from.
	progress := len(recs) > 0 || w.at.After(before) || last.After(lowBefore) || (w.after && lastID != afterBefore) || w.newToken(raw.Next)
	if !progress {
		if w.stalled++; w.stalled >= 3 {
			return nil, fmt.Errorf("%w: %d pages in a row (up to page %d, %s) brought nothing new and did not move past %s",
				ErrNoProgress, w.stalled, w.page, raw.URL, cursor.FormatTime(lowBefore))
		}
	} else {
		w.stalled = 0
		if len(recs) > 0 || w.at.After(before) || last.After(lowBefore) {
			clear(w.tokens)
		}
	}
	full := !first.IsZero() && first.Equal(last)
	switch {
	case first.IsZero() && raw.Next == nil:
		// The page's records (dead letters here) go with the error: the position covers them.
		return recs, fmt.Errorf("%w: page %d (%s) has no valid record to continue from and the API gave no next token",
			ErrNoProgress, w.page, raw.URL)
	case first.IsZero():
		w.q = Query{Token: raw.Next}
	case w.after && full && w.tieAt.Equal(last):
		w.q = Query{Since: last, AfterID: lastID}
	case w.after && full:
		// A tie at least a page wide starts here. Is the source's clock past it?
		settled, err := w.probe(ctx, last)
		if err != nil {
			return recs, err
		}
		w.tieAt, w.tieSettled = last, settled
		if settled {
			// Read its first page again: it was read before the probe showed the tie settled.
			w.q = Query{Since: last}
		} else {
			w.q = Query{Since: last, AfterID: lastID}
		}
	case w.after:
		w.tieAt, w.tieSettled = time.Time{}, false
		w.q = Query{Since: last}
	case w.q.Token != nil && last.Equal(lowBefore) && raw.Next != nil:
		// Following the token through a tie wider than a page: asking from its time again
		// would start the tie over.
		w.q = Query{Token: raw.Next}
	case w.q.Token == nil && first.Equal(w.q.Since) && last.Equal(w.q.Since) && raw.Next == nil:
		// What the page brought that was new goes with the error: the position covers it.
		return recs, fmt.Errorf("%w: page %d (%s) holds only records at %s, more than a page, and the API gives no next token to page through them: configure its after-id parameter",
			ErrNoProgress, w.page, raw.URL, w.src.Contract().TimeFormat.Format(last))
	case w.q.Token == nil && first.Equal(w.q.Since) && last.Equal(w.q.Since):
		// Whether records are lost shows on the token's page: an exclusive token jumps past
		// the tie, a compound one goes on inside it.
		w.pending = &TieOverflow{At: last, Page: w.page, PageSize: raw.Len(), Delivered: w.atN}
		w.q = Query{Token: raw.Next}
	default:
		w.q = Query{Since: last}
	}
	if !last.IsZero() {
		w.low = last
	}
	return recs, nil
}

// settleOverflow decides a pending tie overflow on the page its token brought: a page that
// goes on at the tie's time pages through it; any other page skipped what was left of it.
func (w *Walker) settleOverflow(first time.Time) {
	o := *w.pending
	w.pending = nil
	if first.Equal(o.At) {
		w.log.Debug("the API's token pages through a tie wider than a page", "updated_at", cursor.FormatTime(o.At), "page", o.Page)
		return
	}
	w.stats.TieOverflows++
	if len(w.stats.Overflows) < maxOverflowsKept {
		w.stats.Overflows = append(w.stats.Overflows, o)
	}
	w.opt.Observer.TieOverflow()
	w.log.Error("more records share one updatedAt than a page holds and the API cannot page through them; records at this timestamp beyond this page may be missing (an API with an after-id parameter avoids this)",
		"page", o.Page, "updated_at", cursor.FormatTime(o.At), "page_records", o.PageSize, "delivered_at_it", o.Delivered, "tie_overflows", w.stats.TieOverflows)
}

// delivered reports whether the walk holds the record as delivered: same id, time and content.
func (w *Walker) delivered(id string, t time.Time, fp string) bool {
	if t.Equal(w.at) {
		s, ok := w.seen[id]
		return ok && s.fp == fp
	}
	_, ok := w.window[cursor.Digest(id, t, fp)]
	return ok
}

// newToken reports whether next is a token this stretch of pages without progress has not
// followed yet: paging through a tie by a compound token brings nothing new for several pages
// and is still progress, while a token that comes back is a loop.
func (w *Walker) newToken(next *string) bool {
	if next == nil || w.q.Token == nil {
		return false
	}
	h := fnv.New64a()
	h.Write([]byte(*next))
	k := h.Sum64()
	if w.tokens == nil {
		w.tokens = map[uint64]struct{}{}
	}
	if _, dup := w.tokens[k]; dup || len(w.tokens) >= 1<<20 {
		return false
	}
	w.tokens[k] = struct{}{}
	return true
}

// add validates a page in order and keeps its new records. first and last are the updatedAt
// of the page's first and last valid records, lastID the id of the last. With cut set, the
// page is taken only up to cut: beyond reports a valid record past it, left for a later page.
// With end set (a backfill range), a valid record at or after end ends the walk (ended): it
// and the page after it belong to the next range.
func (w *Walker) add(raw *RawPage, cut, end time.Time) (recs []Record, first, last time.Time, lastID string, beyond, ended bool, err error) {
	for i := range raw.Len() {
		r, rerr := w.check(raw, i, last)
		if rerr == nil && w.opt.Fits != nil {
			if err := w.opt.Fits(r); err != nil {
				rerr = &RecordError{Page: w.page, Index: i, ID: r.ID, Err: err}
			}
		}
		if rerr != nil {
			if !w.opt.SkipInvalid {
				w.opt.Observer.InvalidRecord()
				return recs, first, last, lastID, false, false, rerr
			}
			at, timed := w.invalidAt(raw, i)
			if timed && !end.IsZero() && !at.Before(end) {
				// The next range's, as a valid record there would be: it dead-letters it.
				w.stats.Fetched -= raw.Len() - i
				return recs, first, last, lastID, false, true, nil
			}
			b := raw.Raw(i)
			key := "invalid:" + fingerprint(b)
			if _, dup := w.seen[key]; dup && w.atExact {
				w.stats.Skipped++
				continue
			}
			w.remember(key, w.at, "invalid")
			if s, ok := w.seen[key]; ok && timed && at.After(w.at) {
				s.of = at
				w.seen[key] = s
			}
			w.stats.Invalid++
			w.opt.Observer.InvalidRecord()
			recs = append(recs, Record{Raw: b, Page: w.page, Index: i, URL: raw.URL, Invalid: rerr, ID: rerr.ID})
			continue
		}
		u := &r
		if !cut.IsZero() && u.UpdatedAt.After(cut) {
			return recs, first, last, lastID, true, false, nil
		}
		if !end.IsZero() && !u.UpdatedAt.Before(end) {
			// The rest of the page is the next range's, which fetches it again and counts it:
			// counted here too, a backfill's records_fetched would exceed what the API holds.
			w.stats.Fetched -= raw.Len() - i
			return recs, first, last, lastID, false, true, nil
		}
		if first.IsZero() {
			first = u.UpdatedAt
		}
		last, lastID = u.UpdatedAt, u.ID
		if w.delivered(u.ID, u.UpdatedAt, r.Fingerprint) {
			w.stats.Skipped++
			continue
		}
		switch {
		case u.UpdatedAt.Equal(w.at) && !w.atExact && (w.rereadUntil != "" || w.q.AfterID == "" && w.q.Token == nil || w.at.Equal(w.resendAt)),
			!w.lbFrom.IsZero() && u.UpdatedAt.Before(w.lbFrom):
			// Read again from before what the walk holds exactly: it may have been delivered
			// before. (A request by position or token brings only records past what was read.)
			w.stats.Resent++
			w.opt.Observer.Resent(1)
		case u.UpdatedAt.Before(w.at):
			w.stats.Late++
			w.opt.Observer.LateRecord()
		}
		if u.UpdatedAt.After(w.at) {
			w.advance(u.UpdatedAt)
		}
		if u.ID == w.rereadUntil || !u.UpdatedAt.Equal(w.at) {
			w.rereadUntil = ""
		}
		w.remember(u.ID, u.UpdatedAt, r.Fingerprint)
		if len(w.window) > 2*w.pruned+10000 {
			w.prune()
		}
		r.Page, r.Index, r.URL = w.page, i, raw.URL
		if r.Deleted {
			w.stats.Deleted++
		}
		recs = append(recs, r)
	}
	return recs, first, last, lastID, false, false, nil
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

// Fingerprint is the fingerprint of a record whose Avro value is value, as cursors hold it
// (cursor.Cursor.Delivered, cursor.Digest): tools that check a cursor against a topic use it.
func Fingerprint(value []byte) string { return fingerprint(value) }

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
