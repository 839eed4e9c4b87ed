package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/cursortest"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/kafka"
)

func TestCursorStoreConformance(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		cursortest.Run(t, func(t *testing.T) cursortest.Opener {
			name := kafkatest.Topic(t, "cursors")
			return func(t *testing.T) cursor.Store { return openCursorStore(t, tg, name) }
		})
	})
}

func openCursorStore(t *testing.T, tg kafkatest.Target, name string) *kafka.CursorStore {
	t.Helper()
	s, err := kafka.NewCursorStore(context.Background(), kafka.CursorStoreConfig{Client: tg.Kafka(t), Topic: name, ReplicationFactor: 1})
	require.NoError(t, err)
	return s
}

// TestCursorStoreCreatesACompactedTopic: a new cursor topic gets settings under which
// compaction runs on it while it is small (CursorTopicConfigs), and passes its own check.
func TestCursorStoreCreatesACompactedTopic(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		s := openCursorStore(t, tg, name)
		t.Cleanup(func() { s.Close() })
		want := map[string]string{
			"cleanup.policy":            "compact",
			"segment.ms":                "3600000",
			"segment.bytes":             "16777216",
			"min.cleanable.dirty.ratio": "0.1",
			"min.compaction.lag.ms":     "0",
		}
		require.Equal(t, want, kafka.CursorTopicConfigs())
		got, err := tg.Kafka(t).TopicConfigs(context.Background(), name)
		require.NoError(t, err)
		for k, v := range want {
			assert.Equal(t, v, got[k], k)
		}
		assert.Empty(t, kafka.TopicInfo{Configs: got}.CheckCursorTopic(name))
	})
}

// TestCursorStoreWarnsAboutAGrowingTopic: an existing cursor topic with the broker's defaults
// (an active segment of 7 days or 1 GiB, never compacted) is used, with a warning that says
// how to fix it.
func TestCursorStoreWarnsAboutAGrowingTopic(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		kafkatest.CreateTopic(t, tg, name, 1, map[string]string{"cleanup.policy": "compact", "segment.ms": "604800000", "segment.bytes": "1073741824"})
		var logs logtest.Buffer
		s, err := kafka.NewCursorStore(context.Background(), kafka.CursorStoreConfig{Client: tg.Kafka(t), Topic: name, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		out := logs.String()
		assert.Contains(t, out, "level=WARN")
		assert.Contains(t, out, "compaction never cleans an active segment")
		assert.Contains(t, out, "segment.ms=604800000")
		assert.Contains(t, out, "--entity-name "+name+" --add-config segment.ms=3600000,segment.bytes=16777216")
	})
}

func TestCheckCursorTopic(t *testing.T) {
	good := kafka.CursorTopicConfigs()
	with := func(kv ...string) map[string]string {
		m := maps.Clone(good)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name    string
		configs map[string]string
		warns   []string // a substring of each warning, in order
	}{
		{name: "as created", configs: good},
		{name: "nothing reported", configs: map[string]string{}},
		{name: "broker defaults", configs: with("segment.ms", "604800000", "segment.bytes", "1073741824", "min.cleanable.dirty.ratio", "0.5"),
			warns: []string{"active segment"}},
		{name: "rolls by time", configs: with("segment.bytes", "1073741824")},
		{name: "rolls by size", configs: with("segment.ms", "604800000")},
		{name: "a day and 64 MiB are still fine", configs: with("segment.ms", "86400000", "segment.bytes", "67108864")},
		{name: "compaction lag", configs: with("min.compaction.lag.ms", "86400000"), warns: []string{"min.compaction.lag.ms"}},
		{name: "dirty ratio", configs: with("min.cleanable.dirty.ratio", "0.9"), warns: []string{"min.cleanable.dirty.ratio"}},
		{name: "all three", configs: with("segment.ms", "604800000", "segment.bytes", "1073741824", "min.compaction.lag.ms", "86400000", "min.cleanable.dirty.ratio", "0.9"),
			warns: []string{"active segment", "min.compaction.lag.ms", "min.cleanable.dirty.ratio"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := kafka.TopicInfo{Configs: c.configs}.CheckCursorTopic("cursors")
			require.Len(t, got, len(c.warns))
			for i, w := range c.warns {
				assert.Contains(t, got[i].Msg, w)
				assert.Contains(t, fmt.Sprint(got[i].Attrs...), "--entity-name cursors --add-config")
			}
		})
	}
}

func TestCursorStoreRefusesATopicWithoutCompaction(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		kafkatest.CreateTopic(t, tg, name, 1, map[string]string{"cleanup.policy": "delete"})
		_, err := kafka.NewCursorStore(context.Background(), kafka.CursorStoreConfig{Client: tg.Kafka(t), Topic: name})
		require.ErrorIs(t, err, cursor.ErrNotCompacted)
		assert.Contains(t, err.Error(), name)
		assert.Contains(t, err.Error(), `cleanup.policy="delete"`)
	})
}

