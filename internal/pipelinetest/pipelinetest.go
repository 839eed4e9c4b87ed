// Package pipelinetest wires a whole pipeline for tests: a playground API served in-process, a
// Kafka target (kfake or the real broker), a Pipeline, and the comparison users rely on: the
// topic's latest value per id equals the API's current state.
package pipelinetest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// Env is a Pipeline over a playground and a Kafka target, with fresh topics.
type Env struct {
	Target      kafkatest.Target
	API         *playground.Server
	URL         string
	Topic       string
	CursorTopic string
	DLQTopic    string // set with Options.DLQ
	Name        string
	Codec       *avro.Codec
	Store       *kafka.CursorStore
	Pipeline    *pipeline.Pipeline
}

// Options tune New.
type Options struct {
	Playground   playground.Config
	BatchRecords int
	Partitions   int
	Logger       *slog.Logger
	Walk         source.WalkOptions
	DLQ          bool // route invalid records to a dead-letter topic instead of failing
	MaxInFlight  int  // batches in flight (0: the pipeline's default)
	// Handler, if set, wraps the playground's HTTP handler: a test's faults in the answers.
	Handler func(http.Handler) http.Handler
	// ExactlyOnce writes with a kafka.TxnSink (transactional id "keysetsync-" and the data
	// topic) and commits each cursor in its batch's transaction (Config.ExactlyOnce).
	ExactlyOnce bool
	// SinkTransport, if set, wraps the transport of the transactional sink's client: a test's
	// faults in its requests (ExactlyOnce only).
	SinkTransport func(kafkago.RoundTripper) kafkago.RoundTripper
	// StoreDial, if set, is the Dial of the cursor store's transport (e.g. a
	// kafkatest.Breaker's): a test's faults on the cursor store's connections.
	StoreDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// FetchConcurrency and BackfillMargin are the pipeline's (parallel backfill).
	FetchConcurrency int
	BackfillMargin   time.Duration
	BackfillMinWait  float64
	// Observer is the pipeline's (nil: none).
	Observer pipeline.Observer
}

