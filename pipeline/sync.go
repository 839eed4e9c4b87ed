// Package pipeline runs a pipeline: it reads pages from a keyset-paginated API (Source), encodes
// every new or updated record as an Avro message keyed by id, hands each batch to a Sink (Kafka
// with acks=all), and commits the pipeline's cursor only after the Sink said the whole batch is
// written.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/schedule"
	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
	"github.com/keysetsync/keysetsync/throttle"
)

// Header keys of the lineage headers on every message, and of the reasons on dead letters.
const (
	HeaderPipeline  = "keysetsync.pipeline"
	HeaderSource    = "keysetsync.source"
	HeaderUpdatedAt = "keysetsync.updated_at"

	HeaderError    = "keysetsync.error"       // the full error message
	HeaderField    = "keysetsync.error.field" // the offending field, if one
	HeaderPage     = "keysetsync.page"        // page of the pass, 1-based
	HeaderIndex    = "keysetsync.index"       // index in the page's data array
	HeaderURL      = "keysetsync.request"     // the request that returned the record
	HeaderFailedAt = "keysetsync.failed_at"   // when keysetsync refused it (RFC 3339)
)

// Config configures a Pipeline.
type Config struct {
	Pipeline string
	Source   *source.Source
	// Topic receives the records; DLQTopic, when set, receives the original JSON of invalid
	// records (with headers saying why, where from and when) and the pass goes on. Without a
	// DLQTopic an invalid record stops the pass, the cursor just before it.
	Topic    string
	DLQTopic string
	// Walk tunes validation and the lookback window (see WalkOptions). Its MaxRecordBytes caps
	// the whole Kafka message of a record (key, value with ValuePrefix, headers), together with
	// what the topics accept (TopicMaxMessageBytes): a record over the smaller is invalid.
	Walk source.WalkOptions
	// TopicMaxMessageBytes and DLQMaxMessageBytes are the max.message.bytes of the data and the
	// dead-letter topic, as the broker reports them (topic.Info.MaxMessageBytes); 0 assumes the
	// broker's default, 1048588. Messages are sized to the smaller (sink.MaxSize), so that no
	// batch is refused for its size, and a record whose message would not fit is invalid
	// instead; a dead letter is cut to fit (HeaderTruncated).
	TopicMaxMessageBytes, DLQMaxMessageBytes int
	// Sink writes the batches, data and dead letters together (kafka.Sink; sink.Mem in tests).
	// It must take messages up to sink.MaxSize of the smaller max.message.bytes above (for
	// kafka.Sink: SinkConfig.MaxMessageBytes). After a failed produce or commit the pipeline
	// resets it, which waits for every write still in flight: no write of a failed batch may
	// land after a later pass committed a cursor past it. The Sink is the caller's: it closes it
	// after the last pass, as it does the Store.
	Sink  sink.Sink
	Store cursor.Store
	// ExactlyOnce commits each batch's cursor in the batch itself, with its records, instead
	// of to the Store after the batch is done. The cursor the Store would have been given
	// (the batch's position, Seq, Records, CommittedAt) becomes the batch's last message, as
	// the Store's cursor.RecordStore.Record makes it (kafka.CursorStore: the cursor topic, key
	// the pipeline's name). A Sink that writes a batch atomically (kafka.TxnSink: one Kafka
	// transaction) thus commits records and cursor together or neither: after a crash or a
	// failed batch, no record is visible that the loaded cursor does not cover, and a record
	// version is written (read_committed) exactly once.
	//
	// It requires a Store that implements cursor.RecordStore and loads read_committed
	// (kafka.CursorStore), and a Sink that keeps, on top of sink.Sink's contract, that a batch
	// becomes visible whole or not at all, that batches commit in Send order, and that once a
	// batch failed every later one fails unwritten until Reset (kafka.TxnSink): the cursors of
	// the batches in flight are made when they are sent, each counting on the ones before it.
	// After done(nil) the pipeline does not write the cursor again; it takes it as committed.
	// New refuses a Store without Record.
	ExactlyOnce bool
	Codec       *avro.Codec
	// ValuePrefix, when set, goes before the Avro encoding of every data value (not dead
	// letters): the Confluent wire-format header (magic byte 0 and the 4-byte big-endian schema
	// id) when the schema is registered with a schema registry. Nil: plain Avro binary.
	ValuePrefix []byte
	// BatchRecords is how many records are produced, acknowledged and covered by one cursor
	// commit. Larger batches mean fewer round trips and, after a crash, more records re-sent.
	BatchRecords int
	// MaxInFlight is how many batches may be produced and not yet acknowledged at once, while
	// the next pages are fetched (1: one batch at a time). Cursors are still committed strictly
	// in order, each only once its batch and every earlier one were acknowledged. It bounds
	// memory: a slow broker stops the fetching instead of growing a queue.
	MaxInFlight int
	// WriteTimeout bounds the wait for one batch's acknowledgement and its cursor commit. They run
	// detached from the pass's context, so a shutdown lets in-flight batches finish (or time out)
	// rather than abandon them half-acknowledged.
	WriteTimeout time.Duration
	// ProgressInterval is how often a pass logs a "progress" line (records/s, and what remains
	// when the API says: Contract.TotalPath); 0: never. Batch commits are logged regardless.
	ProgressInterval time.Duration
	// Logger receives the pipeline's log lines as they are: the caller names the pipeline on it
	// (cmd adds pipeline=<name> to everything one pipeline logs, the source's and sink's lines
	// too). Adding it here as well wrote pipeline= twice on every line of a pipeline.
	Logger *slog.Logger
	Clock  func() time.Time
	// FetchConcurrency is how many ranges a parallel backfill walks at once (0 or 1: passes
	// stay sequential). A pass whose walk still stands before its horizon after its first pages
	// backfills (see backfill.go); a lookback window keeps passes sequential. Walk.Limiter, when
	// set, gates the requests of all of them together.
	FetchConcurrency int
	// BackfillMargin is how far before the pass's start a backfill's horizon lies (0: 1m): a
	// record updated during the backfill then has an updatedAt at or after the horizon, and is
	// read after its older version, unless the API's clock is behind ours by more.
	BackfillMargin time.Duration
	// BackfillMinWait is the share of its first pages' time a pass must have spent waiting
	// for the API's answers (until their headers) to backfill (0: 0.5). Against an API that
	// answers at once the walk is bound by this process's CPU, which fetching in parallel
	// does not add to: measured on 2 cores, 8 workers against a local playground ran at 0.6
	// of the sequential rate. Negative: backfill whatever the share (tests).
	BackfillMinWait float64
	// MaxRequestsPerSecond, when > 0, is a ceiling on the API requests of each pass, backfill
	// or not. Unless Walk.Limiter is set, the pipeline gates its requests with a
	// throttle.Limiter of FetchConcurrency slots and this ceiling: it halves its concurrency
	// when the API answers 429 or 5xx, pauses on their Retry-After, and grows back.
	MaxRequestsPerSecond float64
	// Observer is told what the passes do, for metrics (nil: NopObserver); see Observer for
	// the contract. It is also Walk.Observer unless that is set.
	Observer Observer
}

