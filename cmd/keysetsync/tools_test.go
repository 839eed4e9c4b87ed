package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/playground"
)

// toolsFixture is a playground served over HTTP, fresh data and cursor topics, and the env vars
// that point every command at them.
type toolsFixture struct {
	tg      kafkatest.Target
	api     *playground.Server
	topic   string
	cursors string
	vars    map[string]string
}

func newToolsFixture(t *testing.T, tg kafkatest.Target, cfg playground.Config, partitions int) *toolsFixture {
	t.Helper()
	api, err := playground.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	f := &toolsFixture{tg: tg, api: api, topic: kafkatest.Topic(t, "users"), cursors: kafkatest.Topic(t, "cursors")}
	kafkatest.CreateTopic(t, tg, f.topic, partitions, nil)
	f.vars = map[string]string{
		"KEYSETSYNC_BROKERS":                  strings.Join(tg.Brokers, ","),
		"KEYSETSYNC_API_URL":                  srv.URL + "/pagination/keyset",
		"KEYSETSYNC_TOPIC":                    f.topic,
		"KEYSETSYNC_CURSOR_TOPIC":             f.cursors,
		"KEYSETSYNC_PIPELINE":                 "tools",
		"KEYSETSYNC_TOPIC_REPLICATION_FACTOR": "1",
	}
	return f
}

// run runs a command with the fixture's env vars. A command that should end but waits (a tail
// that never sees its --max-messages) is cancelled after a minute, so the test fails instead of
// hanging.
func (f *toolsFixture) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	return run(ctx, f.vars, args...)
}

// once runs `keysetsync once` and returns its stderr.
func (f *toolsFixture) once(t *testing.T) string {
	t.Helper()
	code, _, stderr := f.run(t, "once")
	require.Equal(t, 0, code, stderr)
	return stderr
}

// scan returns every message of the data topic with its timestamp.
func (f *toolsFixture) scan(t *testing.T) []kafka.Record {
	t.Helper()
	var out []kafka.Record
	require.NoError(t, f.tg.Kafka(t).Scan(t.Context(), f.topic, func(r kafka.Record) error {
		out = append(out, r)
		return nil
	}))
	return out
}

// tailMsg is one line of tail's output, parsed strictly.
type tailMsg struct {
	Partition int               `json:"partition"`
	Offset    int64             `json:"offset"`
	Timestamp string            `json:"timestamp"`
	Key       *string           `json:"key"`
	Headers   map[string]string `json:"headers"`
	Value     *playground.User  `json:"value"`
	Error     string            `json:"error"`
	raw       map[string]string // each field's JSON as printed
}

func parseTail(t *testing.T, out string) []tailMsg {
	t.Helper()
	var msgs []tailMsg
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var m tailMsg
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&m), line)
		var raw map[string]json.RawMessage
		require.NoError(t, json.Unmarshal([]byte(line), &raw))
		m.raw = map[string]string{}
		for k, v := range raw {
			m.raw[k] = string(v)
		}
		ts, err := time.Parse(time.RFC3339Nano, m.Timestamp)
		require.NoError(t, err, "timestamp of %s", line)
		require.Equal(t, time.UTC, ts.Location(), "timestamp of %s is not UTC", line)
		msgs = append(msgs, m)
	}
	return msgs
}

// byPosition sorts messages by partition, then offset: tail interleaves partitions.
func byPosition(msgs []tailMsg) []tailMsg {
	sort.Slice(msgs, func(i, j int) bool {
		if msgs[i].Partition != msgs[j].Partition {
			return msgs[i].Partition < msgs[j].Partition
		}
		return msgs[i].Offset < msgs[j].Offset
	})
	return msgs
}

func valuesByID(msgs []tailMsg) []playground.User {
	out := make([]playground.User, 0, len(msgs))
	for _, m := range msgs {
		if m.Value != nil {
			out = append(out, *m.Value)
		}
	}
	sortUsers(out)
	return out
}

func sortUsers(us []playground.User) {
	sort.Slice(us, func(i, j int) bool { return us[i].ID < us[j].ID })
}

// awaitClockPast returns once time.Now() is after t, so messages produced from now on carry a
// later timestamp (milliseconds) than t. It spins at most a millisecond past t.
func awaitClockPast(t time.Time) {
	for !time.Now().After(t) {
		runtime.Gosched()
	}
}

