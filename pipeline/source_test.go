package pipeline_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/source"
)

func badPipeline(t *testing.T, pages []sourcetest.Answer) (error, cursor.Cursor, error, []string) {
	sp := newScriptedPipeline(t, pages, scriptedOptions{})
	_, syncErr := sp.pipeline.Pass(t.Context())
	c, loadErr := sp.store.Load(t.Context(), "p")
	return syncErr, c, loadErr, sp.api.Requests()
}

type scriptedOptions struct {
	dlq  bool
	walk source.WalkOptions
}

// scriptedPipeline is a Pipeline over a scripted API, writing to kfake.
type scriptedPipeline struct {
	api        *sourcetest.Scripted
	tg         kafkatest.Target
	topic, dlq string
	store      *cursor.MemStore
	pipeline   *pipeline.Pipeline
}

func newScriptedPipeline(t *testing.T, pages []sourcetest.Answer, o scriptedOptions) *scriptedPipeline {
	sp := &scriptedPipeline{api: &sourcetest.Scripted{Answers: pages}, tg: kafkatest.NewFake(t), store: cursor.NewMemStore()}
	src := sourcetest.NewSource(t, sp.api, 1)
	sp.topic = kafkatest.Topic(t, "users")
	kafkatest.CreateTopic(t, sp.tg, sp.topic, 1, nil)
	if o.dlq {
		sp.dlq = kafkatest.Topic(t, "dlq")
		kafkatest.CreateTopic(t, sp.tg, sp.dlq, 1, nil)
	}
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	sp.pipeline, err = pipeline.New(pipeline.Config{Pipeline: "p", Source: src, Store: sp.store, Codec: codec, Topic: sp.topic, DLQTopic: sp.dlq, Walk: o.walk,
		Sink: sp.tg.Sink(t, 100)})
	require.NoError(t, err)
	return sp
}

