package cursor

import (
	"context"
	"fmt"
	"maps"
	"sync"
)

// MemStore keeps cursors in memory. It is for tests and dry runs: nothing survives the process.
type MemStore struct {
	mu      sync.Mutex
	cursors map[string]Cursor
}

var _ Store = (*MemStore)(nil)

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{cursors: map[string]Cursor{}} }

// Load implements Store.
func (m *MemStore) Load(ctx context.Context, pipeline string) (Cursor, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cursors[pipeline]
	if !ok {
		return Cursor{}, fmt.Errorf("pipeline %q: %w", pipeline, ErrNotFound)
	}
	c.Delivered, c.Lookback = maps.Clone(c.Delivered), maps.Clone(c.Lookback)
	return c, nil
}

// Commit implements Store.
func (m *MemStore) Commit(ctx context.Context, c Cursor) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkSeq(c.Seq); err != nil {
		return fmt.Errorf("commit cursor of %q: %w", c.Pipeline, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c.Delivered, c.Lookback = maps.Clone(c.Delivered), maps.Clone(c.Lookback)
	m.cursors[c.Pipeline] = c
	return nil
}

// Close implements Store.
func (m *MemStore) Close() error { return nil }