func TestTailPrintsWhatOnceProduced(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		f := newToolsFixture(t, tg, playground.Config{Records: 120, TieWidth: 4}, 3)
		assert.Contains(t, f.once(t), "records_produced=120")
		produced := f.api.Snapshot() // what the first once produced: every record, once
		first := f.scan(t)
		require.Len(t, first, 120)

		// Then updates, produced by a second once after a point in time all of the first
		// pass's messages are before.
		var last time.Time
		for _, r := range first {
			if r.Time.After(last) {
				last = r.Time
			}
		}
		from := last.Add(time.Millisecond).Truncate(time.Millisecond)
		awaitClockPast(from)
		updated, err := f.api.UpdateIDs(produced[7].ID, produced[50].ID, produced[99].ID)
		require.NoError(t, err)
		assert.Contains(t, f.once(t), "records_produced=3")
		all := f.scan(t)
		require.Len(t, all, 123)
		sort.Slice(all, func(i, j int) bool {
			return all[i].Partition < all[j].Partition || all[i].Partition == all[j].Partition && all[i].Offset < all[j].Offset
		})
		key := produced[50].ID
		var updatedKey playground.User
		for _, u := range updated {
			if u.ID == key {
				updatedKey = u
			}
		}

		cases := []struct {
			name string
			args []string
			want func(t *testing.T, msgs []tailMsg)
		}{
			{"from the beginning: every message, equal to what once produced", []string{"--from-beginning", "--max-messages", "123"}, func(t *testing.T, msgs []tailMsg) {
				require.Len(t, msgs, len(all))
				byPosition(msgs)
				codec, err := avro.NewCodec()
				require.NoError(t, err)
				for i, r := range all {
					m := msgs[i]
					require.Equal(t, [2]int64{int64(r.Partition), r.Offset}, [2]int64{int64(m.Partition), m.Offset})
					require.NotNil(t, m.Key)
					assert.Equal(t, string(r.Key), *m.Key)
					assert.Equal(t, r.Time.UTC().Format(tailTimeLayout), m.Timestamp)
					for _, h := range r.Headers {
						assert.Equal(t, string(h.Value), m.Headers[h.Key])
					}
					assert.Len(t, m.Headers, 3)
					require.NotNil(t, m.Value, "message %d/%d", m.Partition, m.Offset)
					assert.Equal(t, *m.Key, m.Value.ID)
					assert.Equal(t, m.Value.UpdatedAt, m.Headers["keysetsync.updated_at"])
					assert.NotContains(t, m.raw, "error")
					u, err := codec.Decode(r.Value)
					require.NoError(t, err)
					assert.Equal(t, u.UpdatedAt.Format(time.RFC3339), m.Value.UpdatedAt)
				}
				// The first 120 messages of the partitions are the first pass: they equal the
				// playground's records field by field.
				var firstPass []tailMsg
				for _, m := range msgs {
					if m.Value != nil && !slices.ContainsFunc(updated, func(u playground.User) bool { return u == *m.Value }) {
						firstPass = append(firstPass, m)
					}
				}
				assert.Equal(t, produced, valuesByID(firstPass))
				assert.Subset(t, valuesByID(msgs), updated)
			}},
			{"max-messages stops early", []string{"--from-beginning", "--max-messages", "5"}, func(t *testing.T, msgs []tailMsg) {
				assert.Len(t, msgs, 5)
			}},
			{"key: both versions of one id, in order", []string{"--from-beginning", "--key", key, "--max-messages", "2"}, func(t *testing.T, msgs []tailMsg) {
				require.Len(t, msgs, 2)
				assert.Less(t, msgs[0].Offset, msgs[1].Offset)
				assert.Equal(t, produced[50], *msgs[0].Value)
				assert.Equal(t, updatedKey, *msgs[1].Value)
			}},
			{"from a time: only what was produced after it", []string{"--from", from.Format(time.RFC3339Nano), "--max-messages", "3"}, func(t *testing.T, msgs []tailMsg) {
				assert.Equal(t, updated, valuesByID(msgs))
			}},
			{"from a time, one key", []string{"--from", from.Format(time.RFC3339Nano), "--key", key, "--max-messages", "1"}, func(t *testing.T, msgs []tailMsg) {
				require.Len(t, msgs, 1)
				assert.Equal(t, updatedKey, *msgs[0].Value)
			}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				code, out, stderr := f.run(t, append([]string{"tail"}, c.args...)...)
				require.Equal(t, 0, code, stderr)
				c.want(t, parseTail(t, out))
			})
		}
	})
}