// Pipeline runs passes of one pipeline. A Pipeline is not safe for concurrent passes.
type Pipeline struct {
	cfg    Config
	log    *slog.Logger
	limits sizeLimits
	// limiter gates the API requests (nil: Walk.Limiter's, or none); its limit is reported.
	limiter *throttle.Limiter
	// records makes the cursor record of each batch (Config.ExactlyOnce); nil otherwise.
	records cursor.RecordStore
	// pipelineHdr and sourceHdr are the same on every message: made once, shared (a Sink only
	// reads them).
	pipelineHdr, sourceHdr []byte
}

// Stats describes one pass.
type Stats struct {
	Pages        int                  // pages fetched
	Fetched      int                  // records fetched
	Produced     int                  // messages acknowledged by Kafka (records and dead letters)
	Skipped      int                  // records already delivered (same id, updatedAt and content)
	Invalid      int                  // invalid records sent to the dead-letter topic
	Late         int                  // late records found by the lookback window
	Deleted      int                  // records fetched as deletes and sent as tombstones (Config.Walk.DeletedField)
	Batches      int                  // batches produced and committed
	TieOverflows int                  // pages full of one timestamp that the API could not page through
	Overflows    []source.TieOverflow // the first of them: where records may be missing
	Resent       int                  // records sent again because the walk could not hold what it delivered
	Cursor       time.Time            // last committed cursor
	Duration     time.Duration
}

