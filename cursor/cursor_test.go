package cursor_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/cursortest"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
)

func TestMemStoreConformance(t *testing.T) {
	cursortest.Run(t, func(t *testing.T) cursortest.Opener {
		s := cursor.NewMemStore()
		return func(t *testing.T) cursor.Store { return s }
	})
}

func TestKafkaStoreConformance(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		cursortest.Run(t, func(t *testing.T) cursortest.Opener {
			name := kafkatest.Topic(t, "cursors")
			return func(t *testing.T) cursor.Store { return openKafkaStore(t, tg, name) }
		})
	})
}

func openKafkaStore(t *testing.T, tg kafkatest.Target, name string) *cursor.KafkaStore {
	t.Helper()
	s, err := cursor.NewKafkaStore(context.Background(), cursor.KafkaConfig{Client: tg.Client(t), Topic: name, ReplicationFactor: 1})
	require.NoError(t, err)
	return s
}

func TestKafkaStoreCreatesACompactedTopic(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		s := openKafkaStore(t, tg, name)
		t.Cleanup(func() { s.Close() })
		res, err := tg.Client(t).DescribeConfigs(context.Background(), &kafka.DescribeConfigsRequest{
			Resources: []kafka.DescribeConfigRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: name, ConfigNames: []string{"cleanup.policy"}}}})
		require.NoError(t, err)
		require.Len(t, res.Resources, 1)
		var policy string
		for _, e := range res.Resources[0].ConfigEntries {
			if e.ConfigName == "cleanup.policy" {
				policy = e.ConfigValue
			}
		}
		assert.Equal(t, "compact", policy)
	})
}

func TestKafkaStoreRefusesATopicWithoutCompaction(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		kafkatest.CreateTopic(t, tg, name, 1, map[string]string{"cleanup.policy": "delete"})
		_, err := cursor.NewKafkaStore(context.Background(), cursor.KafkaConfig{Client: tg.Client(t), Topic: name})
		require.ErrorIs(t, err, cursor.ErrNotCompacted)
		assert.Contains(t, err.Error(), name)
		assert.Contains(t, err.Error(), `cleanup.policy="delete"`)
	})
}

func TestKafkaStoreRefusesACorruptCursor(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		kafkatest.CreateTopic(t, tg, name, 1, map[string]string{"cleanup.policy": "compact"})
		w := &kafka.Writer{Addr: kafka.TCP(tg.Brokers...), Topic: name, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: tg.Client(t).Transport}
		t.Cleanup(func() { w.Close() })
		require.NoError(t, w.WriteMessages(context.Background(),
			kafka.Message{Key: []byte("other"), Value: []byte("not json, but not ours either")},
			kafka.Message{Key: []byte("p"), Value: []byte(`{"last_updated_at": "yesterday"}`)}))
		_, err := openKafkaStore(t, tg, name).Load(context.Background(), "p")
		require.ErrorIs(t, err, cursor.ErrCorrupt)
		assert.Contains(t, err.Error(), "offset 1")
		assert.Contains(t, err.Error(), `"yesterday"`)
	})
}

func TestKafkaStoreReadsEveryPartition(t *testing.T) {
	// A cursor topic whose partitions were increased moves keys; the highest seq still wins.
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		name := kafkatest.Topic(t, "cursors")
		kafkatest.CreateTopic(t, tg, name, 3, map[string]string{"cleanup.policy": "compact"})
		client := tg.Client(t)
		for part, seq := range []int64{5, 9, 2} {
			b, err := cursor.Marshal(cursor.Cursor{Pipeline: "p", LastUpdatedAt: time.Unix(seq, 0).UTC(), Seq: seq})
			require.NoError(t, err)
			w := &kafka.Writer{Addr: kafka.TCP(tg.Brokers...), Topic: name, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: client.Transport,
				Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return part })}
			require.NoError(t, w.WriteMessages(context.Background(), kafka.Message{Key: []byte("p"), Value: b}))
			require.NoError(t, w.Close())
		}
		got, err := openKafkaStore(t, tg, name).Load(context.Background(), "p")
		require.NoError(t, err)
		assert.Equal(t, int64(9), got.Seq)
	})
}

