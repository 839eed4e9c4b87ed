package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/source"
)

// A parallel backfill. A keyset walk is sequential (each page's position comes from the one
// before), so against an API that answers in 100 ms pages of 100 cannot go past 1,000 records/s.
// When a pass finds the API far ahead of its cursor, it cuts what lies between the cursor and a
// horizon H into time ranges walked concurrently, each by its own source.Walker bounded to its
// range; an ordinary sequential walk from H then picks up the rest, what changed meanwhile.
//
//   - When: after the pass's first backfillAfterPages pages, if the walk still stands before H
//     and Config.FetchConcurrency > 1 and no lookback window is set (a lookback re-reads behind
//     the position, which a range cannot: those passes stay sequential). Small incremental
//     passes never leave the sequential path. Deviation from the plan: also only when those
//     pages spent at least Config.BackfillMinWait of their time waiting for the API; an API
//     that answers at once leaves the walk CPU-bound, and 8 workers on 2 cores ran at 0.6 of
//     the sequential rate (wasted page tails at range ends, more requests, contention).
//   - H is the pass's start less Config.BackfillMargin, at the API's precision: a record
//     updated during the backfill gets an updatedAt at or after H, so its new version is read
//     by the final walk, after its old one; the margin absorbs the skew between our clock and
//     the API's.
//   - Splits: an idle worker takes the range with the most time left unfetched and splits it
//     at the midpoint, strictly after what its walk already returned; no step to tune.
//   - Order: workers hand pages to one queue; the pass's one producer takes them in queue
//     order. The cursor of a batch is made from the pages taken up to it (model): its main
//     fields are the position of the lowest unfinished range, Cursor.Backfill lists the others.

// backfillAfterPages is how many pages a pass walks sequentially before it decides whether a
// backfill pays: a small incremental pass ends before.
const backfillAfterPages = 2

// backfillFrame is what a cursor's Backfill takes beyond its ranges: the field names and the
// horizon.
const backfillFrame = 128

// rangeEntryBytes is what one range of Cursor.Backfill takes beyond its delivered set: its
// times, flags and a LastID of at most maxRangeLastIDBytes.
const rangeEntryBytes = 512

// maxRangeLastIDBytes bounds the JSON of a range's LastID: a longer one is left out of the
// cursor, and the range re-reads its tie on resume (duplicates, never a loss).
const maxRangeLastIDBytes = 256

// rangeCursorBytes is each range walker's WalkOptions.MaxCursorBytes when a backfill may have
// up to unfinished ranges not done: with its share of the delivered sets, the whole cursor
// stays within cursor.MaxBytes. Such a backfill lists at most 2*unfinished+1 ranges (done
// ones are merged, so they alternate with the others), and at most unfinished+1 positions
// list records: the unfinished ranges' and the cursor's own when it stands in a done one.
func rangeCursorBytes(unfinished int) int {
	ranges := 2*unfinished + 1
	share := (cursor.MaxBytes - source.CursorReserve - backfillFrame - ranges*rangeEntryBytes) / (unfinished + 1)
	return source.CursorReserve + max(share, 0)
}

// pager is what a pass's fetcher reads pages from (a *source.Walker for a sequential pass).
type pager interface {
	Next(ctx context.Context) ([]source.Record, error)
	Position() cursor.Cursor
	Stats() source.WalkStats
	Remaining() (int64, bool)
}

// passWalk is a pass's walk: sequential, then possibly a backfill, then sequential from its
// horizon. Only the fetcher goroutine calls it.
type passWalk struct {
	s       *Pipeline
	prog    *progress
	cur     *source.Walker // the sequential walk; the backfill's first range while bf runs
	horizon time.Time
	pages   int           // pages cur returned before the decision
	spent   time.Duration // in cur.Next before the decision
	decided bool          // whether to backfill was decided
	// passHorizon is this pass's own horizon; horizon is a resumed backfill's saved one until
	// it ends.
	passHorizon time.Time
	bf          *backfill
	m           model            // bf's ranges as of the pages taken so far
	base        source.WalkStats // of walks that ended
	ranges      map[int]source.WalkStats
	ended       bool           // a backfill ended since flush was last asked
	resumed     *cursor.Cursor // a loaded cursor with a backfill, resumed by the first Next
}

