package pipeline_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/source"
)

// watchedLog is a log destination that signals the first line containing want.
type watchedLog struct {
	want string
	seen chan string // buffered: gets the first line containing want

	mu    sync.Mutex
	lines []string
	sent  bool
}

func (l *watchedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := string(p)
	l.lines = append(l.lines, line)
	if !l.sent && strings.Contains(line, l.want) {
		l.seen <- line
		l.sent = true
	}
	return len(p), nil
}

// TestProgressReportsRateAndRemaining: during a long pass, a progress line says how far it got,
// at what rate, and, from the API's total, how many records remain and about how long that
// takes. The API holds its second page until that line was logged, so the test waits for the
// event, not for time.
func TestProgressReportsRateAndRemaining(t *testing.T) {
	log := &watchedLog{want: "records_remaining=1 ", seen: make(chan string, 1)}
	var progressLine string
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("scroll_param") == "" && r.URL.Query().Get("updated_since") == "0001-01-01T00:00:00Z" {
			fmt.Fprint(w, `{"data": [`+sourcetest.Rec("a", "2024-01-01T00:00:01Z")+`,`+sourcetest.Rec("b", "2024-01-01T00:00:02Z")+`], "scroll_param": "t", "total": 3}`)
			return
		}
		select {
		case progressLine = <-log.seen:
		case <-time.After(30 * time.Second):
			t.Error("no progress line with records_remaining=1 within 30s")
		}
		fmt.Fprint(w, `{"data": [`+sourcetest.Rec("c", "2024-01-01T00:00:03Z")+`], "scroll_param": null, "total": 1}`)
	})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	contract := source.DefaultContract()
	contract.TotalPath = source.Path{"total"}
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL, Contract: contract, MaxAttempts: 1})
	require.NoError(t, err)
	tg := kafkatest.NewFake(t)
	topic := kafkatest.Topic(t, "users")
	kafkatest.CreateTopic(t, tg, topic, 1, nil)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	s, err := pipeline.New(pipeline.Config{Pipeline: "p", Source: src, Store: cursor.NewMemStore(), Codec: codec, Topic: topic,
		Sink: tg.Sink(t, 100), ProgressInterval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(log, nil))})
	require.NoError(t, err)

	stats, err := s.Pass(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 3, stats.Produced)
	require.NotEmpty(t, progressLine)
	for _, want := range []string{`msg=progress`, "pages=1 ", "records_fetched=2 ", "records_remaining=1 ", "records_per_s=", "fetched_per_s=", "cursor="} {
		assert.Contains(t, progressLine, want)
	}
	// The estimate comes from the fetch rate of the interval, which fetched the first page.
	assert.Regexp(t, ` eta=\S+`, progressLine)
}