func TestBadInputStopsTheCursorBeforeIt(t *testing.T) {
	cases := []struct {
		name       string
		pages      []sourcetest.Answer
		msg        []string
		wantCursor string // "" means no cursor committed
		wantIDs    []string
	}{
		{
			name: "record without updatedAt on page 2",
			pages: []sourcetest.Answer{
				sourcetest.Page("t1", sourcetest.Rec("a", "2024-01-01T00:00:01Z"), sourcetest.Rec("b", "2024-01-01T00:00:02Z")),
				sourcetest.Page("", sourcetest.Rec("c", "2024-01-01T00:00:03Z"), `{"id":"d"}`, sourcetest.Rec("e", "2024-01-01T00:00:05Z")),
			},
			msg:        []string{"page 2, record 1", `(id "d")`, "field updatedAt", "missing"},
			wantCursor: "2024-01-01T00:00:03Z", wantIDs: []string{"c"},
		},
		{
			name:  "records out of updatedAt order",
			pages: []sourcetest.Answer{sourcetest.Page("", sourcetest.Rec("a", "2024-01-01T00:00:05Z"), sourcetest.Rec("b", "2024-01-01T00:00:04Z"))},
			msg:   []string{"page 1, record 1", `(id "b")`, "field updatedAt", "before the previous record"}, wantCursor: "2024-01-01T00:00:05Z", wantIDs: []string{"a"},
		},
		{
			name: "a page older than the cursor",
			pages: []sourcetest.Answer{
				sourcetest.Page("t1", sourcetest.Rec("a", "2024-01-01T00:00:05Z"), sourcetest.Rec("b", "2024-01-01T00:00:06Z")),
				sourcetest.Page("", sourcetest.Rec("c", "2024-01-01T00:00:01Z")),
			},
			msg: []string{"page 2, record 0", `(id "c")`, "older than the cursor 2024-01-01T00:00:06Z"}, wantCursor: "2024-01-01T00:00:06Z", wantIDs: []string{"b"},
		},
		{
			name:  "malformed JSON on the first page",
			pages: []sourcetest.Answer{{Status: 200, Body: `{"data": [`}},
			msg:   []string{"invalid page 1", "updated_since=0001-01-01T00%3A00%3A00Z", "unexpected end of JSON input"},
		},
		{
			name: "a scroll_param that loops",
			pages: []sourcetest.Answer{
				sourcetest.Page("t1", sourcetest.Rec("a", "2024-01-01T00:00:05Z"), sourcetest.Rec("b", "2024-01-01T00:00:05Z")),
				sourcetest.Page("t1", sourcetest.Rec("a", "2024-01-01T00:00:05Z"), sourcetest.Rec("b", "2024-01-01T00:00:05Z")),
			},
			msg: []string{"makes no progress", "did not move past 2024-01-01T00:00:05Z"}, wantCursor: "2024-01-01T00:00:05Z", wantIDs: []string{"a", "b"},
		},
		{
			name: "a wrong type on page 2",
			pages: []sourcetest.Answer{
				sourcetest.Page("t1", sourcetest.Rec("a", "2024-01-01T00:00:01Z")),
				sourcetest.Page("", sourcetest.Rec("b", "2024-01-01T00:00:02Z"), `{"id":"c","name":["x"],"updatedAt":"2024-01-01T00:00:03Z"}`),
			},
			msg:        []string{"page 2, record 1", `(id "c")`, "field name", "got JSON array, want string"},
			wantCursor: "2024-01-01T00:00:02Z", wantIDs: []string{"b"},
		},
		{
			name:       "a time that is not UTC",
			pages:      []sourcetest.Answer{sourcetest.Page("", sourcetest.Rec("a", "2024-01-01T00:00:01Z"), sourcetest.Rec("b", "2024-01-01T02:00:00+02:00"))},
			msg:        []string{"page 1, record 1", `(id "b")`, "field updatedAt", "not a UTC time"},
			wantCursor: "2024-01-01T00:00:01Z", wantIDs: []string{"a"},
		},
		{
			name:       "a record without id",
			pages:      []sourcetest.Answer{sourcetest.Page("", sourcetest.Rec("a", "2024-01-01T00:00:01Z"), `{"updatedAt":"2024-01-01T00:00:02Z"}`)},
			msg:        []string{"page 1, record 1", "field id", "missing or null"},
			wantCursor: "2024-01-01T00:00:01Z", wantIDs: []string{"a"},
		},
		{
			name: "a body that is not the contract's shape on page 2",
			pages: []sourcetest.Answer{
				sourcetest.Page("t1", sourcetest.Rec("a", "2024-01-01T00:00:01Z")),
				{Status: 200, Body: `{"items":[{"id":"b"}],"next":"x"}`},
			},
			msg:        []string{"invalid page 2", `no "data" array`},
			wantCursor: "2024-01-01T00:00:01Z", wantIDs: []string{"a"},
		},
		{
			name: "an endless pass running into the future",
			pages: []sourcetest.Answer{
				sourcetest.Page("t1", sourcetest.Rec("a", "2024-01-01T00:00:01Z")),
				sourcetest.Page("t2", sourcetest.Rec("b", "2024-06-01T00:00:00Z")),
				sourcetest.Page("t3", sourcetest.Rec("c", "2999-01-01T00:00:00Z")),
			},
			msg:        []string{"page 3, record 0", `(id "c")`, "2999-01-01T00:00:00Z is more than 24h0m0s in the future"},
			wantCursor: "2024-06-01T00:00:00Z", wantIDs: []string{"b"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err, cur, loadErr, _ := badPipeline(t, c.pages)
			require.Error(t, err)
			for _, m := range c.msg {
				assert.Contains(t, err.Error(), m)
			}
			assert.False(t, retry.IsRetryable(err), "bad input does not heal by retrying: %v", err)
			if c.wantCursor == "" {
				require.ErrorIs(t, loadErr, cursor.ErrNotFound)
				return
			}
			require.NoError(t, loadErr)
			assert.Equal(t, c.wantCursor, cur.LastUpdatedAt.Format(cursor.TimeLayout))
			var ids []string
			for id := range cur.Delivered {
				ids = append(ids, id)
			}
			assert.ElementsMatch(t, c.wantIDs, ids, "ids delivered at the cursor's second")
		})
	}
}