func (s *Pipeline) newPassWalk(c cursor.Cursor, start time.Time, prog *progress) *passWalk {
	pw := &passWalk{s: s, prog: prog, ranges: map[int]source.WalkStats{}}
	prec := s.cfg.Source.Contract().TimeFormat.Precision()
	pw.horizon = start.Add(-s.cfg.BackfillMargin).Truncate(prec).UTC()
	pw.passHorizon = pw.horizon
	if c.Backfill != nil {
		pw.resumed, pw.decided = &c, true
		return pw
	}
	pw.cur = source.NewWalker(s.cfg.Source, s.cfg.Codec, c, s.cfg.Walk, s.log)
	pw.decided = s.cfg.FetchConcurrency <= 1 || s.cfg.Walk.Lookback > 0
	return pw
}

func (pw *passWalk) Next(ctx context.Context) ([]source.Record, error) {
	if c := pw.resumed; c != nil {
		pw.resumed = nil
		pw.resume(ctx, *c)
	}
	for pw.bf != nil {
		it, ok := pw.bf.next()
		if ok {
			if err := pw.m.apply(it); err != nil {
				return nil, fmt.Errorf("backfill: %w", err)
			}
			pw.ranges[it.span] = it.stats
			return it.recs, it.err
		}
		if err := pw.bf.close(); err != nil {
			return nil, err
		}
		pw.endBackfill()
	}
	began := time.Now()
	recs, err := pw.cur.Next(ctx)
	pw.spent += time.Since(began)
	if err == nil && !pw.decided {
		if pw.pages++; pw.pages >= backfillAfterPages {
			pw.decided = true
			pos, share := pw.cur.Position(), float64(pw.cur.Stats().Wait)/float64(max(pw.spent, 1))
			switch {
			case !pos.LastUpdatedAt.Before(pw.horizon):
			case share < pw.s.cfg.BackfillMinWait:
				pw.s.log.Info("far behind the API, but it answers faster than its pages are processed: walking on sequentially",
					"cursor", cursor.FormatTime(pos.LastUpdatedAt), "horizon", cursor.FormatTime(pw.horizon),
					"waiting_share", float64(int(share*100))/100, "backfill_min_wait", pw.s.cfg.BackfillMinWait)
			default:
				pw.start(ctx, pos)
			}
		}
	}
	return recs, err
}

// Position covers every record Next returned.
func (pw *passWalk) Position() cursor.Cursor {
	if pw.resumed != nil {
		return *pw.resumed
	}
	if pw.bf != nil {
		return pw.m.cursor()
	}
	return pw.cur.Position()
}

func (pw *passWalk) Stats() source.WalkStats {
	st := pw.base
	for _, r := range pw.ranges {
		st = addStats(st, r)
	}
	if pw.bf == nil {
		st = addStats(st, pw.cur.Stats())
	}
	return st
}

// flush reports whether a backfill ended since it was last asked: its final position must be
// committed even if no record follows.
func (pw *passWalk) flush() bool {
	f := pw.ended
	pw.ended = false
	return f
}

// Remaining is the sequential walk's: a range cannot tell what remains of the pass.
func (pw *passWalk) Remaining() (int64, bool) {
	if pw.bf != nil {
		return 0, false
	}
	return pw.cur.Remaining()
}

// close stops a backfill still running (the pass ended early): its workers end.
func (pw *passWalk) close() {
	if pw.bf != nil {
		pw.bf.stop()
		_ = pw.bf.close()
	}
}

// start turns the sequential walk, standing at pos before the horizon, into a backfill of
// [pos, horizon) whose first range it goes on walking.
func (pw *passWalk) start(ctx context.Context, pos cursor.Cursor) {
	n := pw.s.cfg.FetchConcurrency
	bf := pw.s.newBackfill(ctx, pw.horizon, n)
	first := bf.add(pos.LastUpdatedAt, pw.horizon, pos.LastUpdatedAt, pw.cur)
	pw.m = model{horizon: pw.horizon, prec: bf.prec, ranges: []modelRange{{from: first.from, pos: pos}}, top: pos, base: pos}
	pw.ranges[first.id] = pw.cur.Stats() // counted with the ranges' from now on
	pw.s.log.Info("backfill started: the cursor is far behind, walking ranges up to the horizon concurrently",
		"from", cursor.FormatTime(pos.LastUpdatedAt), "horizon", cursor.FormatTime(pw.horizon), "workers", n)
	pw.bf = bf
	pw.prog.backfill.Store(bf)
	bf.run(n)
}

