// Package producer runs a pipeline: it reads pages from a keyset-paginated API (Source), encodes
// every new or updated record as an Avro message keyed by id, writes each batch to Kafka with
// acks=all, and commits the pipeline's cursor only after Kafka acknowledged the whole batch.
package producer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
)

// Header keys of the lineage headers on every message.
const (
	HeaderPipeline  = "keysetsync.pipeline"
	HeaderSource    = "keysetsync.source"
	HeaderUpdatedAt = "keysetsync.updated_at"
)

// Config configures a Syncer.
type Config struct {
	Pipeline string
	Source   *Source
	Writer   *kafka.Writer // see NewWriter; must use RequiredAcks = RequireAll
	Store    cursor.Store
	Codec    *avro.Codec
	// BatchRecords is how many records are produced, acknowledged and covered by one cursor
	// commit. Larger batches mean fewer round trips and, after a crash, more records re-sent.
	BatchRecords int
	// WriteTimeout bounds the produce and the cursor commit of one batch. They run detached from
	// the pass's context, so a shutdown lets an in-flight batch finish (or time out) rather than
	// abandon it half-acknowledged.
	WriteTimeout time.Duration
	Logger       *slog.Logger
	Clock        func() time.Time
}

// Syncer runs passes of one pipeline. A Syncer is not safe for concurrent passes.
type Syncer struct {
	cfg Config
	log *slog.Logger
}

// Stats describes one pass.
type Stats struct {
	Pages        int       // pages fetched
	Fetched      int       // records fetched
	Produced     int       // messages acknowledged by Kafka
	Skipped      int       // records already delivered at the cursor's timestamp
	Batches      int       // batches produced and committed
	TieOverflows int       // pages full of one timestamp that the API could not page through
	Cursor       time.Time // last committed cursor
	Duration     time.Duration
}

// NewWriter returns the Kafka writer for the data topic with the settings the guarantees rest
// on: acks=all, Murmur2 partitioning (a key lands where a Java producer would put it), one
// produce request per partition and sync batch where the bytes allow it, and a short linger
// because every write is synchronous (the 1 s default would stall each batch).
func NewWriter(client *kafka.Client, topic string, batchRecords int) *kafka.Writer {
	return &kafka.Writer{
		Addr:         client.Addr,
		Transport:    client.Transport,
		Topic:        topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		// A sync batch is BatchRecords plus less than one page: room for pages of up to 1000
		// records keeps it one request (kafka-go preallocates this many slots per batch). Bytes
		// stay below the broker's default message.max.bytes (1 MiB) so no batch is refused.
		BatchSize:    max(batchRecords, 1) + 1000,
		BatchBytes:   900 << 10,
		BatchTimeout: 2 * time.Millisecond,
		MaxAttempts:  5,
	}
}

