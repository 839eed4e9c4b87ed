package cursor_test

import (
	"context"
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
