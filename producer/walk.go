package producer

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
)

// Record is one new or changed record, validated and encoded.
type Record struct {
	User        avro.User
	Value       []byte          // Avro binary
	Fingerprint string          // identifies the content, see cursor.Cursor.Delivered
	Raw         json.RawMessage // as the API sent it
	Page, Index int             // where it was: page of the pass (1-based), index in the page
}

// WalkStats counts what a Walker saw.
type WalkStats struct {
	Pages        int // pages fetched
	Fetched      int // records fetched
	Skipped      int // records already delivered at the position's timestamp
	TieOverflows int // pages full of one timestamp that the API could not page through
}

// Walker reads a keyset API from a position and returns each record that is new since then
// exactly once. Its position (a timestamp and the records seen at exactly that timestamp) is
// what a cursor stores.
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

	at   time.Time         // position: greatest updatedAt returned
	seen map[string]string // ids returned at exactly `at`, with their fingerprints

	q       Query
	page    int
	done    bool
	stalled int
	stats   WalkStats
}

// NewWalker starts at the position of c (cursor.Start and nothing seen for a first sync).
func NewWalker(src *Source, codec *avro.Codec, c cursor.Cursor, log *slog.Logger) *Walker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	at := c.LastUpdatedAt
	if at.IsZero() {
		at = cursor.Start
	}
	return &Walker{src: src, codec: codec, log: log, at: at, seen: maps.Clone(c.Delivered), q: Query{Since: at}}
}

// Position returns the timestamp and the ids (with fingerprints) seen at exactly that
// timestamp, after every record Next returned so far. The map is a copy.
func (w *Walker) Position() (time.Time, map[string]string) { return w.at, maps.Clone(w.seen) }

// Stats returns the counts so far.
func (w *Walker) Stats() WalkStats { return w.stats }

// Next fetches the next page and returns its new records in order. After the last page it
// returns io.EOF. On an invalid record it returns the valid records before it together with a
// *RecordError; the position then covers exactly the records returned.
func (w *Walker) Next(ctx context.Context) ([]Record, error) {
	if w.done {
		return nil, io.EOF
	}
	w.page++
	w.log.Debug("fetching page", "page", w.page, "updated_since", sinceOf(w.q), "scroll", w.q.Token != nil)
	raw, err := w.src.Fetch(ctx, w.page, w.q)
	if err != nil {
		return nil, err
	}
	w.stats.Pages++
	w.stats.Fetched += len(raw.Records)
	before := w.at
	recs, first, last, err := w.add(raw)
	if err != nil {
		return recs, err
	}
	if raw.Next == nil {
		w.done = true
		return recs, nil
	}
	if len(recs) == 0 && !w.at.After(before) {
		if w.stalled++; w.stalled >= 3 {
			return nil, fmt.Errorf("%w: %d pages in a row (up to page %d, %s) brought nothing new and did not move past %s",
				ErrNoProgress, w.stalled, w.page, raw.URL, before.Format(cursor.TimeLayout))
		}
	} else {
		w.stalled = 0
	}
	switch {
	case len(raw.Records) == 0:
		w.q = Query{Token: raw.Next}
	case w.q.Token == nil && first.Equal(w.q.Since) && last.Equal(w.q.Since):
		w.stats.TieOverflows++
		w.log.Error("more records share one updatedAt than a page holds and the API cannot page through them; records at this timestamp beyond this page may be missing",
			"page", w.page, "updated_at", w.q.Since.Format(cursor.TimeLayout), "page_records", len(raw.Records), "tie_overflows", w.stats.TieOverflows)
		w.q = Query{Token: raw.Next}
	default:
		w.q = Query{Since: last}
	}
	return recs, nil
}

// add validates a page in order and keeps its new records, stopping at the first invalid one.
func (w *Walker) add(raw *RawPage) (recs []Record, first, last time.Time, err error) {
	for i, b := range raw.Records {
		u, err := DecodeUser(b, w.page, i)
		if err != nil {
			return recs, first, last, err
		}
		if i > 0 && u.UpdatedAt.Before(last) {
			return recs, first, last, &RecordError{Page: w.page, Index: i, ID: u.ID, Field: "updatedAt",
				Err: fmt.Errorf("%s is before the previous record's %s: records must be sorted by updatedAt", u.UpdatedAt.Format(cursor.TimeLayout), last.Format(cursor.TimeLayout))}
		}
		if u.UpdatedAt.Before(w.at) {
			return recs, first, last, &RecordError{Page: w.page, Index: i, ID: u.ID, Field: "updatedAt",
				Err: fmt.Errorf("%s is older than the cursor %s: the API ignored updated_since or went backwards", u.UpdatedAt.Format(cursor.TimeLayout), w.at.Format(cursor.TimeLayout))}
		}
		if i == 0 {
			first = u.UpdatedAt
		}
		last = u.UpdatedAt
		value, err := w.codec.Append(nil, &u)
		if err != nil {
			return recs, first, last, &RecordError{Page: w.page, Index: i, ID: u.ID, Err: err}
		}
		fp := fingerprint(value)
		if u.UpdatedAt.Equal(w.at) && w.seen[u.ID] == fp {
			w.stats.Skipped++
			continue
		}
		if u.UpdatedAt.After(w.at) {
			w.at, w.seen = u.UpdatedAt, map[string]string{}
		} else if w.seen == nil {
			w.seen = map[string]string{}
		}
		w.seen[u.ID] = fp
		recs = append(recs, Record{User: u, Value: value, Fingerprint: fp, Raw: b, Page: w.page, Index: i})
	}
	return recs, first, last, nil
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
