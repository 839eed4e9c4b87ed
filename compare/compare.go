// Package compare compares what an API serves now with the latest value of each id in a topic:
// the ids missing from the topic, stale in it or extra, and how far a cursor is behind the API.
// It reads no topic: the caller folds the topic into latest.Values and walks the API with a
// source.Walker.
package compare

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/keysetsync/keysetsync/latest"
	"github.com/keysetsync/keysetsync/source"
)

// API is the state of an API: the last record read of each id.
type API struct {
	byID map[string]source.Record
}

// ReadAPI walks w to the end and returns the last record of each id. Check w.Stats() for tie
// overflows afterwards: records the walk could not page through are in neither the API's state
// nor the topic, and a comparison would not see them (OverflowText).
func ReadAPI(ctx context.Context, w *source.Walker) (*API, error) {
	a := &API{byID: map[string]source.Record{}}
	err := w.Drain(ctx, func(r source.Record) error {
		a.byID[r.ID] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read API: %w", err)
	}
	return a, nil
}

// NewAPI returns the state of an API that serves recs (a later record of an id wins).
func NewAPI(recs ...source.Record) *API {
	a := &API{byID: make(map[string]source.Record, len(recs))}
	for _, r := range recs {
		a.byID[r.ID] = r
	}
	return a
}

// Result is how a topic differs from the API. The ids are sorted.
type Result struct {
	Missing []string // the API has a record the topic has no value of
	Stale   []string // the topic's latest value differs from the API's record, or the API deleted it
	Extra   []string // the topic has a value of an id the API does not serve
	// InAPI counts the API's ids, less the deletes the topic agrees with (no value there).
	InAPI int
}

// InSync says whether the topic holds every record of the API as it is now. Extra ids do not
// count against it: the API may serve no delete for a record it dropped.
func (r Result) InSync() bool { return len(r.Missing)+len(r.Stale) == 0 }

// Diff compares the topic's latest values (as the API's Avro values: unframed) with the API.
func (a *API) Diff(topic *latest.Values) Result {
	var r Result
	for id, rec := range a.byID {
		v, ok := topic.Get(id)
		switch {
		case rec.Deleted:
			// A delete is in sync when the topic's latest for the id is a tombstone (or nothing).
			if ok {
				r.Stale = append(r.Stale, id)
				r.InAPI++
			}
			continue
		case !ok:
			r.Missing = append(r.Missing, id)
		case !bytes.Equal(v.Bytes, rec.Value):
			r.Stale = append(r.Stale, id)
		}
		r.InAPI++
	}
	for _, id := range topic.Keys() {
		if _, ok := a.byID[id]; !ok {
			r.Extra = append(r.Extra, id)
		}
	}
	slices.Sort(r.Missing)
	slices.Sort(r.Stale)
	return r
}

// Lag is how far a cursor is behind the API.
type Lag struct {
	Newest time.Time // the API's newest updatedAt; zero when it serves no record
	Newer  int       // records updated after the cursor: what the next pass would deliver
}

// Lag compares a cursor's last updatedAt with the API's records.
func (a *API) Lag(cursorAt time.Time) Lag {
	var l Lag
	for _, r := range a.byID {
		if r.UpdatedAt.After(l.Newest) {
			l.Newest = r.UpdatedAt
		}
		if r.UpdatedAt.After(cursorAt) {
			l.Newer++
		}
	}
	return l
}

// OverflowText names where a walk could not page through a tie: each time with its page and the
// records read there. A comparison cannot see the records beyond those.
func OverflowText(ws source.WalkStats) string {
	return fmt.Sprintf("the API could not page through %d tie(s) wider than a page, so records at %s beyond those read can be fetched neither by the sync nor by this check; how many is unknown",
		ws.TieOverflows, source.OverflowList(ws.Overflows, ws.TieOverflows, "read"))
}