// resume goes on with the backfill of a loaded cursor: every range where it stood, up to the
// saved horizon.
func (pw *passWalk) resume(ctx context.Context, c cursor.Cursor) {
	s := pw.s
	b := c.Backfill
	pw.horizon = b.Horizon
	m, walks := resumeModel(c, s.cfg.Source.Contract().TimeFormat.Precision())
	n := max(s.cfg.FetchConcurrency, 1)
	bf := s.newBackfill(ctx, b.Horizon, max(n, len(walks)))
	for _, w := range walks {
		bf.add(w.from, w.to, w.pos.LastUpdatedAt, s.rangeWalker(w.pos, bf.cursorBytes))
	}
	pw.m = m
	s.log.Info("resuming a backfill", "from", cursor.FormatTime(c.LastUpdatedAt), "horizon", cursor.FormatTime(b.Horizon),
		"ranges", len(b.Ranges)+1, "unfinished", len(walks), "workers", n)
	pw.bf = bf
	pw.prog.backfill.Store(bf)
	bf.run(n)
}

// rangeWalk is an unfinished range of a loaded backfill: [from, to), its walk standing at pos.
type rangeWalk struct {
	from, to time.Time
	pos      cursor.Cursor
}

// resumeModel is the model of a loaded cursor's backfill, and its unfinished ranges to walk,
// the cursor's own first; prec is the API's time precision.
func resumeModel(c cursor.Cursor, prec time.Duration) (model, []rangeWalk) {
	b := c.Backfill
	main := c
	main.Backfill = nil
	end := b.Horizon
	if len(b.Ranges) > 0 {
		end = b.Ranges[0].From
	}
	walks := []rangeWalk{{from: c.LastUpdatedAt, to: end, pos: main}}
	at := c.Position()
	m := model{horizon: b.Horizon, prec: prec, ranges: []modelRange{{from: c.LastUpdatedAt, pos: at}}, top: at, base: at}
	for i, r := range b.Ranges {
		if r.Done {
			m.ranges = append(m.ranges, modelRange{from: r.From, done: true})
			// Where its newest record stood is not kept: its end is a position after every
			// record of it (none delivered there), so the final walk does not read it again.
			if end := b.End(i); end.After(m.top.LastUpdatedAt) {
				m.top = cursor.Cursor{LastUpdatedAt: end, Delivered: map[string]string{}}
			}
			continue
		}
		pos := r.Position()
		walks = append(walks, rangeWalk{from: r.From, to: b.End(i), pos: pos})
		m.ranges = append(m.ranges, modelRange{from: r.From, pos: pos})
	}
	return m, walks
}

// endBackfill goes on sequentially from the newest record the ranges delivered: every range is
// done and taken.
func (pw *passWalk) endBackfill() {
	for _, r := range pw.ranges {
		pw.base = addStats(pw.base, r)
	}
	clear(pw.ranges)
	pw.s.log.Info("backfill finished; walking on from its horizon", "horizon", cursor.FormatTime(pw.horizon),
		"took", time.Since(pw.bf.started).Round(time.Millisecond))
	pw.bf, pw.ended = nil, true
	pw.prog.backfill.Store(nil)
	pw.s.cfg.Observer.BackfillRanges(0, 0)
	pw.cur = source.NewWalker(pw.s.cfg.Source, pw.s.cfg.Codec, pw.m.final(), pw.s.cfg.Walk, pw.s.log)
	if pw.passHorizon.After(pw.horizon) && pw.s.cfg.FetchConcurrency > 1 && pw.s.cfg.Walk.Lookback <= 0 {
		// A resumed backfill ended at the horizon its cursor saved, which an outage after the
		// crash may have left far behind the API: decide again, as a pass does at its start,
		// against this pass's horizon (records updated since this pass began lie after it).
		pw.horizon, pw.decided, pw.pages, pw.spent = pw.passHorizon, false, 0, 0
	}
}

// rangeWalker walks one range from pos; the backfill bounds it.
func (s *Pipeline) rangeWalker(pos cursor.Cursor, cursorBytes int) *source.Walker {
	opt := s.cfg.Walk
	opt.Lookback = 0
	opt.MaxCursorBytes = cursorBytes
	return source.NewWalker(s.cfg.Source, s.cfg.Codec, pos, opt, s.log)
}

