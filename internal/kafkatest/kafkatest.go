// Package kafkatest gives tests a Kafka to talk to: kfake in-process, always, and the real
// broker named by KAFKA_BROKERS. With CI=true a missing KAFKA_BROKERS fails the test: CI must
// never pass by skipping the real broker.
package kafkatest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/kafka"
)

// Target is one Kafka a test runs against.
type Target struct {
	Name    string         // "kfake" or "real"
	Brokers []string       // bootstrap addresses
	Fake    *kfake.Cluster // nil for the real broker
}

// Kafka returns a client of package kafka for the target, closed at cleanup.
func (tg Target) Kafka(t testing.TB) *kafka.Client {
	return tg.KafkaConfig(t, kafka.Config{})
}

// KafkaConfig returns a client of package kafka for the target configured by cfg (its Brokers,
// and a ClientID and DialTimeout left empty, filled in), closed at cleanup.
func (tg Target) KafkaConfig(t testing.TB, cfg kafka.Config) *kafka.Client {
	cfg.Brokers = tg.Brokers
	if cfg.ClientID == "" {
		cfg.ClientID = "keysetsync-test"
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	c, err := kafka.NewClient(cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// Client returns a kafka-go client for the target with its own transport, closed at cleanup:
// for tests that need the protocol itself (raw writes, requests package kafka does not make).
func (tg Target) Client(t testing.TB) *kafkago.Client {
	tr := &kafkago.Transport{ClientID: "keysetsync-test", DialTimeout: 5 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &kafkago.Client{Addr: kafkago.TCP(tg.Brokers...), Transport: tr, Timeout: 30 * time.Second}
}

// Sink returns a Kafka data sink writing to the target in batches of batchRecords, to topics
// of the default max.message.bytes, closed at cleanup.
func (tg Target) Sink(t testing.TB, batchRecords int) *kafka.Sink {
	t.Helper()
	s, err := kafka.NewSink(kafka.SinkConfig{Client: tg.Kafka(t), BatchRecords: batchRecords})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// Run runs fn as a subtest against a fresh kfake cluster and, when configured, the real broker.
func Run(t *testing.T, fn func(t *testing.T, tg Target)) {
	t.Run("kfake", func(t *testing.T) { fn(t, NewFake(t)) })
	t.Run("real", func(t *testing.T) { fn(t, Real(t)) })
}

// NewFake starts an in-process kfake cluster, closed at cleanup.
func NewFake(t testing.TB, opts ...kfake.Opt) Target {
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return Target{Name: "kfake", Brokers: c.ListenAddrs(), Fake: c}
}

// Real returns the real broker of KAFKA_BROKERS. Without it the test is skipped, except under
// CI=true where it fails: CI runs the real broker and must not pass without it.
func Real(t testing.TB) Target {
	t.Helper()
	b := os.Getenv("KAFKA_BROKERS")
	if b == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("KAFKA_BROKERS is not set under CI: the real-broker tests must run (scripts/test.sh starts the broker)")
		}
		t.Skip("KAFKA_BROKERS not set: real-broker variant not run (scripts/test.sh starts a broker and sets it)")
	}
	return Target{Name: "real", Brokers: strings.Split(b, ",")}
}

// Topic returns a topic name unique to this test run, so tests never see each other's data on
// a shared real broker.
func Topic(t testing.TB, prefix string) string {
	name := strings.NewReplacer("/", "_", " ", "_", "#", "_").Replace(t.Name())
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	return fmt.Sprintf("%s-%s-%08x", prefix, name, rand.Uint32())
}

// CreateTopic creates name with the given partitions and configs.
func CreateTopic(t testing.TB, tg Target, name string, partitions int, configs map[string]string) {
	t.Helper()
	_, err := tg.Kafka(t).EnsureTopic(context.Background(), kafka.TopicSpec{Name: name, Partitions: partitions, ReplicationFactor: 1, Configs: configs})
	require.NoError(t, err)
}

// Message is one record read back from a topic.
type Message struct {
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte // nil for a tombstone
	Headers   map[string]string
}

// ReadAll reads every partition of name from the start up to the end offsets it sees first,
// as a read_committed consumer does (kafka.Client.Scan).
func ReadAll(t testing.TB, tg Target, name string) []Message {
	t.Helper()
	return read(t, tg, name, kafka.ScanOptions{})
}

// ReadUncommitted is ReadAll as a read_uncommitted consumer: aborted transactions' records
// and those of open ones too.
func ReadUncommitted(t testing.TB, tg Target, name string) []Message {
	t.Helper()
	return read(t, tg, name, kafka.ScanOptions{Uncommitted: true})
}

func read(t testing.TB, tg Target, name string, opts kafka.ScanOptions) []Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []Message
	err := tg.Kafka(t).ScanWith(ctx, name, opts, func(r kafka.Record) error {
		m := Message{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: map[string]string{}}
		for _, h := range r.Headers {
			m.Headers[h.Key] = string(h.Value)
		}
		out = append(out, m)
		return nil
	})
	require.NoError(t, err)
	return out
}

// Cursor loads the committed cursor of pipeline from cursorTopic, as a restarting keysetsync
// would (kafka.CursorStore: the highest seq wins); none committed fails the test.
func Cursor(t testing.TB, tg Target, cursorTopic, pipeline string) cursor.Cursor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := kafka.NewCursorStore(ctx, kafka.CursorStoreConfig{Client: tg.Kafka(t), Topic: cursorTopic})
	require.NoError(t, err)
	defer store.Close()
	c, err := store.Load(ctx, pipeline)
	require.NoError(t, err, "cursor of %q in %s", pipeline, cursorTopic)
	return c
}
