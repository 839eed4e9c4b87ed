package pipeline_test

import (
	"context"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// weakSink acknowledges every batch at once and keeps only weak pointers to the values it was
// sent: what stays reachable after the pass is held by the pipeline, not by the test.
type weakSink struct {
	mu     sync.Mutex
	values []weak.Pointer[byte]
}

func (s *weakSink) Send(_ context.Context, msgs []sink.Message, done func(error)) {
	s.mu.Lock()
	for i := range msgs {
		if len(msgs[i].Value) > 0 {
			s.values = append(s.values, weak.Make(&msgs[i].Value[0]))
		}
	}
	s.mu.Unlock()
	done(nil)
}
func (s *weakSink) Reset(context.Context) error { return nil }
func (s *weakSink) Close() error                { return nil }

// An idle pipeline holds none of the records of its last pass: with a thousand pipelines in
// one process, a pipeline that kept its largest batch (its messages, their values) between
// passes would cost that batch's memory for each of them, for good (issue 12).
func TestAnIdlePipelineHoldsNoneOfItsLastBatch(t *testing.T) {
	api, err := playground.New(playground.Config{Records: 3000, PageSize: 500})
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL + "/pagination/keyset", MaxAttempts: 1})
	require.NoError(t, err)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	out := &weakSink{}
	s, err := pipeline.New(pipeline.Config{Pipeline: "p", Source: src, Topic: "users", Store: cursor.NewMemStore(), Codec: codec,
		Sink: out, BatchRecords: 1000})
	require.NoError(t, err)

	stats, err := s.Pass(t.Context())
	require.NoError(t, err)
	require.Equal(t, 3000, stats.Produced)
	runtime.GC()
	runtime.GC() // a second cycle: whatever the first found unreachable is freed
	alive := 0
	out.mu.Lock()
	for _, p := range out.values {
		if p.Value() != nil {
			alive++
		}
	}
	n := len(out.values)
	out.mu.Unlock()
	assert.Equal(t, 3000, n)
	assert.Zero(t, alive, "%d of the %d values sent are still reachable after the pass", alive, n)
	runtime.KeepAlive(s)
}