// item is one page of a range, or the end of the range (done).
type item struct {
	span int       // the range's id
	from time.Time // where the range starts: the model finds it by it
	recs []source.Record
	pos  cursor.Cursor // the range's position after the page; with done, its last, within a whole cursor
	// held, with done, is the position as the walk held it, every record at its time listed
	// (up to WalkOptions.StateLimit): where the final walk goes on if this range is the newest.
	held  cursor.Cursor
	done  bool
	to    time.Time // with done: where the range ended (a split may have moved it down)
	stats source.WalkStats
	err   error // the walk's error after recs (not io.EOF)
}

// span is one range being walked: [from, to), its walk having returned nothing after fetched.
// mu guards to and fetched: the walk holds it while it takes a page (source.Bound), a split
// while it moves to.
type span struct {
	id       int
	from     time.Time
	walker   *source.Walker
	mu       sync.Mutex
	to       time.Time
	fetched  time.Time
	finished bool
}

func (sp *span) Lock() time.Time { sp.mu.Lock(); return sp.to }

func (sp *span) Unlock(upTo time.Time, ended bool) {
	if ended {
		sp.fetched = sp.to // nothing left to split off
	} else if upTo.After(sp.fetched) {
		sp.fetched = upTo
	}
	sp.mu.Unlock()
}

// left is how much time of the range is not fetched yet, in seconds (a Duration saturates at
// 292 years, and a first sync starts in year 1).
func (sp *span) left() float64 {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return seconds(sp.fetched, sp.to)
}

func seconds(from, to time.Time) float64 {
	return float64(to.Unix()-from.Unix()) + float64(to.Nanosecond()-from.Nanosecond())/1e9
}

// backfill runs the workers and hands their pages over in one queue.
type backfill struct {
	s           *Pipeline
	log         *slog.Logger
	horizon     time.Time
	prec        time.Duration
	cursorBytes int // each range walker's MaxCursorBytes
	started     time.Time
	total       float64 // seconds to walk, for the progress

	ctx    context.Context
	cancel context.CancelFunc
	items  chan item
	wg     sync.WaitGroup

	mu      sync.Mutex
	spans   []*span // unfinished ranges by from
	pending []*span // unfinished ranges no worker walks (loaded from a cursor)
	nextID  int
	active  int
	err     error // the first worker's failure
}

func (s *Pipeline) newBackfill(ctx context.Context, horizon time.Time, unfinished int) *backfill {
	ctx, cancel := context.WithCancel(ctx)
	n := max(s.cfg.FetchConcurrency, 1)
	return &backfill{s: s, log: s.log, horizon: horizon, prec: s.cfg.Source.Contract().TimeFormat.Precision(),
		cursorBytes: rangeCursorBytes(unfinished), started: time.Now(), ctx: ctx, cancel: cancel, items: make(chan item, 4*n)}
}

// add adds the unfinished range [from, to) walked by w from fetched, for a worker to take.
func (bf *backfill) add(from, to, fetched time.Time, w *source.Walker) *span {
	sp := &span{id: bf.nextID, from: from, to: to, fetched: fetched, walker: w}
	bf.nextID++
	w.SetBound(sp, bf.cursorBytes)
	bf.spans = append(bf.spans, sp)
	bf.pending = append(bf.pending, sp)
	bf.total += seconds(fetched, to)
	return sp
}

// run starts n workers; the queue closes when they all ended.
func (bf *backfill) run(n int) {
	bf.s.cfg.Observer.BackfillRanges(0, len(bf.spans))
	bf.s.cfg.Observer.FetchLimit(bf.s.fetchLimit(n))
	for range n {
		bf.wg.Add(1)
		go func() {
			defer bf.wg.Done()
			bf.work()
		}()
	}
	go func() {
		bf.wg.Wait()
		close(bf.items)
	}()
}

// next is the next page in queue order; false once every worker ended.
func (bf *backfill) next() (item, bool) {
	it, ok := <-bf.items
	return it, ok
}

// stop makes the workers end.
func (bf *backfill) stop() { bf.cancel() }

// close waits for the workers to end, dropping what they still queue, and returns the first
// failure of one.
func (bf *backfill) close() error {
	for range bf.items {
	}
	bf.cancel()
	bf.mu.Lock()
	defer bf.mu.Unlock()
	return bf.err
}

