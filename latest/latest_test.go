package latest_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/keysetsync/keysetsync/latest"
)

// TestValues: the last value of each key wins, a tombstone deletes the key (until a later value),
// an unkeyed message is counted and not folded, and the keys come out sorted.
func TestValues(t *testing.T) {
	msg := func(key, value string, part int, off int64) latest.Message {
		m := latest.Message{Partition: part, Offset: off}
		if key != "" {
			m.Key = []byte(key)
		}
		if value != "" {
			m.Value = []byte(value)
		}
		return m
	}
	cases := []struct {
		name   string
		msgs   []latest.Message
		want   map[string]latest.Value
		counts latest.Counts
	}{
		{name: "nothing", want: map[string]latest.Value{}},
		{name: "the last value wins",
			msgs: []latest.Message{msg("b", "b1", 0, 0), msg("a", "a1", 1, 0), msg("b", "b2", 0, 1)},
			want: map[string]latest.Value{
				"a": {Bytes: []byte("a1"), Partition: 1, Offset: 0},
				"b": {Bytes: []byte("b2"), Partition: 0, Offset: 1},
			},
			counts: latest.Counts{Messages: 3}},
		{name: "a tombstone deletes",
			msgs:   []latest.Message{msg("a", "a1", 0, 0), msg("b", "b1", 0, 1), msg("a", "", 0, 2)},
			want:   map[string]latest.Value{"b": {Bytes: []byte("b1"), Offset: 1}},
			counts: latest.Counts{Messages: 3, Tombstones: 1}},
		{name: "a value after a tombstone is back",
			msgs:   []latest.Message{msg("a", "a1", 0, 0), msg("a", "", 0, 1), msg("a", "a2", 0, 2)},
			want:   map[string]latest.Value{"a": {Bytes: []byte("a2"), Offset: 2}},
			counts: latest.Counts{Messages: 3, Tombstones: 1}},
		{name: "a tombstone of a key never written",
			msgs:   []latest.Message{msg("a", "", 0, 0)},
			want:   map[string]latest.Value{},
			counts: latest.Counts{Messages: 1, Tombstones: 1}},
		{name: "unkeyed messages are not folded",
			msgs:   []latest.Message{msg("", "x", 0, 0), msg("", "", 0, 1), msg("a", "a1", 0, 2)},
			want:   map[string]latest.Value{"a": {Bytes: []byte("a1"), Offset: 2}},
			counts: latest.Counts{Messages: 3, Unkeyed: 2}},
		{name: "an empty value is a value, not a tombstone",
			msgs:   []latest.Message{{Key: []byte("a"), Value: []byte{}}},
			want:   map[string]latest.Value{"a": {Bytes: []byte{}}},
			counts: latest.Counts{Messages: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var v latest.Values
			for _, m := range c.msgs {
				v.Add(m)
			}
			got := map[string]latest.Value{}
			for _, k := range v.Keys() {
				got[k], _ = v.Get(k)
			}
			assert.Equal(t, c.want, got)
			assert.Equal(t, len(c.want), v.Len())
			assert.IsIncreasing(t, v.Keys())
			assert.Equal(t, c.counts, v.Counts())
			_, ok := v.Get("never")
			assert.False(t, ok)
		})
	}
}