// New validates cfg: it refuses anything that could let the cursor run ahead of the data.
func New(cfg Config) (*Syncer, error) {
	var errs []error
	if cfg.Pipeline == "" {
		errs = append(errs, errors.New("pipeline name is empty"))
	}
	if cfg.Source == nil || cfg.Store == nil || cfg.Codec == nil || cfg.Writer == nil {
		errs = append(errs, errors.New("source, store, codec and writer are required"))
	}
	if cfg.Writer != nil {
		if cfg.Writer.RequiredAcks != kafka.RequireAll {
			errs = append(errs, fmt.Errorf("writer RequiredAcks is %v: only acks=all (RequireAll) keeps the cursor behind acknowledged data", cfg.Writer.RequiredAcks))
		}
		if cfg.Writer.Async {
			errs = append(errs, errors.New("writer is Async: its errors would never reach the cursor commit"))
		}
	}
	if cfg.BatchRecords <= 0 {
		cfg.BatchRecords = 1000
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 60 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Syncer{cfg: cfg, log: log.With("pipeline", cfg.Pipeline)}, nil
}

// pass is the state of one pass: the cursor as it would be committed after the pending batch.
type pass struct {
	committed cursor.Cursor // what the store holds
	next      cursor.Cursor // committed + the pending batch
	pending   []kafka.Message
	stats     Stats
	start     time.Time
	// pageFirst and pageLast are the first and last updatedAt of the latest page.
	pageFirst, pageLast time.Time
}

// Sync runs one pass: from the committed cursor until the API has nothing newer. It returns
// the pass's stats and, on failure, an error wrapping one of the package's sentinels; the
// committed cursor then covers exactly the batches that were acknowledged. When ctx is
// cancelled, the records of whole pages already fetched are still produced and committed
// (bounded by WriteTimeout) and ctx's error is returned.
func (s *Syncer) Sync(ctx context.Context) (Stats, error) {
	p := &pass{start: s.cfg.Clock()}
	c, err := s.cfg.Store.Load(ctx, s.cfg.Pipeline)
	switch {
	case errors.Is(err, cursor.ErrNotFound):
		c = cursor.Cursor{Pipeline: s.cfg.Pipeline, LastUpdatedAt: cursor.Start}
		s.log.Info("no cursor committed yet, starting from the beginning", "since", c.LastUpdatedAt.Format(cursor.TimeLayout))
	case err != nil:
		return p.stats, fmt.Errorf("load cursor: %w", err)
	default:
		s.log.Info("loaded cursor", "last_updated_at", c.LastUpdatedAt.Format(cursor.TimeLayout), "delivered_at_cursor", len(c.Delivered), "seq", c.Seq)
	}
	p.committed = c
	p.next = c
	p.next.Delivered = maps.Clone(c.Delivered)
	p.stats.Cursor = c.LastUpdatedAt

	err = s.run(ctx, p)
	if err != nil && len(p.pending) > 0 && !errors.Is(err, ErrProduce) && !errors.Is(err, ErrCommit) {
		// A shutdown, a bad record or an API that gave up: what was validated before it is
		// still delivered and committed, so the cursor stops just before the problem.
		if ferr := s.flush(ctx, p); ferr != nil {
			err = errors.Join(err, ferr)
		}
	}
	p.stats.Duration = s.cfg.Clock().Sub(p.start)
	s.log.Info("pass finished",
		"records_produced", p.stats.Produced, "records_fetched", p.stats.Fetched, "records_skipped", p.stats.Skipped,
		"pages", p.stats.Pages, "batches", p.stats.Batches, "tie_overflows", p.stats.TieOverflows,
		"cursor", p.committed.LastUpdatedAt.Format(cursor.TimeLayout), "duration", p.stats.Duration.Round(time.Millisecond),
		"records_per_s", rate(p.stats.Produced, p.stats.Duration), "ok", err == nil)
	return p.stats, err
}

func (s *Syncer) run(ctx context.Context, p *pass) error {
	q := Query{Since: p.committed.LastUpdatedAt}
	stalled := 0
	for page := 1; ; page++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		raw, err := s.cfg.Source.Fetch(ctx, page, q)
		if err != nil {
			return err
		}
		p.stats.Pages++
		p.stats.Fetched += len(raw.Records)
		before := p.next.LastUpdatedAt
		sent, err := s.addPage(p, page, raw, q)
		if err != nil {
			return err
		}
		if raw.Next == nil {
			return s.flush(ctx, p)
		}
		if len(p.pending) >= s.cfg.BatchRecords {
			if err := s.flush(ctx, p); err != nil {
				return err
			}
		}
		if sent == 0 && !p.next.LastUpdatedAt.After(before) {
			if stalled++; stalled >= 3 {
				return fmt.Errorf("%w: %d pages in a row (up to page %d, %s) delivered nothing new and did not move past %s",
					ErrNoProgress, stalled, page, raw.URL, before.Format(cursor.TimeLayout))
			}
		} else {
			stalled = 0
		}
		q = s.nextQuery(p, page, raw, q)
	}
}

// nextQuery decides how to continue after a page. The API's scroll_param filter is exclusive
// (updatedAt > last), so following it would skip the records that share the last timestamp of
// the page but did not fit on it: the bug of the reference example. Instead the pass asks again
// from that timestamp inclusively and drops what it already delivered there. Only when a whole
// page carries the one timestamp it asked from can that not make progress; then the API cannot
// page through the tie, and the pass follows scroll_param, logging the possible loss loudly.
func (s *Syncer) nextQuery(p *pass, page int, raw *RawPage, q Query) Query {
	n := len(raw.Records)
	if n == 0 {
		return Query{Token: raw.Next}
	}
	first, last := p.pageFirst, p.pageLast
	if q.Token == nil && first.Equal(q.Since) && last.Equal(q.Since) {
		p.stats.TieOverflows++
		s.log.Error("more records share one updatedAt than a page holds and the API cannot page through them; records at this timestamp beyond this page may be missing",
			"page", page, "updated_at", q.Since.Format(cursor.TimeLayout), "page_records", n, "tie_overflows", p.stats.TieOverflows)
		return Query{Token: raw.Next}
	}
	return Query{Since: last}
}