func (bf *backfill) fail(err error) {
	bf.mu.Lock()
	if bf.err == nil {
		bf.err = err
	}
	bf.mu.Unlock()
	bf.cancel()
}

func (bf *backfill) work() {
	for {
		sp := bf.take()
		if sp == nil {
			return
		}
		if err := bf.walk(sp); err != nil {
			bf.fail(err)
			return
		}
	}
}

// take gives an idle worker a range: one no worker walks, else the one with the most time
// left unfetched, split at its midpoint. Nil when there is none to split: a range's unfetched
// time only shrinks, so there never will be.
func (bf *backfill) take() *span {
	bf.mu.Lock()
	defer bf.mu.Unlock()
	if bf.ctx.Err() != nil {
		return nil
	}
	defer func() { bf.s.cfg.Observer.BackfillRanges(bf.active, len(bf.spans)) }()
	if len(bf.pending) > 0 {
		sp := bf.pending[0]
		bf.pending = bf.pending[1:]
		bf.active++
		return sp
	}
	var best *span
	most := 0.0
	for _, sp := range bf.spans {
		if l := sp.left(); l > most {
			best, most = sp, l
		}
	}
	if best == nil {
		return nil
	}
	best.mu.Lock()
	m, ok := splitAt(best.fetched, best.to, bf.prec)
	if !ok || best.finished {
		best.mu.Unlock()
		return nil
	}
	end := best.to
	best.to = m
	best.mu.Unlock()
	sp := &span{id: bf.nextID, from: m, to: end, fetched: m}
	bf.nextID++
	sp.walker = bf.s.rangeWalker(cursor.Cursor{LastUpdatedAt: m}, bf.cursorBytes)
	sp.walker.SetBound(sp, bf.cursorBytes)
	i, _ := slices.BinarySearchFunc(bf.spans, m, func(sp *span, t time.Time) int { return sp.from.Compare(t) })
	bf.spans = slices.Insert(bf.spans, i, sp)
	bf.active++
	bf.log.Debug("backfill range split", "at", cursor.FormatTime(m), "to", cursor.FormatTime(end), "ranges", len(bf.spans))
	return sp
}

// splitAt is the midpoint of (fetched, to) at precision prec, strictly between them: records
// at fetched may go on on the walk's next page and stay in its range. False when the span is
// too narrow to split.
func splitAt(fetched, to time.Time, prec time.Duration) (time.Time, bool) {
	d := to.Sub(fetched) // saturates for spans of centuries: still a point between them
	m := fetched.Add(d / 2).Truncate(prec)
	return m, m.After(fetched) && m.Before(to)
}

// walk walks sp to its end, queueing every page and then the range's end.
func (bf *backfill) walk(sp *span) error {
	for {
		recs, err := sp.walker.Next(bf.ctx)
		if errors.Is(err, io.EOF) {
			bf.mu.Lock()
			sp.mu.Lock()
			sp.finished, sp.fetched = true, sp.to
			to := sp.to
			sp.mu.Unlock()
			i := slices.Index(bf.spans, sp)
			bf.spans = slices.Delete(bf.spans, i, i+1)
			bf.active--
			bf.s.cfg.Observer.BackfillRanges(bf.active, len(bf.spans))
			bf.mu.Unlock()
			// Its share of the cursor bounded what it listed while other ranges ran; done, it
			// may be the newest range, where the final walk goes on (model.final).
			return bf.put(item{span: sp.id, from: sp.from, done: true, to: to, stats: sp.walker.Stats(),
				pos: sp.walker.PositionWithin(cursor.MaxBytes), held: sp.walker.PositionWithin(math.MaxInt)})
		}
		it := item{span: sp.id, from: sp.from, recs: recs, pos: sp.walker.Position(), stats: sp.walker.Stats(), err: err}
		if perr := bf.put(it); perr != nil {
			return perr
		}
		if err != nil {
			return err
		}
	}
}

// put queues it, waiting while the queue is full: memory stays flat when Kafka is slower.
func (bf *backfill) put(it item) error {
	select {
	case bf.items <- it:
		return nil
	case <-bf.ctx.Done():
		return bf.ctx.Err()
	}
}