func TestTailFollowsNewMessagesUntilCancelled(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		f := newToolsFixture(t, tg, playground.Config{Records: 60, TieWidth: 3}, 3)
		f.once(t)

		stdout, stderr := &logtest.Buffer{}, &logtest.Buffer{}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan int, 1)
		go func() {
			e := &env{stdout: stdout, stderr: stderr, getenv: func(k string) string { return f.vars[k] }}
			done <- dispatch(ctx, e, []string{"tail"})
		}()
		// Tail prints its start offsets once they are fixed: from then on, everything produced
		// is after them.
		stderr.Await(t, "tail to start", func(s string) bool { return strings.Contains(s, "from the end") })

		var want []playground.User
		for round := range 2 {
			updated := f.api.Update(4)
			require.Len(t, updated, 4)
			want = append(want, updated...)
			f.once(t)
			out := stdout.Await(t, "the updates of round "+strconv.Itoa(round+1), func(s string) bool {
				return strings.Count(s, "\n") >= len(want)
			})
			msgs := parseTail(t, out)
			require.Equal(t, len(want), len(msgs), "only messages produced after tail started; got:\n%s", out)
			got := valuesByID(msgs)
			wantSorted := slices.Clone(want)
			sortUsers(wantSorted)
			assert.Equal(t, wantSorted, got)
		}

		cancelled := time.Now()
		cancel()
		select {
		case code := <-done:
			assert.Equal(t, 0, code, stderr.String())
			assert.Less(t, time.Since(cancelled), 5*time.Second, "tail must stop promptly")
		case <-time.After(30 * time.Second):
			t.Fatal("tail did not stop after cancellation")
		}
	})
}

// produceRaw writes messages to topic as they are, with the partitioner keysetsync uses.
func produceRaw(t *testing.T, tg kafkatest.Target, topic string, msgs ...kafkago.Message) {
	t.Helper()
	w := &kafkago.Writer{
		Addr: kafkago.TCP(tg.Brokers...), Topic: topic, Transport: tg.Client(t).Transport,
		Balancer: &kafkago.Murmur2Balancer{}, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond,
	}
	defer w.Close()
	require.NoError(t, w.WriteMessages(t.Context(), msgs...))
}

func TestSnapshotEqualsThePlaygroundState(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		f := newToolsFixture(t, tg, playground.Config{Records: 150, TieWidth: 5}, 3)
		f.once(t)
		f.api.Update(20) // so ids have several versions in the topic: the latest must win
		f.once(t)
		want := f.api.Snapshot()
		// A tombstone deletes its id from the snapshot.
		deleted := want[33].ID
		produceRaw(t, tg, f.topic, kafkago.Message{Key: []byte(deleted)})
		want = slices.Delete(want, 33, 34)

		dir := t.TempDir()
		cases := []struct {
			name   string
			args   []string
			output string
			parse  func(t *testing.T, out string) []playground.User
		}{
			{"jsonl to stdout", nil, "", parseJSONL},
			{"jsonl to a file", []string{"--format", "jsonl"}, filepath.Join(dir, "users.jsonl"), parseJSONL},
			{"csv to stdout", []string{"--format", "csv"}, "", parseCSV},
			{"csv to a file", []string{"--format", "csv"}, filepath.Join(dir, "users.csv"), parseCSV},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				args := append([]string{"snapshot"}, c.args...)
				if c.output != "" {
					args = append(args, "--output", c.output)
				}
				code, out, stderr := f.run(t, args...)
				require.Equal(t, 0, code, stderr)
				assert.Contains(t, stderr, "messages=171 tombstones=1 unkeyed=0 ids=149")
				if c.output != "" {
					assert.Empty(t, out)
					b, err := os.ReadFile(c.output)
					require.NoError(t, err)
					out = string(b)
					entries, err := os.ReadDir(dir)
					require.NoError(t, err)
					for _, e := range entries {
						assert.NotContains(t, e.Name(), ".tmp-", "temporary file left behind")
					}
				}
				assert.Equal(t, want, c.parse(t, out), "sorted by id, equal field by field")
			})
		}
	})
}

