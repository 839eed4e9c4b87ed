package compare_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/keysetsync/keysetsync/compare"
	"github.com/keysetsync/keysetsync/latest"
	"github.com/keysetsync/keysetsync/source"
)

var t0 = time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC)

func rec(id, value string) source.Record {
	return source.Record{ID: id, Value: []byte(value), UpdatedAt: t0}
}

func deleted(id string) source.Record { return source.Record{ID: id, Deleted: true, UpdatedAt: t0} }

// topic folds key=value pairs in order; an empty value is a tombstone.
func topic(kv ...string) *latest.Values {
	var v latest.Values
	for i := 0; i < len(kv); i += 2 {
		m := latest.Message{Key: []byte(kv[i]), Offset: int64(i / 2)}
		if kv[i+1] != "" {
			m.Value = []byte(kv[i+1])
		}
		v.Add(m)
	}
	return &v
}

// TestDiff: what a user reads in verify's report: an id the topic lacks is missing, a value that
// differs (or a delete the topic has not applied) is stale, an id only in the topic is extra;
// missing or stale ids, not extra ones, make the topic out of sync.
func TestDiff(t *testing.T) {
	cases := []struct {
		name   string
		api    []source.Record
		topic  *latest.Values
		want   compare.Result
		inSync bool
	}{
		{name: "both empty", topic: topic(), inSync: true},
		{name: "in sync", api: []source.Record{rec("a", "1"), rec("b", "2")}, topic: topic("a", "1", "b", "2"),
			want: compare.Result{InAPI: 2}, inSync: true},
		{name: "missing", api: []source.Record{rec("b", "2"), rec("a", "1"), rec("c", "3")}, topic: topic("b", "2"),
			want: compare.Result{Missing: []string{"a", "c"}, InAPI: 3}},
		{name: "stale: the topic's latest value differs", api: []source.Record{rec("a", "new")}, topic: topic("a", "new", "a", "old"),
			want: compare.Result{Stale: []string{"a"}, InAPI: 1}},
		{name: "an older value then the API's is in sync", api: []source.Record{rec("a", "new")}, topic: topic("a", "old", "a", "new"),
			want: compare.Result{InAPI: 1}, inSync: true},
		{name: "a value the topic deleted is missing", api: []source.Record{rec("a", "1")}, topic: topic("a", "1", "a", ""),
			want: compare.Result{Missing: []string{"a"}, InAPI: 1}},
		{name: "extra ids do not break sync", api: []source.Record{rec("a", "1")}, topic: topic("z", "9", "a", "1", "m", "5"),
			want: compare.Result{Extra: []string{"m", "z"}, InAPI: 1}, inSync: true},
		{name: "a delete the topic applied is in sync and not counted", api: []source.Record{deleted("a"), rec("b", "2")}, topic: topic("a", "1", "a", "", "b", "2"),
			want: compare.Result{InAPI: 1}, inSync: true},
		{name: "a delete of an id never in the topic is in sync", api: []source.Record{deleted("a")}, topic: topic(),
			inSync: true},
		{name: "a delete the topic has not applied is stale", api: []source.Record{deleted("a")}, topic: topic("a", "1"),
			want: compare.Result{Stale: []string{"a"}, InAPI: 1}},
		{name: "the API's last record of an id counts", api: []source.Record{rec("a", "1"), rec("a", "2")}, topic: topic("a", "2"),
			want: compare.Result{InAPI: 1}, inSync: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := compare.NewAPI(c.api...).Diff(c.topic)
			assert.Equal(t, c.want, got)
			assert.Equal(t, c.inSync, got.InSync())
		})
	}
}

// TestLag: the API's newest updatedAt and how many records are newer than the cursor (what the
// next pass delivers); a cursor at or after every record is not behind.
func TestLag(t *testing.T) {
	at := func(id string, d time.Duration) source.Record { return source.Record{ID: id, UpdatedAt: t0.Add(d)} }
	api := []source.Record{at("a", 0), at("b", time.Second), at("c", 2*time.Second), at("d", 2*time.Second)}
	cases := []struct {
		name   string
		api    []source.Record
		cursor time.Time
		want   compare.Lag
	}{
		{name: "no records", cursor: t0, want: compare.Lag{}},
		{name: "from the start", api: api, cursor: time.Time{}, want: compare.Lag{Newest: t0.Add(2 * time.Second), Newer: 4}},
		{name: "behind", api: api, cursor: t0, want: compare.Lag{Newest: t0.Add(2 * time.Second), Newer: 3}},
		{name: "at the newest: a record at the cursor's time is not newer", api: api, cursor: t0.Add(2 * time.Second), want: compare.Lag{Newest: t0.Add(2 * time.Second)}},
		{name: "ahead of the API", api: api, cursor: t0.Add(time.Hour), want: compare.Lag{Newest: t0.Add(2 * time.Second)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, compare.NewAPI(c.api...).Lag(c.cursor))
		})
	}
}

// TestOverflowText names each tie the walk could not page through.
func TestOverflowText(t *testing.T) {
	ws := source.WalkStats{TieOverflows: 1, Overflows: []source.TieOverflow{{At: t0, Page: 3, Delivered: 50}}}
	got := compare.OverflowText(ws)
	assert.Contains(t, got, "could not page through 1 tie(s) wider than a page")
	assert.Contains(t, got, "2024-05-01T08:00:00Z")
	assert.Contains(t, got, "neither by the sync nor by this check")
}