// progress says how far the backfill is: ranges walked, ranges unfinished, and the fraction
// of its time span fetched.
func (bf *backfill) progress() (active, unfinished int, done float64) {
	bf.mu.Lock()
	defer bf.mu.Unlock()
	left := 0.0
	for _, sp := range bf.spans {
		left += sp.left()
	}
	if bf.total > 0 {
		done = max(0, min(1, 1-left/bf.total))
	}
	return bf.active, len(bf.spans), done
}

// model is the backfill's ranges as the pages taken from the queue so far left them: what
// the cursor of a batch of those pages must say once it is acknowledged. ranges[0] holds the
// cursor's own position.
type model struct {
	horizon time.Time
	prec    time.Duration // the API's time precision
	ranges  []modelRange
	// top is the greatest position of a range walked to its end: once every range is done,
	// the cursor's position (the final walk re-reads from there, not from the horizon, so a
	// record committed late before the horizon is still read).
	top cursor.Cursor
	// topHeld is top as its walk held it (item.held), zero for a top of a loaded cursor.
	topHeld cursor.Cursor
	// base is the position of the last range folded into the cursor's own: while the lowest
	// range has not started, the cursor stands there rather than at that range's start, so
	// that its position never goes back once every range is done (top is at least base).
	base cursor.Cursor
}

// unstarted reports whether pos, of the range starting at from, holds nothing delivered.
func unstarted(pos cursor.Cursor, from time.Time) bool {
	return pos.LastUpdatedAt.Equal(from) && len(pos.Delivered) == 0 && !pos.DeliveredPartial
}

type modelRange struct {
	from time.Time
	done bool
	pos  cursor.Cursor
}

func (m *model) end(i int) time.Time {
	if i+1 < len(m.ranges) {
		return m.ranges[i+1].from
	}
	return m.horizon
}

// find is the range starting at from; a range split off another (its first page, or its
// parent's end, come first) is inserted, not started.
func (m *model) find(from time.Time) (int, error) {
	i, ok := slices.BinarySearchFunc(m.ranges, from, func(r modelRange, t time.Time) int { return r.from.Compare(t) })
	if ok {
		return i, nil
	}
	if i == 0 || m.ranges[i-1].done || !from.Before(m.end(i-1)) {
		return 0, fmt.Errorf("a range starting at %s lies in no unfinished range", cursor.FormatTime(from))
	}
	m.ranges = slices.Insert(m.ranges, i, modelRange{from: from, pos: cursor.Cursor{LastUpdatedAt: from, Delivered: map[string]string{}}})
	return i, nil
}

// apply takes one item in queue order.
func (m *model) apply(it item) error {
	if len(m.ranges) == 0 {
		return fmt.Errorf("range at %s after every range was done", cursor.FormatTime(it.from))
	}
	i, err := m.find(it.from)
	if err != nil {
		return err
	}
	if !it.done {
		m.ranges[i].pos = it.pos
		return nil
	}
	if it.to.Before(m.end(i)) {
		// Split off after its first page was taken: the rest is a range not started yet.
		if _, err := m.find(it.to); err != nil {
			return err
		}
	}
	p, held := m.ranges[i].pos, cursor.Cursor{}
	if !it.pos.LastUpdatedAt.IsZero() { // the walk's last position, within a whole cursor
		p, held = it.pos, it.held
	}
	// A range that returned nothing stands at its start, after every record before it: it
	// would hide a record committed late there.
	if !unstarted(p, it.from) {
		// At top's time, p is at least as far: a done range's end (resumed) stands there with
		// nothing delivered, while p lists the records of its range's start delivered.
		if !p.LastUpdatedAt.Before(m.top.LastUpdatedAt) {
			m.top, m.topHeld = p, held
		}
		if i == 0 {
			m.base = p
		}
	}
	m.ranges[i] = modelRange{from: it.from, done: true}
	// Merge the done neighbours, and fold the lowest done ranges into the cursor's position.
	m.ranges = slices.CompactFunc(m.ranges, func(a, b modelRange) bool { return a.done && b.done })
	if m.ranges[0].done {
		m.ranges = m.ranges[1:]
	}
	return nil
}

