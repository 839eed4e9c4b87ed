package main

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/playground"
)

// TestBackfillCursorShowResumeSet: `cursor show` prints a cursor with a backfill in flight as
// stored; `once` resumes its ranges where they stood (a range marked done is not read again,
// even though, crafted here, its records were never sent); `cursor set` replaces it with a plain
// position and says it dropped the backfill.
func TestBackfillCursorShowResumeSet(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		// 90 records, 3 per second from 2024-01-01T00:00:00Z to 00:00:29Z.
		f := newToolsFixture(t, tg, playground.Config{Records: 90, TieWidth: 3}, 1)
		at := func(s int) time.Time { return time.Date(2024, 1, 1, 0, 0, s, 0, time.UTC) }
		store, err := kafka.NewCursorStore(t.Context(), kafka.CursorStoreConfig{Client: tg.Kafka(t), Topic: f.cursors, ReplicationFactor: 1})
		require.NoError(t, err)
		t.Cleanup(func() { store.Close() })
		c := cursor.Cursor{Pipeline: "tools", LastUpdatedAt: at(0), Seq: 5, Backfill: &cursor.Backfill{Horizon: at(20), Ranges: []cursor.Range{
			{From: at(10), LastUpdatedAt: at(10)},
			{From: at(15), Done: true},
		}}}
		require.NoError(t, store.Commit(t.Context(), c))

		code, out, stderr := f.run(t, "cursor", "show")
		require.Equal(t, 0, code, stderr)
		want, err := cursor.Marshal(c)
		require.NoError(t, err)
		assert.Equal(t, string(want)+"\n", out)

		f.once(t)
		codec, err := avro.NewCodec()
		require.NoError(t, err)
		sent := map[int]int{} // second -> messages
		for _, r := range f.scan(t) {
			u, err := codec.Decode(r.Value)
			require.NoError(t, err)
			sent[u.UpdatedAt.Second()]++
		}
		for s := range 30 {
			want := 3
			if s >= 15 && s < 20 {
				want = 0 // the range [15s, 20s) was done
			}
			assert.Equal(t, want, sent[s], "messages of second %d", s)
		}
		resumed := kafkatest.Cursor(t, tg, f.cursors, "tools")
		assert.Nil(t, resumed.Backfill)
		assert.Equal(t, at(29), resumed.LastUpdatedAt)

		c.Seq = resumed.Seq + 1
		require.NoError(t, store.Commit(t.Context(), c))
		code, _, stderr = f.run(t, "cursor", "set", "--to", "2024-01-01T00:00:00Z")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "dropped the parallel backfill in flight (horizon 2024-01-01T00:00:20Z, 2 ranges after the cursor's)")
		assert.Nil(t, kafkatest.Cursor(t, tg, f.cursors, "tools").Backfill)
	})
}

// TestBackfillMinWaitFlag: whether a far-behind pass backfills is the user's to force either way
// (--backfill-min-wait 0: always; --fetch-concurrency 1: never), whatever the API's speed and the
// machine's load; by default an API answering at once (in-process here) is weighed and a pass that
// stays sequential says why.
func TestBackfillMinWaitFlag(t *testing.T) {
	tg := kafkatest.NewFake(t)
	cases := []struct {
		name     string
		flags    []string
		backfill bool
		says     string
	}{
		{"0 always backfills", []string{"--backfill-min-wait", "0"}, true, `msg="backfill started`},
		{"1 never does", []string{"--backfill-min-wait", "1"}, false, "walking on sequentially"},
		{"fetch concurrency 1 never does", []string{"--backfill-min-wait", "0", "--fetch-concurrency", "1"}, false, `msg="pass finished"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api, err := playground.New(playground.Config{Records: 2000, PageSize: 50})
			require.NoError(t, err)
			srv := httptest.NewServer(api.Handler())
			t.Cleanup(srv.Close)
			args := append([]string{"once", "--api-url", srv.URL + playground.KeysetPath, "--brokers", strings.Join(tg.Brokers, ","),
				"--topic", kafkatest.Topic(t, "u"), "--cursor-topic", kafkatest.Topic(t, "c"), "--pipeline", "bf"}, c.flags...)
			code, _, stderr := run(t.Context(), nil, args...)
			require.Equal(t, 0, code, stderr)
			assert.Equal(t, c.backfill, strings.Contains(stderr, `msg="backfill started`), stderr)
			assert.Contains(t, stderr, c.says)
			assert.Contains(t, stderr, "records_produced=2000")
		})
	}
	code, _, stderr := run(t.Context(), nil, "once", "--api-url", "http://127.0.0.1:1/", "--brokers", strings.Join(tg.Brokers, ","),
		"--topic", "t", "--backfill-min-wait", "1.5")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "--backfill-min-wait 1.5: must be between 0 and 1")
}

// The flag's 0 (always backfill) is the pipeline's negative share: its own 0 means the default.
func TestBackfillMinWaitTranslation(t *testing.T) {
	for flag, want := range map[float64]float64{0: -1, 0.25: 0.25, 0.5: 0.5, 1: 1} {
		assert.Equal(t, want, backfillMinWait(flag), "--backfill-min-wait %g", flag)
	}
}
