// Package logtest holds a log buffer that a command or a logger writes to while the test reads
// it, and waits on it.
package logtest

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// Buffer is an io.Writer safe to share between writers and a test. Await returns once its
// contents satisfy a condition, woken by every write (an event, not a poll).
type Buffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.changed != nil {
		close(b.changed)
	}
	b.changed = make(chan struct{})
	return n, err
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Await returns the contents once cond holds for them; it fails the test after a minute
// without it (a bound on a wait for an event, not a stand-in for one).
func (b *Buffer) Await(t testing.TB, what string, cond func(string) bool) string {
	t.Helper()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		if b.changed == nil {
			b.changed = make(chan struct{})
		}
		got, changed := b.buf.String(), b.changed
		b.mu.Unlock()
		if cond(got) {
			return got
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s; got:\n%s", what, got)
		}
	}
}

// Keys returns the attribute keys of one line of slog's text format, in order and with repeats
// (a key given twice by two layers of logger.With shows twice): the words before "=" outside
// quoted values.
func Keys(line string) []string {
	var keys []string
	inQuote, escaped, start := false, false, 0
	for i := 0; i <= len(line); i++ {
		if i < len(line) {
			c := line[i]
			switch {
			case escaped:
				escaped = false
				continue
			case inQuote && c == '\\':
				escaped = true
				continue
			case c == '"':
				inQuote = !inQuote
				continue
			case inQuote || c != ' ':
				continue
			}
		}
		if k, _, ok := strings.Cut(line[start:i], "="); ok && k != "" {
			keys = append(keys, k)
		}
		start = i + 1
	}
	return keys
}