func parseJSONL(t *testing.T, out string) []playground.User {
	t.Helper()
	var us []playground.User
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	for dec.More() {
		var u playground.User
		require.NoError(t, dec.Decode(&u))
		us = append(us, u)
	}
	require.Equal(t, len(us), strings.Count(out, "\n"), "one object per line")
	return us
}

func parseCSV(t *testing.T, out string) []playground.User {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.NotEmpty(t, rows)
	require.Equal(t, []string{"id", "name", "email", "address", "company", "job", "createdAt", "updatedAt"}, rows[0])
	var us []playground.User
	for _, r := range rows[1:] {
		us = append(us, playground.User{ID: r[0], Name: r[1], Email: r[2], Address: r[3], Company: r[4], Job: r[5], CreatedAt: r[6], UpdatedAt: r[7]})
	}
	return us
}

func TestToolsOnValuesThatDoNotDecode(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		codec, err := avro.NewCodec()
		require.NoError(t, err)
		name := "Ada"
		good, err := codec.Append(nil, &avro.User{ID: "good", Name: &name, UpdatedAt: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)})
		require.NoError(t, err)
		topic := kafkatest.Topic(t, "raw")
		kafkatest.CreateTopic(t, tg, topic, 1, nil)
		produceRaw(t, tg, topic,
			kafkago.Message{Key: []byte("good"), Value: good, Headers: []kafkago.Header{{Key: "h", Value: []byte("v")}}},
			kafkago.Message{Key: []byte("bad"), Value: []byte{0xff, 0xff, 0xff}},
			kafkago.Message{Key: []byte("gone")},
		)
		vars := map[string]string{"KEYSETSYNC_BROKERS": strings.Join(tg.Brokers, ","), "KEYSETSYNC_TOPIC": topic}

		code, out, stderr := run(t.Context(), vars, "tail", "--from-beginning", "--max-messages", "3")
		require.Equal(t, 0, code, stderr)
		msgs := parseTail(t, out)
		require.Len(t, msgs, 3)
		assert.Equal(t, map[string]string{"h": "v"}, msgs[0].Headers)
		assert.Equal(t, playground.User{ID: "good", Name: "Ada", UpdatedAt: "2024-05-06T07:08:09Z"}, *msgs[0].Value)
		assert.JSONEq(t, `{"id":"good","name":"Ada","email":null,"address":null,"company":null,"job":null,"createdAt":null,"updatedAt":"2024-05-06T07:08:09Z"}`, msgs[0].raw["value"])
		assert.NotContains(t, msgs[1].raw, "value", "an undecodable value has an error instead")
		assert.Contains(t, msgs[1].Error, "does not decode")
		assert.Equal(t, map[string]string{}, msgs[2].Headers)
		assert.Equal(t, "null", msgs[2].raw["value"], "a tombstone has value null")
		assert.NotContains(t, msgs[2].raw, "error")

		// The snapshot cannot invent the state of an id whose latest value is unreadable.
		code, _, stderr = run(t.Context(), vars, "snapshot")
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, `latest value of id "bad" (`+topic+`/0 offset 1) as io.keysetsync.User: decode user`)
	})
}