// New validates cfg: it refuses anything that could let the cursor run ahead of the data.
func New(cfg Config) (*Pipeline, error) {
	var errs []error
	if cfg.Pipeline == "" {
		errs = append(errs, errors.New("pipeline name is empty"))
	}
	if cfg.Topic == "" || cfg.Topic == cfg.DLQTopic {
		errs = append(errs, fmt.Errorf("topic %q: must be set and differ from the dead-letter topic", cfg.Topic))
	}
	cfg.Walk.SkipInvalid = cfg.DLQTopic != ""
	if cfg.Source == nil || cfg.Store == nil || cfg.Codec == nil || cfg.Sink == nil {
		errs = append(errs, errors.New("source, store, codec and sink are required"))
	}
	if _, ok := cfg.Store.(cursor.RecordStore); cfg.ExactlyOnce && cfg.Store != nil && !ok {
		errs = append(errs, fmt.Errorf("exactly-once: the cursor store (%T) cannot put a cursor in a batch (cursor.RecordStore)", cfg.Store))
	}
	var limits sizeLimits
	if cfg.Source != nil {
		var err error
		if limits, err = newSizeLimits(&cfg, cfg.Source.URL()); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.BatchRecords <= 0 {
		cfg.BatchRecords = 1000
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 60 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.BackfillMargin <= 0 {
		cfg.BackfillMargin = time.Minute
	}
	if cfg.BackfillMinWait == 0 {
		cfg.BackfillMinWait = 0.5
	}
	cfg.Observer = observerOrNop(cfg.Observer)
	var limiter *throttle.Limiter
	if cfg.Walk.Limiter == nil && (cfg.FetchConcurrency > 1 || cfg.MaxRequestsPerSecond > 0) {
		limiter = throttle.New(throttle.Config{Max: max(cfg.FetchConcurrency, 1), RequestsPerSecond: cfg.MaxRequestsPerSecond, Logger: cfg.Logger})
		cfg.Walk.Limiter = source.Throttled(limiter)
	}
	if cfg.Walk.Observer == nil {
		cfg.Walk.Observer = cfg.Observer
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Pipeline{cfg: cfg, log: log, limits: limits, limiter: limiter, pipelineHdr: []byte(cfg.Pipeline), sourceHdr: []byte(cfg.Source.URL())}
	if cfg.ExactlyOnce {
		s.records = cfg.Store.(cursor.RecordStore)
	}
	s.cfg.Walk.Fits = s.fits
	s.log.Info("largest message accepted", "bytes", limits.record, "from", limits.why, "sink_max_bytes", limits.batchBytes)
	return s, nil
}

// pass is the state of one pass.
type pass struct {
	committed cursor.Cursor // what the store holds
	// sent is the cursor of the last batch handed to the Sink with its cursor (ExactlyOnce):
	// the next batch's carries on from it. Only the producer loop uses it.
	sent     cursor.Cursor
	stats    Stats
	start    time.Time
	progress progress
}

// progress is what the progress reporter reads while the fetcher and the committer write it.
type progress struct {
	pages, fetched, produced atomic.Int64
	remaining                atomic.Int64              // -1: the API never said
	cursor                   atomic.Pointer[time.Time] // committed updatedAt
	backfill                 atomic.Pointer[backfill]  // while one runs
}

// batch is the unit of produce and commit: its messages, and the cursor position right after
// them. done closes when the Sink answered it (finish).
type batch struct {
	msgs    []sink.Message
	records int // data messages and dead letters: msgs without the cursor
	pos     cursor.Cursor
	pages   int // pages fetched up to this batch, for the logs
	// cursor, with ExactlyOnce, is the cursor that is msgs' last message: committed with it.
	cursor *cursor.Cursor
	// unpin ends the batch's pin on the pass's slot (schedule.Pin), once the Sink answered it
	// or it was dropped: while a pass has batches in flight it keeps its slot, so the batches in
	// memory are bounded by the process's slots, not by its pipelines.
	unpin func()

	enqueued time.Time // when it was handed to the Sink, for Observer.BatchAcked

	once  sync.Once
	acked time.Time // when the Sink answered it; read after done
	err   error     // the Sink's answer; read after done
	done  chan struct{}
}

func newBatch(msgs []sink.Message, pos cursor.Cursor, pages int) *batch {
	return &batch{msgs: msgs, records: len(msgs), pos: pos, pages: pages, done: make(chan struct{}), unpin: func() {}}
}

// finish is the batch's done for Sink.Send. The Sink calls it once (internal/sinktest checks);
// a second call would change nothing.
func (b *batch) finish(err error) {
	b.once.Do(func() {
		b.err, b.acked = err, time.Now()
		close(b.done)
	})
}

// Pass runs one pass: from the committed cursor until the API has nothing newer. It returns
// the pass's stats and, on failure, an error wrapping one of the package's sentinels; the
// committed cursor then covers exactly the batches that were acknowledged.
//
// Three stages overlap: a fetcher walks the API and cuts batches, this goroutine enqueues them
// to Kafka (at most MaxInFlight unacknowledged), and a committer waits for each batch's
// acknowledgements in order and commits its cursor. On a shutdown (ctx cancelled), an invalid
// record or an API that gave up, what was fetched and validated before it is still produced
// and committed (bounded by WriteTimeout), so the cursor stops just before the problem.
func (s *Pipeline) Pass(ctx context.Context) (Stats, error) {
	p := &pass{start: s.cfg.Clock()}
	c, err := s.cfg.Store.Load(ctx, s.cfg.Pipeline)
	switch {
	case errors.Is(err, cursor.ErrNotFound):
		c = cursor.Cursor{Pipeline: s.cfg.Pipeline, LastUpdatedAt: cursor.Start}
		s.log.Info("no cursor committed yet, starting from the beginning", "since", cursor.FormatTime(c.LastUpdatedAt))
	case err != nil:
		err = fmt.Errorf("load cursor: %w", err)
		s.cfg.Observer.PassFinished(err)
		return p.stats, err
	default:
		if err := s.checkLoaded(c); err != nil {
			err = fmt.Errorf("load cursor: %w", err)
			s.cfg.Observer.PassFinished(err)
			return p.stats, err
		}
		s.log.Info("loaded cursor", "last_updated_at", cursor.FormatTime(c.LastUpdatedAt), "delivered_at_cursor", len(c.Delivered), "seq", c.Seq, "read_from", c.ReadFrom)
	}
	p.committed, p.sent = c, c
	p.stats.Cursor = c.LastUpdatedAt
	p.progress.remaining.Store(-1)
	p.progress.cursor.Store(&c.LastUpdatedAt)
	if s.cfg.ProgressInterval > 0 {
		done := make(chan struct{})
		defer close(done)
		go s.reportProgress(p, done)
	}
	if err == nil {
		s.cfg.Observer.PassStarted(c.LastUpdatedAt)
	} else {
		s.cfg.Observer.PassStarted(time.Time{})
	}
	walk := s.newPassWalk(c, p.start, &p.progress)

	abort := make(chan struct{}) // closed when producing failed: stop fetching
	var abortOnce sync.Once
	stop := func() { abortOnce.Do(func() { close(abort) }) }
	batches := make(chan *batch, 1) // one batch fetched ahead
	var fetchErr error
	go func() {
		defer close(batches)
		defer walk.close()
		fetchErr = s.fetch(ctx, walk, &p.progress, batches, abort)
	}()
	err = s.produce(ctx, p, batches, abort, stop)
	stop()
	for b := range batches { // let the fetcher see abort and end
		b.unpin()
	}
	if err == nil {
		err = fetchErr
	}

	ws := walk.Stats()
	p.stats.Pages, p.stats.Fetched, p.stats.Skipped, p.stats.TieOverflows = ws.Pages, ws.Fetched, ws.Skipped, ws.TieOverflows
	p.stats.Invalid, p.stats.Late, p.stats.Deleted = ws.Invalid, ws.Late, ws.Deleted
	p.stats.Overflows, p.stats.Resent = ws.Overflows, ws.Resent
	if err == nil && ws.TieOverflows > 0 && !s.cfg.Walk.AcceptTieOverflow {
		// Everything readable was delivered and committed; the hole is reported, not hidden.
		err = &source.TieOverflowError{Overflows: ws.Overflows, Total: ws.TieOverflows}
	}
	p.stats.Duration = s.cfg.Clock().Sub(p.start)
	s.log.Info("pass finished",
		"records_produced", p.stats.Produced, "records_fetched", p.stats.Fetched, "records_skipped", p.stats.Skipped,
		"pages", p.stats.Pages, "batches", p.stats.Batches, "tie_overflows", p.stats.TieOverflows,
		"invalid", p.stats.Invalid, "late", p.stats.Late, "resent", p.stats.Resent, "deleted", p.stats.Deleted,
		"cursor", cursor.FormatTime(p.committed.LastUpdatedAt), "duration", p.stats.Duration.Round(time.Millisecond),
		"records_per_s", rate(p.stats.Produced, p.stats.Duration), "ok", err == nil)
	s.cfg.Observer.PassFinished(err)
	return p.stats, err
}

// checkLoaded refuses a committed cursor that a pass must not start from: one further in the
// future than Walk.MaxFuture allows (the pass would skip every record until then and succeed),
// or one whose Seq no commit could increase. Neither heals by retrying; the error says where the
// cursor was read and how to replace it.
func (s *Pipeline) checkLoaded(c cursor.Cursor) error {
	at := c.ReadFrom
	if at == "" {
		at = "the cursor store"
	}
	opt := s.cfg.Walk.WithDefaults() // the bound the pass's Walker applies to records
	maxFuture := opt.MaxFuture
	if t := opt.Now(); c.LastUpdatedAt.After(t.Add(maxFuture)) {
		return fmt.Errorf("%w: pipeline %q: the cursor read at %s has last_updated_at %s, more than %s after now (%s): a pass would skip every record updated before it. Move it back with keysetsync cursor set --pipeline %s --to <time> (or cursor reset); if the source's times really are that far ahead, raise the allowed skew (--max-future)",
			cursor.ErrFuture, s.cfg.Pipeline, at, cursor.FormatTime(c.LastUpdatedAt), maxFuture, cursor.FormatTime(t.Truncate(time.Second)), s.cfg.Pipeline)
	}
	if c.Seq >= cursor.MaxSeq {
		return fmt.Errorf("%w: pipeline %q: the cursor read at %s has seq %d, the largest a cursor may have (2^53): no commit could follow it. Delete the pipeline's cursor (a tombstone, key %q) and set a new one with keysetsync cursor set",
			cursor.ErrCorrupt, s.cfg.Pipeline, at, c.Seq, s.cfg.Pipeline)
	}
	return nil
}

// fetch walks the API and sends batches of at least BatchRecords records (the last one may be
// smaller). It returns nil at the end of the pass, or the error that ended it after sending the
// records validated before it.
func (s *Pipeline) fetch(ctx context.Context, walk pager, prog *progress, out chan<- *batch, abort <-chan struct{}) error {
	var msgs []sink.Message
	for {
		recs, err := walk.Next(ctx)
		ws := walk.Stats()
		prog.pages.Store(int64(ws.Pages))
		prog.fetched.Store(int64(ws.Fetched))
		// After fetched: a progress line that shows what remains counts what was fetched.
		if n, ok := walk.Remaining(); ok {
			prog.remaining.Store(n)
		}
		for _, r := range recs {
			msgs = append(msgs, s.message(r))
		}
		// A backfill that ended moved the position without a record (its ranges' ends): a
		// batch, even of none, commits it, or the cursor would keep the ranges.
		flush := false
		if f, ok := walk.(interface{ flush() bool }); ok {
			flush = f.flush()
		}
		if flush || len(msgs) > 0 && (err != nil || len(msgs) >= s.cfg.BatchRecords) {
			select {
			case <-abort: // checked first: a select between two ready cases picks at random
				return nil
			default:
			}
			b := newBatch(msgs, walk.Position(), walk.Stats().Pages)
			b.unpin = schedule.Pin(ctx)
			select {
			case out <- b:
				msgs = nil
			case <-abort:
				b.unpin()
				return nil
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

// produce hands each batch to the Sink, at most MaxInFlight unacknowledged at once, while the
// committer commits their cursors in order. It returns the first produce or commit failure; then
// it resets the Sink, which waits for whatever it still has in flight, before the next pass may
// write anything.
func (s *Pipeline) produce(ctx context.Context, p *pass, batches <-chan *batch, abort <-chan struct{}, stop func()) error {
	wctx := context.WithoutCancel(ctx)
	inflight := make(chan *batch, s.cfg.MaxInFlight-1)
	committed := make(chan error, 1)
	go func() { committed <- s.commitInOrder(wctx, p, inflight, stop) }()
	for b := range batches {
		select {
		case inflight <- b: // blocks while MaxInFlight batches await their acknowledgement
		case <-abort:
			b.unpin() // dropped: the committer never sees it
		}
		// After a failure nothing more is written: it could never be committed, only duplicated.
		select {
		case <-abort:
			close(inflight)
			return s.failed(wctx, <-committed)
		default:
		}
		if s.records != nil {
			if err := s.cursorInBatch(p, b); err != nil {
				b.finish(err) // the committer fails the pass with it
				continue
			}
		}
		s.log.Debug("producing batch", "records", b.records, "up_to", cursor.FormatTime(b.pos.LastUpdatedAt))
		b.enqueued = time.Now()
		s.cfg.Sink.Send(wctx, b.msgs, b.finish)
	}
	close(inflight)
	return s.failed(wctx, <-committed)
}

// failed resets the Sink after a failure: Reset waits for every batch it still writes or
// retries, so none of them can land after a later cursor commit. The Reset is bounded by
// WriteTimeout: one that gives up leaves the Sink refusing batches (sink.Sink's contract), so
// the next pass fails at once and resets again, while the caller's retry budget runs, instead
// of this pass waiting for the broker without end.
func (s *Pipeline) failed(ctx context.Context, err error) error {
	if err == nil || !(errors.Is(err, ErrProduce) || errors.Is(err, ErrCommit)) {
		return err
	}
	start := s.cfg.Clock()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	rerr := s.cfg.Sink.Reset(ctx)
	s.log.Warn("pass failed; reset the sink once its in-flight batches ended", "waited", s.cfg.Clock().Sub(start).Round(time.Millisecond), "reset_err", rerr)
	return err
}

// commitInOrder waits for each batch's acknowledgements, in the order the batches were
// enqueued, and commits the cursor after it: a cursor is committed only when its batch and
// every earlier one were acknowledged. After the first failure it commits nothing more and
// only drains.
func (s *Pipeline) commitInOrder(ctx context.Context, p *pass, inflight <-chan *batch, stop func()) error {
	var failure error
	for b := range inflight {
		failure = s.commitNext(ctx, p, b, failure, stop)
		b.unpin()
	}
	return failure
}

// commitNext is commitInOrder's step for b, the next batch, after failure (nil: none yet); it
// returns the pass's failure after b.
func (s *Pipeline) commitNext(ctx context.Context, p *pass, b *batch, failure error, stop func()) error {
	if failure != nil {
		return failure
	}
	upTo := cursor.FormatTime(b.pos.LastUpdatedAt)
	t := time.NewTimer(s.cfg.WriteTimeout)
	select {
	case <-b.done:
		t.Stop()
	case <-t.C:
		s.cfg.Observer.ProduceFailed(true)
		stop()
		return fmt.Errorf("%w: batch of %d records up to updatedAt %s: not acknowledged within %s: %w", ErrProduce, b.records, upTo, s.cfg.WriteTimeout, context.DeadlineExceeded)
	}
	if err := b.err; errors.Is(err, ErrCommit) { // its cursor could not be made: not sent
		stop()
		return err
	} else if err != nil {
		failure = s.produceFailed(b, err)
		stop()
		return failure
	}
	s.observeAck(b)
	s.log.Debug("batch acknowledged, committing cursor", "records", b.records, "up_to", upTo)
	if err := s.commit(ctx, p, b); err != nil {
		stop()
		return fmt.Errorf("%w: batch of %d records up to updatedAt %s was acknowledged: %w", ErrCommit, b.records, upTo, err)
	}
	return nil
}

// produceFailed is the pass's error for a batch the Sink failed, told to the Observer.
func (s *Pipeline) produceFailed(b *batch, err error) error {
	failure := fmt.Errorf("%w: batch of %d records up to updatedAt %s: %w", ErrProduce, b.records, cursor.FormatTime(b.pos.LastUpdatedAt), err)
	if b.cursor != nil {
		// The batch's transaction, records and cursor, was aborted (or, fenced, by the broker).
		s.cfg.Observer.TxnAborted()
	}
	if errors.Is(err, ErrFenced) {
		failure = fmt.Errorf("pipeline %q is fenced: another instance with the same transactional id took over, this one must stop: %w", s.cfg.Pipeline, failure)
		s.log.Error("fenced: another instance of the pipeline with the same transactional id took over; nothing this one wrote since its last commit is visible", "err", err)
		s.cfg.Observer.Fenced()
	}
	s.cfg.Observer.ProduceFailed(retry.IsRetryable(err))
	return failure
}

// nextCursor is the cursor after b, the batch after the one whose cursor is prev.
func (s *Pipeline) nextCursor(prev cursor.Cursor, b *batch) (cursor.Cursor, error) {
	next := b.pos // the position's fields; the rest carries on from the committed cursor
	next.Pipeline = s.cfg.Pipeline
	next.Seq = prev.Seq + 1
	if next.Seq <= prev.Seq || next.Seq > cursor.MaxSeq {
		// checkLoaded refuses such a cursor; this keeps a commit from ever not increasing Seq.
		return next, fmt.Errorf("%w: seq %d cannot be increased", cursor.ErrCorrupt, prev.Seq)
	}
	next.Records = prev.Records + int64(b.records)
	next.CommittedAt = s.cfg.Clock() // next is the Walker's position: it carries no ReadFrom of the loaded cursor
	return next, nil
}

// cursorInBatch appends b's cursor to its messages (ExactlyOnce): it carries on from the
// cursor of the batch sent before, which the Sink commits first or fails b with.
func (s *Pipeline) cursorInBatch(p *pass, b *batch) error {
	next, err := s.nextCursor(p.sent, b)
	if err == nil {
		var topic string
		var key, value []byte
		if topic, key, value, err = s.records.Record(next); err == nil {
			b.msgs = append(b.msgs, sink.Message{Topic: topic, Key: key, Value: value})
			b.cursor, p.sent = &next, next
			return nil
		}
	}
	return fmt.Errorf("%w: batch of %d records up to updatedAt %s: cursor record: %w", ErrCommit, b.records, cursor.FormatTime(b.pos.LastUpdatedAt), err)
}

// commit commits the cursor after b, acknowledged: to the Store, or, with ExactlyOnce, by
// taking the one the batch carried, which the Sink committed with it.
func (s *Pipeline) commit(ctx context.Context, p *pass, b *batch) error {
	n := b.records
	var next cursor.Cursor
	var took time.Duration
	if b.cursor != nil {
		next = *b.cursor
		s.cfg.Observer.TxnCommitted()
	} else {
		var err error
		if next, err = s.nextCursor(p.committed, b); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
		defer cancel()
		start := time.Now()
		if err := s.cfg.Store.Commit(ctx, next); err != nil {
			return err
		}
		took = time.Since(start)
	}
	s.cfg.Observer.CursorCommitted(next.LastUpdatedAt, took)
	p.committed = next
	p.stats.Produced += n
	p.stats.Batches++
	p.stats.Cursor = next.LastUpdatedAt
	p.progress.produced.Store(int64(p.stats.Produced))
	p.progress.cursor.Store(&next.LastUpdatedAt)
	s.log.Info("batch committed", "records", n, "records_total", p.stats.Produced, "pages", b.pages,
		"cursor", cursor.FormatTime(next.LastUpdatedAt), "delivered_at_cursor", len(next.Delivered),
		"records_per_s", rate(p.stats.Produced, s.cfg.Clock().Sub(p.start)))
	return nil
}

// reportProgress logs a progress line every ProgressInterval until done: what the pass did so
// far, its rates over the last interval, and, when the API says how many records remain, an
// estimate of the time left at the pass's fetch rate so far.
func (s *Pipeline) reportProgress(p *pass, done <-chan struct{}) {
	t := time.NewTicker(s.cfg.ProgressInterval)
	defer t.Stop()
	last, lastFetched, lastProduced := s.cfg.Clock(), int64(0), int64(0)
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		now := s.cfg.Clock()
		fetched, produced := p.progress.fetched.Load(), p.progress.produced.Load()
		d := now.Sub(last)
		fetchRate, produceRate := rate(int(fetched-lastFetched), d), rate(int(produced-lastProduced), d)
		attrs := []any{"pages", p.progress.pages.Load(), "records_fetched", fetched, "records_produced", produced,
			"records_per_s", produceRate, "fetched_per_s", fetchRate,
			"cursor", cursor.FormatTime(*p.progress.cursor.Load()), "elapsed", now.Sub(p.start).Round(time.Second)}
		// The estimate uses the pass's average fetch rate: steadier than one interval's.
		if bf := p.progress.backfill.Load(); bf != nil {
			// A backfill's ranges cannot say how many records remain: the estimate is by the
			// share of its time span fetched, at its rate so far.
			active, left, done := bf.progress()
			attrs = append(attrs, "backfill_ranges_active", active, "backfill_ranges_left", left,
				"backfill_done_pct", float64(int(done*1000))/10, "fetch_limit", s.fetchLimit(s.cfg.FetchConcurrency))
			if elapsed := time.Since(bf.started); done > 0 {
				attrs = append(attrs, "eta", time.Duration(float64(elapsed)*(1-done)/done).Round(time.Second))
			}
			s.cfg.Observer.FetchLimit(s.fetchLimit(s.cfg.FetchConcurrency))
		} else if n := p.progress.remaining.Load(); n >= 0 {
			attrs = append(attrs, "records_remaining", n)
			if elapsed := now.Sub(p.start); fetched > 0 && elapsed > 0 {
				attrs = append(attrs, "eta", time.Duration(float64(n)/float64(fetched)*float64(elapsed)).Round(time.Second))
			}
		}
		s.log.Info("progress", attrs...)
		last, lastFetched, lastProduced = now, fetched, produced
	}
}

// observeAck tells the Observer about an acknowledged batch, its dead letters apart.
func (s *Pipeline) observeAck(b *batch) {
	dead := 0
	if s.cfg.DLQTopic != "" {
		for i := range b.msgs[:b.records] {
			if b.msgs[i].Topic == s.cfg.DLQTopic {
				dead++
			}
		}
	}
	s.cfg.Observer.BatchAcked(b.records-dead, dead, b.acked.Sub(b.enqueued))
}

func (s *Pipeline) message(r source.Record) sink.Message {
	if r.Invalid != nil {
		return s.deadLetter(r)
	}
	value := r.Value // nil for a delete: a tombstone
	if len(s.cfg.ValuePrefix) > 0 && !r.Deleted {
		value = append(append(make([]byte, 0, len(s.cfg.ValuePrefix)+len(r.Value)), s.cfg.ValuePrefix...), r.Value...)
	}
	return sink.Message{
		Topic: s.cfg.Topic,
		Key:   []byte(r.ID),
		Value: value,
		Headers: []sink.Header{
			{Key: HeaderPipeline, Value: s.pipelineHdr},
			{Key: HeaderSource, Value: s.sourceHdr},
			{Key: HeaderUpdatedAt, Value: r.UpdatedAt.UTC().AppendFormat(make([]byte, 0, len(time.RFC3339Nano)), time.RFC3339Nano)},
		},
	}
}

// deadLetter is the message for an invalid record: its original JSON, keyed by its id when it
// has one, with headers that say why, where from and when.
func (s *Pipeline) deadLetter(r source.Record) sink.Message {
	s.log.Warn("invalid record sent to the dead-letter topic", "topic", s.cfg.DLQTopic, "err", r.Invalid)
	var key []byte
	if r.Invalid.ID != "" {
		key = []byte(r.Invalid.ID)
	}
	m := sink.Message{
		Topic: s.cfg.DLQTopic,
		Key:   key,
		Value: []byte(r.Raw),
		Headers: []sink.Header{
			{Key: HeaderPipeline, Value: []byte(s.cfg.Pipeline)},
			{Key: HeaderSource, Value: []byte(s.cfg.Source.URL())},
			{Key: HeaderURL, Value: []byte(r.URL)},
			{Key: HeaderError, Value: []byte(r.Invalid.Error())},
			{Key: HeaderField, Value: []byte(r.Invalid.Field)},
			{Key: HeaderPage, Value: []byte(strconv.Itoa(r.Page))},
			{Key: HeaderIndex, Value: []byte(strconv.Itoa(r.Index))},
			{Key: HeaderFailedAt, Value: []byte(s.cfg.Clock().UTC().Format(time.RFC3339Nano))},
		},
	}
	// An invalid record may be one too large for the topics: its dead letter is cut to fit
	// rather than fail its batch on every pass.
	if fit(&m, s.limits.batchBytes); len(m.Value) < len(r.Raw) {
		s.log.Warn("dead letter cut to fit the topic", "topic", s.cfg.DLQTopic, "page", r.Page, "index", r.Index, "original_bytes", len(r.Raw), "kept_bytes", len(m.Value), "limit", s.limits.batchBytes)
	}
	return m
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int(float64(n)/d.Seconds()*10)) / 10
}