func TestUnmarshal(t *testing.T) {
	cases := []struct {
		name, in string
		want     cursor.Cursor
		err      string
	}{
		{name: "fivetran example state", in: `{"last_updated_at": "2024-01-15T10:30:00Z"}`,
			want: cursor.Cursor{LastUpdatedAt: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)}},
		{name: "not json", in: `{`, err: "corrupt cursor record"},
		{name: "bad time", in: `{"last_updated_at": "2024-01-15 10:30:00"}`, err: `last_updated_at "2024-01-15 10:30:00"`},
		{name: "missing time", in: `{"version": 1}`, err: `last_updated_at ""`},
		{name: "future version", in: `{"version": 99, "last_updated_at": "2024-01-15T10:30:00Z"}`, err: "version 99 is newer"},
		{name: "largest seq", in: `{"last_updated_at": "2024-01-15T10:30:00Z", "seq": 9007199254740992}`,
			want: cursor.Cursor{LastUpdatedAt: time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC), Seq: cursor.MaxSeq}},
		{name: "seq beyond 2^53", in: `{"last_updated_at": "2024-01-15T10:30:00Z", "seq": 9007199254740993}`, err: "seq 9007199254740993 is outside 0..2^53"},
		{name: "seq that would wrap", in: `{"last_updated_at": "2024-01-15T10:30:00Z", "seq": 9223372036854775807}`, err: "seq 9223372036854775807 is outside 0..2^53"},
		{name: "negative seq", in: `{"last_updated_at": "2024-01-15T10:30:00Z", "seq": -1}`, err: "seq -1 is outside 0..2^53"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := cursor.Unmarshal([]byte(c.in))
			if c.err != "" {
				require.ErrorIs(t, err, cursor.ErrCorrupt)
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}

func TestMarshalMatchesGolden(t *testing.T) {
	c := cursor.Cursor{
		Pipeline:         "users",
		LastUpdatedAt:    time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC),
		Delivered:        map[string]string{"b-id": "00000000000000bb", "a-id": "00000000000000aa"},
		Lookback:         map[uint64]time.Time{cursor.Digest("late-id", time.Date(2024, 1, 15, 10, 29, 30, 0, time.UTC), "00000000000000cc"): time.Date(2024, 1, 15, 10, 29, 30, 0, time.UTC), 42: time.Date(2024, 1, 15, 10, 29, 30, 0, time.UTC), 7: time.Date(2024, 1, 15, 10, 29, 0, 0, time.UTC)},
		DeliveredPartial: true,
		LastID:           "b-id",
		TieSettled:       true,
		LookbackFrom:     time.Date(2024, 1, 15, 10, 29, 0, 0, time.UTC),
		Seq:              42,
		CommittedAt:      time.Date(2026, 11, 25, 22, 0, 0, 5000, time.UTC),
		Records:          12345,
	}
	got, err := cursor.Marshal(c)
	require.NoError(t, err)
	golden := filepath.Join("testdata", "cursor.golden.json")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		require.NoError(t, os.WriteFile(golden, append(got, '\n'), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, strings.TrimSpace(string(want)), string(got), "the cursor format is a public contract (README): a change must stay safe for older builds to read, or bump Version")
	back, err := cursor.Unmarshal(got)
	require.NoError(t, err)
	assert.Equal(t, c, back)
}

func TestMarshalRefusesASeqOutOfRange(t *testing.T) {
	for _, seq := range []int64{-1, cursor.MaxSeq + 1, math.MaxInt64} {
		_, err := cursor.Marshal(cursor.Cursor{Pipeline: "p", LastUpdatedAt: cursor.Start, Seq: seq})
		require.Error(t, err, "seq %d", seq)
		assert.Contains(t, err.Error(), fmt.Sprintf("seq %d is outside 0..2^53", seq))
	}
	_, err := cursor.Marshal(cursor.Cursor{Pipeline: "p", LastUpdatedAt: cursor.Start, Seq: cursor.MaxSeq})
	require.NoError(t, err)
}

// TestKafkaStoreUnreadableRecords: an unreadable cursor record is an error naming its offset
// unless a later record of the pipeline in the same partition supersedes it; the error carries
// the highest readable cursor, and every loaded cursor says where it was read.
func TestKafkaStoreUnreadableRecords(t *testing.T) {
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
				w := &kafka.Writer{Addr: kafka.TCP(tg.Brokers...), Topic: name, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: tg.Client(t).Transport}
				t.Cleanup(func() { w.Close() })
				var msgs []kafka.Message
				for _, v := range c.values {
					m := kafka.Message{Key: []byte("p"), Value: []byte(v)}
					if v == tombstone {
						m.Value = nil
					}
					msgs = append(msgs, m)
				}
				require.NoError(t, w.WriteMessages(context.Background(), msgs...))
				got, err := openKafkaStore(t, tg, name).Load(context.Background(), "p")
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