func TestCursorShowSetReset(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		// 90 records, 3 per second from 2024-01-01T00:00:00Z to 00:00:29Z.
		f := newToolsFixture(t, tg, playground.Config{Records: 90, TieWidth: 3}, 2)

		code, out, stderr := f.run(t, "cursor", "show")
		assert.Equal(t, 1, code)
		assert.Empty(t, out)
		assert.Contains(t, stderr, `pipeline "tools" in topic "`+f.cursors+`": no cursor committed`)

		f.once(t)
		load := func() cursor.Cursor { return kafkatest.Cursor(t, tg, f.cursors, "tools") }
		committed := load()
		code, out, stderr = f.run(t, "cursor", "show")
		require.Equal(t, 0, code, stderr)
		wantJSON, err := cursor.Marshal(committed)
		require.NoError(t, err)
		assert.Equal(t, string(wantJSON)+"\n", out)
		assert.EqualValues(t, 1, committed.Seq)
		assert.Len(t, committed.Delivered, 3)

		// moved runs a cursor command that moves the cursor and checks what it printed and wrote.
		moved := func(t *testing.T, old cursor.Cursor, to time.Time, args ...string) {
			t.Helper()
			before := time.Now()
			code, out, stderr := f.run(t, args...)
			require.Equal(t, 0, code, stderr)
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			require.Len(t, lines, 2, out)
			oldJSON, err := cursor.Marshal(old)
			require.NoError(t, err)
			assert.Equal(t, "replaced: "+string(oldJSON), lines[0])
			wrote, ok := strings.CutPrefix(lines[1], "wrote: ")
			require.True(t, ok, lines[1])
			c, err := cursor.Unmarshal([]byte(wrote))
			require.NoError(t, err)
			assert.Equal(t, to, c.LastUpdatedAt)
			assert.Empty(t, c.Delivered)
			assert.Empty(t, c.Lookback)
			assert.Equal(t, old.Seq+1, c.Seq)
			assert.Equal(t, old.Records, c.Records)
			assert.False(t, c.CommittedAt.Before(before.Truncate(time.Microsecond)))
			c.Pipeline = "tools"
			got := load()
			assert.Contains(t, got.ReadFrom, f.cursors+"/", "where the cursor was read")
			got.ReadFrom = ""
			assert.Equal(t, c, got, "the store loads what was printed")
		}
		// resent runs once and returns the ids it produced, sorted.
		resent := func(t *testing.T) []string {
			t.Helper()
			seen := map[[2]int64]bool{}
			for _, r := range f.scan(t) {
				seen[[2]int64{int64(r.Partition), r.Offset}] = true
			}
			f.once(t)
			var ids []string
			for _, r := range f.scan(t) {
				if !seen[[2]int64{int64(r.Partition), r.Offset}] {
					ids = append(ids, string(r.Key))
				}
			}
			sort.Strings(ids)
			return ids
		}
		idsSince := func(at time.Time) []string {
			var ids []string
			for _, u := range f.api.Snapshot() {
				if u.UpdatedAt >= at.Format(cursor.TimeLayout) {
					ids = append(ids, u.ID)
				}
			}
			return ids
		}

		// set: a backfill from 00:00:20, inclusive.
		to := time.Date(2024, 1, 1, 0, 0, 20, 0, time.UTC)
		moved(t, committed, to, "cursor", "set", "--to", "2024-01-01T00:00:20Z")
		want := idsSince(to)
		require.Len(t, want, 30)
		assert.Equal(t, want, resent(t), "once re-sends exactly the records with updatedAt >= --to")
		afterSet := load()
		assert.EqualValues(t, 3, afterSet.Seq)
		assert.Equal(t, committed.LastUpdatedAt, afterSet.LastUpdatedAt)
		assert.EqualValues(t, 120, afterSet.Records)

		// reset: everything again.
		moved(t, afterSet, cursor.Start, "cursor", "reset")
		assert.Equal(t, idsSince(cursor.Start), resent(t))
		assert.Len(t, idsSince(cursor.Start), 90)
		assert.EqualValues(t, 5, load().Seq)

		// The history of moves stays in the topic: nothing was deleted.
		var seqs []int64
		require.NoError(t, tg.Kafka(t).Scan(t.Context(), f.cursors, func(r kafka.Record) error {
			require.NotNil(t, r.Value, "set and reset never write a tombstone")
			c, err := cursor.Unmarshal(r.Value)
			require.NoError(t, err)
			seqs = append(seqs, c.Seq)
			return nil
		}))
		assert.Equal(t, []int64{1, 2, 3, 4, 5}, seqs)

		// A pipeline with no cursor yet: reset writes the first one; the flag beats the env var.
		code, out, stderr = f.run(t, "cursor", "reset", "--pipeline", "fresh")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, out, `replaced: none (pipeline "fresh" had no committed cursor)`)
		fresh := kafkatest.Cursor(t, tg, f.cursors, "fresh")
		assert.EqualValues(t, 1, fresh.Seq)
		assert.Equal(t, cursor.Start, fresh.LastUpdatedAt)
	})
}

func TestToolsMissingTopic(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		missing := kafkatest.Topic(t, "missing")
		vars := map[string]string{"KEYSETSYNC_BROKERS": strings.Join(tg.Brokers, ",")}
		for _, cmd := range []string{"tail", "snapshot"} {
			t.Run(cmd, func(t *testing.T) {
				code, out, stderr := run(t.Context(), vars, cmd, "--topic", missing)
				assert.Equal(t, 1, code)
				assert.Empty(t, out)
				assert.Contains(t, stderr, `keysetsync `+cmd+`: `)
				assert.Contains(t, stderr, missing)
				assert.Contains(t, stderr, "Unknown Topic Or Partition")
			})
		}
	})
}