// cursor is the cursor's position fields and Backfill for the ranges as they stand.
func (m *model) cursor() cursor.Cursor {
	if len(m.ranges) == 0 {
		return capLastID(m.top)
	}
	c, rest := m.ranges[0].pos, m.ranges[1:]
	var ranges []cursor.Range
	if r := m.ranges[0]; unstarted(r.pos, r.from) && r.from.After(m.base.LastUpdatedAt) {
		// Everything between them was delivered: the cursor stands at base, its own range
		// holding base's time only (its tie, listed as delivered), and what follows up to the
		// lowest range is done. Without that done range a resumed pass would walk it again:
		// its records twice, which exactly-once forbids.
		c, rest = m.base, m.ranges
		if next := m.base.LastUpdatedAt.Add(max(m.prec, 1)); next.Before(r.from) {
			ranges = append(ranges, cursor.Range{From: next, Done: true})
		}
	}
	c = capLastID(c)
	c.Backfill = &cursor.Backfill{Horizon: m.horizon, Ranges: slices.Grow(ranges, len(rest))}
	for _, r := range rest {
		if r.done {
			c.Backfill.Ranges = append(c.Backfill.Ranges, cursor.Range{From: r.from, Done: true})
			continue
		}
		c.Backfill.Ranges = append(c.Backfill.Ranges, cursor.RangeAt(r.from, capLastID(r.pos)))
	}
	fitDelivered(&c)
	return c
}

// fitDelivered makes the positions of c (its own and its ranges') with the longest delivered
// lists partial, longest first, until the lists fit what cursor.MaxBytes leaves them. Each
// walk lists at most its share (rangeCursorBytes), which fits; but the ranges of a loaded
// cursor list what the share of the backfill that wrote it allowed until their walks take a
// page again, and a backfill resumed with more workers than that one gives its new ranges
// their own share on top. A partial position re-reads its time on resume (duplicates, never a
// loss), as a walk's own does.
func fitDelivered(c *cursor.Cursor) {
	b := c.Backfill
	budget := cursor.MaxBytes - source.CursorReserve - backfillFrame - (len(b.Ranges)+1)*rangeEntryBytes
	type list struct {
		delivered *map[string]string
		partial   *bool
		bytes     int
	}
	size := func(d map[string]string) int {
		n := 0
		for id, fp := range d {
			n += cursor.EntryBytes(id, len(fp))
		}
		return n
	}
	lists := []list{{&c.Delivered, &c.DeliveredPartial, size(c.Delivered)}}
	total := lists[0].bytes
	for i := range b.Ranges {
		if r := &b.Ranges[i]; !r.Done {
			lists = append(lists, list{&r.Delivered, &r.DeliveredPartial, size(r.Delivered)})
			total += lists[len(lists)-1].bytes
		}
	}
	if total <= budget {
		return
	}
	slices.SortFunc(lists, func(a, b list) int { return b.bytes - a.bytes })
	for _, l := range lists {
		if total <= budget || l.bytes == 0 {
			return
		}
		// A new map: the model's positions share theirs with the committed cursors.
		*l.delivered, *l.partial = map[string]string{}, true
		total -= l.bytes
	}
}

// final is where the walk after the backfill starts, every range done: top as its walk held
// it. The cursor lists only what fits, and a tie read again from a partial position is
// re-sent: in the same pass, where a sequential walk, holding the tie, sends it once.
func (m *model) final() cursor.Cursor {
	if len(m.ranges) == 0 && m.topHeld.LastUpdatedAt.Equal(m.top.LastUpdatedAt) && !m.topHeld.LastUpdatedAt.IsZero() {
		return m.topHeld
	}
	return m.cursor()
}

// capLastID leaves out a LastID longer than a range's share allows: the range then reads its
// tie again on resume.
func capLastID(c cursor.Cursor) cursor.Cursor {
	if cursor.EntryBytes(c.LastID, 0) > maxRangeLastIDBytes {
		c.LastID, c.TieSettled = "", false
	}
	return c
}

// addStats adds b's counts to a's.
func addStats(a, b source.WalkStats) source.WalkStats {
	a.Pages += b.Pages
	a.Fetched += b.Fetched
	a.Skipped += b.Skipped
	a.Invalid += b.Invalid
	a.Late += b.Late
	a.Deleted += b.Deleted
	a.TieOverflows += b.TieOverflows
	a.Resent += b.Resent
	a.Probes += b.Probes
	a.Wait += b.Wait
	a.Overflows = append(slices.Clip(a.Overflows), b.Overflows...)
	return a
}

// fetchLimit is how many requests may be in flight now: the adaptive limit, or n workers.
func (s *Pipeline) fetchLimit(n int) int {
	if s.limiter != nil {
		return min(s.limiter.Limit(), n)
	}
	return n
}