// New starts the playground in-process and builds a Pipeline writing to fresh topics of tg.
func New(t *testing.T, tg kafkatest.Target, o Options) *Env {
	t.Helper()
	api, err := playground.New(o.Playground)
	require.NoError(t, err)
	var h http.Handler = api.Handler()
	if o.Handler != nil {
		h = o.Handler(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	p := &Env{
		Target: tg, API: api, URL: srv.URL + "/pagination/keyset",
		Topic: kafkatest.Topic(t, "users"), CursorTopic: kafkatest.Topic(t, "cursors"), Name: "test",
	}
	kc := tg.Kafka(t)
	_, err = kc.EnsureTopic(t.Context(), kafka.TopicSpec{Name: p.Topic, Partitions: max(o.Partitions, 1), ReplicationFactor: 1})
	require.NoError(t, err)
	storeClient := kc
	if o.StoreDial != nil {
		storeClient = tg.KafkaConfig(t, kafka.Config{Dial: o.StoreDial})
	}
	p.Store, err = kafka.NewCursorStore(t.Context(), kafka.CursorStoreConfig{Client: storeClient, Topic: p.CursorTopic, ReplicationFactor: 1})
	require.NoError(t, err)
	t.Cleanup(func() { p.Store.Close() })
	p.Codec, err = avro.NewCodec()
	require.NoError(t, err)
	src, err := source.NewSource(source.SourceConfig{URL: p.URL, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond, Logger: o.Logger})
	require.NoError(t, err)
	if o.DLQ {
		p.DLQTopic = kafkatest.Topic(t, "dlq")
		_, err = kc.EnsureTopic(t.Context(), kafka.TopicSpec{Name: p.DLQTopic, Partitions: 1, ReplicationFactor: 1})
		require.NoError(t, err)
	}
	var sk sink.Sink
	if o.ExactlyOnce {
		// Before any cursor load, as a process must: starting it fences the previous producer
		// and aborts its open transaction, which would hold read_committed readers back.
		ts, err := kafka.NewTxnSink(t.Context(), kafka.TxnConfig{Client: tg.KafkaConfig(t, kafka.Config{WrapTransport: o.SinkTransport}),
			TransactionalID: "keysetsync-" + p.Topic, Logger: o.Logger})
		require.NoError(t, err)
		t.Cleanup(func() { ts.Close() })
		sk = ts
	} else {
		sk = tg.Sink(t, o.BatchRecords)
	}
	p.Pipeline, err = pipeline.New(pipeline.Config{Pipeline: p.Name, Source: src, Topic: p.Topic, DLQTopic: p.DLQTopic, Walk: o.Walk,
		Store: p.Store, Codec: p.Codec, BatchRecords: o.BatchRecords, MaxInFlight: o.MaxInFlight, Logger: o.Logger,
		Sink: sk, ExactlyOnce: o.ExactlyOnce, FetchConcurrency: o.FetchConcurrency, BackfillMargin: o.BackfillMargin, BackfillMinWait: o.BackfillMinWait, Observer: o.Observer})
	require.NoError(t, err)
	return p
}

// Latest reads the whole data topic and returns the last value per key, decoded, and the
// number of messages read.
func (p *Env) Latest(t *testing.T) (map[string]avro.User, int) {
	t.Helper()
	msgs := kafkatest.ReadAll(t, p.Target, p.Topic)
	out := map[string]avro.User{}
	for _, m := range msgs {
		u, err := p.Codec.Decode(m.Value)
		require.NoError(t, err, "offset %d", m.Offset)
		require.Equal(t, string(m.Key), u.ID, "the key is the id")
		out[u.ID] = u
	}
	return out, len(msgs)
}

// Expected is the API's current state in the form the topic should hold it.
func (p *Env) Expected(t *testing.T) map[string]avro.User {
	t.Helper()
	return ToAvro(t, p.API.Snapshot())
}

// ToAvro converts playground users through their JSON, as the pipeline sees them.
func ToAvro(t *testing.T, users []playground.User) map[string]avro.User {
	t.Helper()
	out := make(map[string]avro.User, len(users))
	for i, u := range users {
		b, err := json.Marshal(u)
		require.NoError(t, err)
		a, err := source.DecodeUser(b, 0, i)
		require.NoError(t, err)
		out[a.ID] = a
	}
	return out
}

// RequireInSync fails unless the topic's latest value per id equals the API's state.
func (p *Env) RequireInSync(t *testing.T) {
	t.Helper()
	got, _ := p.Latest(t)
	want := p.Expected(t)
	var missing, stale []string
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			missing = append(missing, id)
		case !equalUser(g, w):
			stale = append(stale, id)
		}
	}
	require.Empty(t, missing, "ids of the API missing from the topic (%d of %d)", len(missing), len(want))
	require.Empty(t, stale, "ids whose latest value in the topic differs from the API")
	require.Len(t, got, len(want), "ids in the topic that the API does not have")
}

func equalUser(a, b avro.User) bool {
	eqS := func(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	eqT := func(x, y *time.Time) bool { return (x == nil) == (y == nil) && (x == nil || x.Equal(*y)) }
	return a.ID == b.ID && eqS(a.Name, b.Name) && eqS(a.Email, b.Email) && eqS(a.Address, b.Address) &&
		eqS(a.Company, b.Company) && eqS(a.Job, b.Job) && eqT(a.CreatedAt, b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt)
}

// MaxUpdatedAt is the greatest updatedAt of the API's records.
func (p *Env) MaxUpdatedAt(t *testing.T) time.Time {
	var m time.Time
	for _, u := range p.Expected(t) {
		if u.UpdatedAt.After(m) {
			m = u.UpdatedAt
		}
	}
	return m
}