func TestToolsUsageErrors(t *testing.T) {
	cases := []struct {
		name string
		vars map[string]string
		args []string
		code int
		msg  string
	}{
		{"cursor without action", nil, []string{"cursor"}, 2, "missing action: want show, set or reset"},
		{"cursor unknown action", nil, []string{"cursor", "rewind"}, 2, `unknown action "rewind"`},
		{"cursor help", nil, []string{"cursor", "--help"}, 0, "Usage: keysetsync cursor <action>"},
		{"set without --to", nil, []string{"cursor", "set"}, 2, "--to is required"},
		{"set with a bad --to", nil, []string{"cursor", "set", "--to", "2024-01-01 10:00"}, 2, `--to "2024-01-01 10:00": want an RFC 3339 time`},
		{"set with a bad --to from env", map[string]string{"KEYSETSYNC_TO": "yesterday"}, []string{"cursor", "set"}, 2, `--to "yesterday"`},
		{"set into the future", nil, []string{"cursor", "set", "--to", "2999-01-01T00:00:00Z"}, 2, "is in the future"},
		{"show does not take --to", nil, []string{"cursor", "show", "--to", "2024-01-01T00:00:00Z"}, 2, "flag provided but not defined: -to"},
		{"empty pipeline", map[string]string{"KEYSETSYNC_PIPELINE": ""}, []string{"cursor", "show", "--pipeline", ""}, 2, "--pipeline is empty"},
		{"tail with two starts", nil, []string{"tail", "--from-beginning", "--from", "2024-01-01T00:00:00Z"}, 2, "--from-beginning and --from exclude each other"},
		{"tail with a bad --from", nil, []string{"tail", "--from", "noon"}, 2, `--from "noon": want an RFC 3339 time`},
		{"tail with negative --max-messages", map[string]string{"KEYSETSYNC_MAX_MESSAGES": "-1"}, []string{"tail"}, 2, "--max-messages -1"},
		{"tail with a bad bool in env", map[string]string{"KEYSETSYNC_FROM_BEGINNING": "maybe"}, []string{"tail"}, 2, `invalid value "maybe" for KEYSETSYNC_FROM_BEGINNING`},
		{"snapshot with a bad format", nil, []string{"snapshot", "--format", "xml"}, 2, `--format "xml": want jsonl or csv`},
		{"snapshot with a bad format from env", map[string]string{"KEYSETSYNC_FORMAT": "parquet"}, []string{"snapshot"}, 2, `--format "parquet"`},
		{"unreachable broker", nil, []string{"cursor", "show", "--brokers", "127.0.0.1:1"}, 1, "127.0.0.1:1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			code, _, stderr := run(ctx, c.vars, c.args...)
			assert.Equal(t, c.code, code, stderr)
			assert.Contains(t, stderr, c.msg)
		})
	}
}

func TestToolsHelpListsEveryFlagWithItsEnvVar(t *testing.T) {
	cases := []struct {
		args  []string
		flags []string
	}{
		{[]string{"cursor", "show"}, []string{"brokers", "cursor-topic", "pipeline"}},
		{[]string{"cursor", "set"}, []string{"brokers", "cursor-topic", "pipeline", "to"}},
		{[]string{"cursor", "reset"}, []string{"brokers", "cursor-topic", "pipeline"}},
		{[]string{"tail"}, []string{"brokers", "topic", "from-beginning", "from", "key", "max-messages"}},
		{[]string{"snapshot"}, []string{"brokers", "topic", "format", "output"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, _, stderr := run(t.Context(), nil, append(c.args, "--help")...)
			require.Equal(t, 0, code)
			for _, flag := range c.flags {
				assert.Contains(t, stderr, "--"+flag+"  (env "+envName(flag)+", default ")
			}
		})
	}
	code, _, stderr := run(t.Context(), nil, "--help")
	require.Equal(t, 0, code)
	for _, cmd := range []string{"cursor", "tail", "snapshot"} {
		assert.Contains(t, stderr, "  "+cmd+" ")
	}
}
