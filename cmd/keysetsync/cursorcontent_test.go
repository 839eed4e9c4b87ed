package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/playground"
)

// TestCursorTopicContent: cursor records that keysetsync did not write itself, or that were
// damaged, never make a pass silently skip or re-send forever. once refuses them naming the
// record's offset and the way out; cursor set/reset are that way out; then once syncs.
func TestCursorTopicContent(t *testing.T) {
	cases := []struct {
		name    string
		seed    []string // values of pipeline "tools" in the cursor topic, in order
		onceErr []string // in the error of the first once
		fix     []string // the command that repairs it
		fixOut  []string // in its output
		resent  int      // records the once after the fix sends (of 90, 3 per second from 00:00:00)
		seq     int64    // the cursor's seq after that once
	}{
		{
			name:    "last_updated_at far in the future",
			seed:    []string{`{"last_updated_at":"2999-01-01T00:00:00Z","seq":3}`},
			onceErr: []string{`cursor is in the future: pipeline "tools": the cursor read at CURSORS/0 offset 0 has last_updated_at 2999-01-01T00:00:00Z, more than 24h0m0s after now`, "keysetsync cursor set --pipeline tools --to <time>"},
			fix:     []string{"cursor", "set", "--to", "2024-01-01T00:00:20Z"},
			fixOut:  []string{`replaced: {"version":1,"pipeline":"tools","last_updated_at":"2999-01-01T00:00:00Z","seq":3,`, `wrote: {"version":1,"pipeline":"tools","last_updated_at":"2024-01-01T00:00:20Z","seq":4,`},
			resent:  30, seq: 5,
		},
		{
			name:    "seq that would wrap on the next commit",
			seed:    []string{`{"last_updated_at":"2024-01-01T00:00:10Z","seq":9223372036854775807}`},
			onceErr: []string{`cursor of "tools" at CURSORS/0 offset 0: corrupt cursor record: seq 9223372036854775807 is outside 0..2^53`, "keysetsync cursor set --pipeline tools --to <time> (or cursor reset)"},
			fix:     []string{"cursor", "reset"},
			fixOut:  []string{"replaced: unreadable cursor record at CURSORS/0 offset 0: corrupt cursor record: seq 9223372036854775807", `wrote: {"version":1,"pipeline":"tools","last_updated_at":"0001-01-01T00:00:00Z","seq":1,`},
			resent:  90, seq: 2,
		},
		{
			name:    "a record that is not JSON",
			seed:    []string{`{"last_updated_at":"2024-01-01T00:00:10Z","seq":7}`, `not json`},
			onceErr: []string{`cursor of "tools" at CURSORS/0 offset 1: corrupt cursor record: invalid character`},
			fix:     []string{"cursor", "reset"},
			fixOut: []string{"replaced: unreadable cursor record at CURSORS/0 offset 1: corrupt cursor record: invalid character",
				`highest readable: {"version":1,"pipeline":"tools","last_updated_at":"2024-01-01T00:00:10Z","seq":7,`, `"seq":8,`},
			resent: 90, seq: 9,
		},
	}
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				f := newToolsFixture(t, tg, playground.Config{Records: 90, TieWidth: 3}, 1)
				kafkatest.CreateTopic(t, tg, f.cursors, 1, map[string]string{"cleanup.policy": "compact"})
				w := &kafka.Writer{Addr: kafka.TCP(tg.Brokers...), Topic: f.cursors, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: tg.Client(t).Transport}
				t.Cleanup(func() { w.Close() })
				for _, v := range c.seed {
					require.NoError(t, w.WriteMessages(context.Background(), kafka.Message{Key: []byte("tools"), Value: []byte(v)}))
				}
				named := func(s string) string { return strings.ReplaceAll(s, "CURSORS", f.cursors) }

				code, _, stderr := f.run(t, "once")
				require.Equal(t, 1, code, "once must refuse the cursor: %s", stderr)
				for _, m := range c.onceErr {
					assert.Contains(t, stderr, named(m))
				}
				assert.Empty(t, f.scan(t), "nothing is produced from a refused cursor")

				code, out, stderr := f.run(t, c.fix...)
				require.Equal(t, 0, code, stderr)
				for _, m := range c.fixOut {
					assert.Contains(t, out, named(m))
				}

				f.once(t)
				assert.Len(t, f.scan(t), c.resent)
				f.once(t)
				assert.Len(t, f.scan(t), c.resent, "the cursor moved: a second once sends nothing")
				assert.Equal(t, c.seq, kafkatest.Cursor(t, tg, f.cursors, "tools").Seq)
			})
		}
	})
}
