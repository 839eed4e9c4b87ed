package cursortest

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/sink"
)

// InSink is a cursor.RecordStore over a sink.Mem, for exactly-once tests without a broker: its
// cursors are the records a pipeline put in its batches, and Load reads them back from what
// the Mem wrote (acked batches only, as read_committed would), the highest Seq winning as in
// kafka.CursorStore. Commit is counted and refused: in exactly-once mode nothing may commit a
// cursor outside a batch.
type InSink struct {
	Mem     *sink.Mem
	Topic   string
	Commits atomic.Int64 // calls of Commit
}

var _ cursor.RecordStore = (*InSink)(nil)

// Record implements cursor.RecordStore.
func (s *InSink) Record(c cursor.Cursor) (string, []byte, []byte, error) {
	v, err := cursor.Marshal(c)
	if err != nil {
		return "", nil, nil, err
	}
	return s.Topic, []byte(c.Pipeline), v, nil
}

// Load implements cursor.Store.
func (s *InSink) Load(ctx context.Context, pipeline string) (cursor.Cursor, error) {
	var best cursor.Cursor
	found := false
	for i, m := range s.Mem.Written(s.Topic) {
		if string(m.Key) != pipeline {
			continue
		}
		c, err := cursor.Unmarshal(m.Value)
		if err != nil {
			return cursor.Cursor{}, fmt.Errorf("cursor %d of %q: %w", i, pipeline, err)
		}
		if !found || c.Seq >= best.Seq {
			best, found = c, true
		}
	}
	if !found {
		return cursor.Cursor{}, fmt.Errorf("pipeline %q: %w", pipeline, cursor.ErrNotFound)
	}
	return best, nil
}

// Commit implements cursor.Store: it refuses.
func (s *InSink) Commit(ctx context.Context, c cursor.Cursor) error {
	s.Commits.Add(1)
	return fmt.Errorf("cursortest.InSink: commit of seq %d outside a batch", c.Seq)
}

// Close implements cursor.Store.
func (s *InSink) Close() error { return nil }