// addPage validates the records of a page in order and queues the new ones for the pending
// batch. It stops at the first invalid record; the records before it stay queued.
func (s *Syncer) addPage(p *pass, page int, raw *RawPage, q Query) (int, error) {
	sent := 0
	var prev time.Time
	for i, rec := range raw.Records {
		u, err := DecodeUser(rec, page, i)
		if err != nil {
			return sent, err
		}
		if i > 0 && u.UpdatedAt.Before(prev) {
			return sent, &RecordError{Page: page, Index: i, ID: u.ID, Field: "updatedAt",
				Err: fmt.Errorf("%s is before the previous record's %s: records must be sorted by updatedAt", u.UpdatedAt.Format(cursor.TimeLayout), prev.Format(cursor.TimeLayout))}
		}
		if u.UpdatedAt.Before(p.next.LastUpdatedAt) {
			return sent, &RecordError{Page: page, Index: i, ID: u.ID, Field: "updatedAt",
				Err: fmt.Errorf("%s is older than the cursor %s: the API ignored updated_since or went backwards", u.UpdatedAt.Format(cursor.TimeLayout), p.next.LastUpdatedAt.Format(cursor.TimeLayout))}
		}
		if i == 0 {
			p.pageFirst = u.UpdatedAt
		}
		p.pageLast, prev = u.UpdatedAt, u.UpdatedAt
		value, err := s.cfg.Codec.Append(nil, &u)
		if err != nil {
			return sent, &RecordError{Page: page, Index: i, ID: u.ID, Err: err}
		}
		fp := fingerprint(value)
		if u.UpdatedAt.Equal(p.next.LastUpdatedAt) && p.next.Delivered[u.ID] == fp {
			p.stats.Skipped++
			continue
		}
		if u.UpdatedAt.After(p.next.LastUpdatedAt) {
			p.next.LastUpdatedAt = u.UpdatedAt
			p.next.Delivered = map[string]string{}
		} else if p.next.Delivered == nil {
			p.next.Delivered = map[string]string{}
		}
		p.next.Delivered[u.ID] = fp
		updated := u.UpdatedAt.Format(cursor.TimeLayout)
		p.pending = append(p.pending, kafka.Message{
			Key:   []byte(u.ID),
			Value: value,
			Headers: []kafka.Header{
				{Key: HeaderPipeline, Value: []byte(s.cfg.Pipeline)},
				{Key: HeaderSource, Value: []byte(s.cfg.Source.URL())},
				{Key: HeaderUpdatedAt, Value: []byte(updated)},
			},
		})
		sent++
	}
	return sent, nil
}

// flush produces the pending batch, waits for Kafka to acknowledge all of it, and only then
// commits the cursor that covers it. Any failure leaves the committed cursor where it was.
func (s *Syncer) flush(ctx context.Context, p *pass) error {
	n := len(p.pending)
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout)
	defer cancel()
	upTo := p.next.LastUpdatedAt.Format(cursor.TimeLayout)
	if err := s.cfg.Writer.WriteMessages(ctx, p.pending...); err != nil {
		return fmt.Errorf("%w: batch of %d records up to updatedAt %s: %w", ErrProduce, n, upTo, err)
	}
	next := p.next
	next.Delivered = maps.Clone(p.next.Delivered)
	next.Seq = p.committed.Seq + 1
	next.Records = p.committed.Records + int64(n)
	next.CommittedAt = s.cfg.Clock()
	if err := s.cfg.Store.Commit(ctx, next); err != nil {
		return fmt.Errorf("%w: batch of %d records up to updatedAt %s was acknowledged: %w", ErrCommit, n, upTo, err)
	}
	p.committed = next
	p.pending = nil
	p.stats.Produced += n
	p.stats.Batches++
	p.stats.Cursor = next.LastUpdatedAt
	elapsed := s.cfg.Clock().Sub(p.start)
	s.log.Info("batch committed", "records", n, "records_total", p.stats.Produced, "pages", p.stats.Pages,
		"cursor", upTo, "delivered_at_cursor", len(next.Delivered), "records_per_s", rate(p.stats.Produced, elapsed))
	return nil
}

// fingerprint identifies a record's content, so a record that changed again within the
// cursor's second is told apart from the copy already delivered.
func fingerprint(value []byte) string {
	h := fnv.New64a()
	h.Write(value)
	return hex.EncodeToString(h.Sum(nil))
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int(float64(n)/d.Seconds()*10)) / 10
}