func TestCursorStoreRefusesACorruptCursor(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		kafkatest.CreateTopic(t, tg, name, 1, map[string]string{"cleanup.policy": "compact"})
		w := &kafkago.Writer{Addr: kafkago.TCP(tg.Brokers...), Topic: name, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, Transport: tg.Client(t).Transport}
		t.Cleanup(func() { w.Close() })
		require.NoError(t, w.WriteMessages(context.Background(),
			kafkago.Message{Key: []byte("other"), Value: []byte("not json, but not ours either")},
			kafkago.Message{Key: []byte("p"), Value: []byte(`{"last_updated_at": "yesterday"}`)}))
		_, err := openCursorStore(t, tg, name).Load(context.Background(), "p")
		require.ErrorIs(t, err, cursor.ErrCorrupt)
		assert.Contains(t, err.Error(), "offset 1")
		assert.Contains(t, err.Error(), `"yesterday"`)
	})
}

func TestCursorStoreReadsEveryPartition(t *testing.T) {
	// A cursor topic whose partitions were increased moves keys; the highest seq still wins.
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		kafkatest.CreateTopic(t, tg, name, 3, map[string]string{"cleanup.policy": "compact"})
		client := tg.Client(t)
		for part, seq := range []int64{5, 9, 2} {
			b, err := cursor.Marshal(cursor.Cursor{Pipeline: "p", LastUpdatedAt: time.Unix(seq, 0).UTC(), Seq: seq})
			require.NoError(t, err)
			w := &kafkago.Writer{Addr: kafkago.TCP(tg.Brokers...), Topic: name, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, Transport: client.Transport,
				Balancer: kafkago.BalancerFunc(func(kafkago.Message, ...int) int { return part })}
			require.NoError(t, w.WriteMessages(context.Background(), kafkago.Message{Key: []byte("p"), Value: b}))
			require.NoError(t, w.Close())
		}
		got, err := openCursorStore(t, tg, name).Load(context.Background(), "p")
		require.NoError(t, err)
		assert.Equal(t, int64(9), got.Seq)
	})
}

// TestCursorStoreUnreadableRecords: an unreadable cursor record is an error naming its offset
// unless a later record of the pipeline in the same partition supersedes it; the error carries
// the highest readable cursor, and every loaded cursor says where it was read.
func TestCursorStoreUnreadableRecords(t *testing.T) {
	good := func(seq int64) string {
		b, err := cursor.Marshal(cursor.Cursor{Pipeline: "p", LastUpdatedAt: time.Unix(1700000000+seq, 0).UTC(), Seq: seq})
		require.NoError(t, err)
		return string(b)
	}
	const tombstone = "<tombstone>"
	cases := []struct {
		name    string
		values  []string // of pipeline "p", in partition 0, in order
		corrupt string   // the error's offset and cause; "" when the cursor loads
		readSeq int64    // with corrupt: the highest readable seq (0: none); else the loaded seq
		readAt  int      // offset of the cursor loaded, or of the highest readable one
		none    bool     // the pipeline has no cursor
	}{
		{name: "only an unreadable record", values: []string{"not json"}, corrupt: "offset 0: corrupt cursor record: invalid character"},
		{name: "unreadable after a readable one", values: []string{good(5), `{"last_updated_at":"2024-01-01T00:00:00Z","seq":9223372036854775807}`},
			corrupt: "offset 1: corrupt cursor record: seq 9223372036854775807 is outside 0..2^53", readSeq: 5, readAt: 0},
		{name: "superseded by a later cursor", values: []string{good(5), "not json", good(6)}, readSeq: 6, readAt: 2},
		{name: "superseded by a later cursor of a lower seq", values: []string{good(5), "not json", good(1)}, readSeq: 5, readAt: 0},
		{name: "superseded by a tombstone", values: []string{good(5), "not json", tombstone}, none: true},
		{name: "the last of two unreadable ones is named", values: []string{"not json", good(2), "{"}, corrupt: "offset 2: corrupt cursor record: unexpected end of JSON input", readSeq: 2, readAt: 1},
	}
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				name := kafkatest.Topic(t, "cursors")
				kafkatest.CreateTopic(t, tg, name, 1, map[string]string{"cleanup.policy": "compact"})
				w := &kafkago.Writer{Addr: kafkago.TCP(tg.Brokers...), Topic: name, RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, Transport: tg.Client(t).Transport}
				t.Cleanup(func() { w.Close() })
				var msgs []kafkago.Message
				for _, v := range c.values {
					m := kafkago.Message{Key: []byte("p"), Value: []byte(v)}
					if v == tombstone {
						m.Value = nil
					}
					msgs = append(msgs, m)
				}
				require.NoError(t, w.WriteMessages(context.Background(), msgs...))
				got, err := openCursorStore(t, tg, name).Load(context.Background(), "p")
				readAt := fmt.Sprintf("%s/0 offset %d", name, c.readAt)
				if c.none {
					require.ErrorIs(t, err, cursor.ErrNotFound)
					return
				}
				if c.corrupt == "" {
					require.NoError(t, err)
					assert.Equal(t, c.readSeq, got.Seq)
					assert.Equal(t, readAt, got.ReadFrom)
					return
				}
				require.ErrorIs(t, err, cursor.ErrCorrupt)
				var ce *cursor.CorruptError
				require.ErrorAs(t, err, &ce)
				assert.Contains(t, err.Error(), name+"/0 "+c.corrupt)
				assert.Contains(t, err.Error(), "commit a new cursor over it", "the error says the way out")
				if c.readSeq == 0 {
					assert.Nil(t, ce.Readable)
					return
				}
				require.NotNil(t, ce.Readable)
				assert.Equal(t, c.readSeq, ce.Readable.Seq)
				assert.Equal(t, readAt, ce.Readable.ReadFrom)
			})
		}
	})
}
