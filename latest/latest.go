// Package latest folds a keyed topic, read from its start, into the latest value of each key:
// what a consumer of the upsert stream holds once it has read it all (snapshot prints it, verify
// compares it with the API). It reads nothing itself: the caller feeds it the messages.
package latest

import (
	"maps"
	"slices"
)

// Message is one message of a keyed topic.
type Message struct {
	Key       []byte
	Value     []byte // nil: a tombstone
	Partition int
	Offset    int64
}

// Value is the latest value of a key and where it was read.
type Value struct {
	Bytes     []byte
	Partition int
	Offset    int64
}

// Counts are what a fold saw.
type Counts struct {
	Messages   int // every message added
	Tombstones int // keyed messages without a value
	Unkeyed    int // messages without a key: not part of the upsert stream, so not folded
}

// Values is the fold: per key, the value of the last message added, a tombstone removing the key.
// Messages of one key must be added in their offset order (one partition holds a key). The zero
// value is ready to use.
type Values struct {
	byKey  map[string]Value
	counts Counts
}

// Add folds m into the values.
func (v *Values) Add(m Message) {
	v.counts.Messages++
	switch {
	case len(m.Key) == 0:
		v.counts.Unkeyed++ // no id to file it under
	case m.Value == nil:
		v.counts.Tombstones++
		delete(v.byKey, string(m.Key))
	default:
		if v.byKey == nil {
			v.byKey = map[string]Value{}
		}
		v.byKey[string(m.Key)] = Value{Bytes: m.Value, Partition: m.Partition, Offset: m.Offset}
	}
}

// Get returns the latest value of key; false when it has none (never written, or deleted).
func (v *Values) Get(key string) (Value, bool) {
	val, ok := v.byKey[key]
	return val, ok
}

// Len is the number of keys with a value.
func (v *Values) Len() int { return len(v.byKey) }

// Keys returns the keys with a value, sorted.
func (v *Values) Keys() []string { return slices.Sorted(maps.Keys(v.byKey)) }

// Counts returns what the fold saw.
func (v *Values) Counts() Counts { return v.counts }
