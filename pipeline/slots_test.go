package pipeline_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/schedule"
	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// TestABatchInFlightCountsAgainstTheSlots: a pass whose batch awaits Kafka's acknowledgement
// keeps its slot while it waits on its API for the next page, so that the passes holding batches
// are never more than the slots (with a thousand pipelines, a batch each was most of the heap);
// once the batch is acknowledged, the slot goes to the next pass while the first still waits on
// its API.
func TestABatchInFlightCountsAgainstTheSlots(t *testing.T) {
	api, err := playground.New(playground.Config{Records: 200, PageSize: 100, Seed: 1})
	require.NoError(t, err)
	var requests atomic.Int32
	asked := make(chan struct{})  // the request for page 2 arrived: the pass waits on its API
	answer := make(chan struct{}) // page 2 may be answered
	h := api.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 2 {
			close(asked)
			<-answer
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	var answered sync.Once
	answerPage2 := func() { answered.Do(func() { close(answer) }) }
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL + playground.KeysetPath})
	require.NoError(t, err)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	sent := make(chan *sink.MemBatch, 2)
	mem := sink.NewMem(func(b *sink.MemBatch) { sent <- b })
	t.Cleanup(func() { mem.Close() })
	p, err := pipeline.New(pipeline.Config{Pipeline: "p", Source: src, Topic: ptTopic, Store: cursor.NewMemStore(), Codec: codec, Sink: mem,
		BatchRecords: 100, MaxInFlight: 2})
	require.NoError(t, err)

	l := schedule.NewLimiter(1)
	ctx, slot, err := l.Hold(t.Context(), nil)
	require.NoError(t, err)
	passed := make(chan error, 1)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		defer slot.Release()
		_, err := p.Pass(ctx)
		passed <- err
	}()
	got := make(chan *schedule.Slot, 1)
	var first *sink.MemBatch // batch 1, until acknowledged
	// A failed assertion leaves the pass waiting on page 2, a batch or a slot: answer them all,
	// before the Mem's cleanup waits for its batches.
	t.Cleanup(func() {
		answerPage2()
		if first != nil {
			first.Ack()
		}
		for {
			select {
			case b := <-sent:
				b.Ack()
			case s := <-got:
				s.Release()
			case <-ended:
				return
			}
		}
	})
	first = <-sent // batch 1 awaits its acknowledgement
	<-asked        // and the pass waits on its API for page 2
	go func() {
		_, s, err := l.Hold(t.Context(), nil)
		if assert.NoError(t, err) {
			got <- s
		}
	}()
	require.Eventually(t, func() bool { return l.Waiting() == 1 }, 10*time.Second, time.Millisecond,
		"another pass got the slot while the first had a batch in flight")
	first.Ack()
	first = nil
	var other *schedule.Slot
	select {
	case other = <-got: // the batch is acknowledged: the pass waiting on its API gives its slot away
	case <-time.After(10 * time.Second):
		t.Fatal("the slot stayed with a pass waiting on its API after its batch was acknowledged")
	}
	answerPage2()
	other.Release()
	(<-sent).Ack()
	require.NoError(t, <-passed)
	assert.Len(t, mem.Written(ptTopic), 200)
}
