package pipeline_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/pipelinetest"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/source"
)

func TestInvalidRecordsGoToTheDeadLetterTopic(t *testing.T) {
	pages := []sourcetest.Answer{
		sourcetest.Page("t1", sourcetest.Rec("a", "2024-01-01T00:00:01Z"), `{"id":"b","updatedAt":"yesterday"}`, sourcetest.Rec("c", "2024-01-01T00:00:02Z")),
		sourcetest.Page("", sourcetest.Rec("c", "2024-01-01T00:00:02Z"), `{"name":"no id"}`, sourcetest.Rec("d", "2024-01-01T00:00:03Z")),
	}
	sp := newScriptedPipeline(t, pages, scriptedOptions{dlq: true})
	st, err := sp.pipeline.Pass(t.Context())
	require.NoError(t, err, "with a dead-letter topic the pass goes on")
	assert.Equal(t, 3, st.Produced-st.Invalid)
	assert.Equal(t, 2, st.Invalid)

	data := kafkatest.ReadAll(t, sp.tg, sp.topic)
	var ids []string
	for _, m := range data {
		ids = append(ids, string(m.Key))
	}
	assert.Equal(t, []string{"a", "c", "d"}, ids)

	dead := kafkatest.ReadAll(t, sp.tg, sp.dlq)
	require.Len(t, dead, 2, "nothing is dropped without a trace")
	assert.Equal(t, "b", string(dead[0].Key))
	assert.Equal(t, `{"id":"b","updatedAt":"yesterday"}`, string(dead[0].Value), "the original JSON, untouched")
	assert.Equal(t, "updatedAt", dead[0].Headers[pipeline.HeaderField])
	assert.Contains(t, dead[0].Headers[pipeline.HeaderError], `page 1, record 1 (id "b"), field updatedAt: "yesterday" is not a UTC time`)
	assert.Equal(t, "1", dead[0].Headers[pipeline.HeaderPage])
	assert.Equal(t, "1", dead[0].Headers[pipeline.HeaderIndex])
	assert.Contains(t, dead[0].Headers[pipeline.HeaderURL], "updated_since=0001-01-01T00%3A00%3A00Z")
	assert.Equal(t, "p", dead[0].Headers[pipeline.HeaderPipeline])
	_, err = time.Parse(time.RFC3339Nano, dead[0].Headers[pipeline.HeaderFailedAt])
	assert.NoError(t, err)
	assert.Nil(t, dead[1].Key, "a record without id has no key")
	assert.Equal(t, "id", dead[1].Headers[pipeline.HeaderField])
	assert.Equal(t, "2", dead[1].Headers[pipeline.HeaderPage])

	c, err := sp.store.Load(t.Context(), "p")
	require.NoError(t, err)
	assert.Equal(t, "2024-01-01T00:00:03Z", c.LastUpdatedAt.Format(cursor.TimeLayout), "the cursor moves past dead letters once they are acknowledged")
}

func TestRecordLimits(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		recs []string
		walk source.WalkOptions
		msg  string
	}{
		{"updatedAt far in the future", []string{sourcetest.Rec("a", "2024-12-31T00:00:00Z"), sourcetest.Rec("b", "2025-01-03T00:00:00Z")},
			source.WalkOptions{Now: func() time.Time { return now }},
			`page 1, record 1 (id "b"), field updatedAt: 2025-01-03T00:00:00Z is more than 24h0m0s in the future`},
		{"oversized record", []string{sourcetest.Rec("a", "2024-12-31T00:00:00Z"), `{"id":"big","updatedAt":"2024-12-31T00:00:01Z","address":"` + strings.Repeat("x", 3000) + `"}`},
			source.WalkOptions{MaxRecordBytes: 2000, Now: func() time.Time { return now }},
			`page 1, record 1 (id "big"): its Avro value is 30`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sp := newScriptedPipeline(t, []sourcetest.Answer{sourcetest.Page("", c.recs...)}, scriptedOptions{walk: c.walk})
			_, err := sp.pipeline.Pass(t.Context())
			require.ErrorIs(t, err, source.ErrInvalidRecord)
			assert.Contains(t, err.Error(), c.msg)
			cur, err := sp.store.Load(t.Context(), "p")
			require.NoError(t, err)
			assert.Equal(t, "2024-12-31T00:00:00Z", cur.LastUpdatedAt.Format(cursor.TimeLayout), "the cursor stops just before the bad record")
		})
	}
}

func TestLookbackDeliversLateRecordsOnce(t *testing.T) {
	pages := []sourcetest.Answer{
		// Pass 1: up to :10.
		sourcetest.Page("", sourcetest.Rec("a", "2024-01-01T00:00:05Z"), sourcetest.Rec("b", "2024-01-01T00:00:10Z")),
		// Pass 2 asks from :10 - 30s: a is unchanged, "late" was committed late at :07, b unchanged.
		sourcetest.Page("", sourcetest.Rec("a", "2024-01-01T00:00:05Z"), sourcetest.Rec("late", "2024-01-01T00:00:07Z"), sourcetest.Rec("b", "2024-01-01T00:00:10Z")),
		// Pass 3: the same window again: nothing new.
		sourcetest.Page("", sourcetest.Rec("a", "2024-01-01T00:00:05Z"), sourcetest.Rec("late", "2024-01-01T00:00:07Z"), sourcetest.Rec("b", "2024-01-01T00:00:10Z")),
	}
	sp := newScriptedPipeline(t, pages, scriptedOptions{walk: source.WalkOptions{Lookback: 30 * time.Second}})
	var produced, late []int
	for range 3 {
		st, err := sp.pipeline.Pass(t.Context())
		require.NoError(t, err)
		produced, late = append(produced, st.Produced), append(late, st.Late)
	}
	assert.Equal(t, []int{2, 1, 0}, produced)
	assert.Equal(t, []int{0, 1, 0}, late)
	assert.Equal(t, []string{
		"updated_since=0001-01-01T00%3A00%3A00Z",
		"updated_since=2023-12-31T23%3A59%3A40Z", // pass 2 re-reads 30 s behind the cursor :10
		"updated_since=2023-12-31T23%3A59%3A40Z",
	}, sp.api.Requests())
	c, err := sp.store.Load(t.Context(), "p")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"b": c.Delivered["b"]}, c.Delivered)
	assert.Len(t, c.Lookback, 2, "the window holds the late record and a")
}

func TestLookbackCatchesLateCommitsOfThePlayground(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name     string
		lookback time.Duration
		inSync   bool
	}{
		{"without lookback the late update is missed", 0, false},
		{"a lookback wider than the delay delivers it", time.Minute, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := pipelinetest.New(t, kafkatest.NewFake(t), pipelinetest.Options{
				Playground: playground.Config{Records: 400, PageSize: 50, TieWidth: 3, Seed: 8, Clock: func() time.Time { return now }},
				Walk:       source.WalkOptions{Lookback: c.lookback, Now: func() time.Time { return now }},
			})
			p.API.Update(10) // records at "now", so the cursor is at now
			_, err := p.Pipeline.Pass(t.Context())
			require.NoError(t, err)
			late, err := p.API.UpdateLate(30*time.Second, p.API.Snapshot()[0].ID)
			require.NoError(t, err)
			st, err := p.Pipeline.Pass(t.Context())
			require.NoError(t, err)
			if !c.inSync {
				assert.Zero(t, st.Produced, "a plain keyset walk cannot see a record committed behind its cursor")
				return
			}
			assert.Equal(t, 1, st.Produced)
			assert.Equal(t, 1, st.Late)
			p.RequireInSync(t)
			got, _ := p.Latest(t)
			assert.Equal(t, late[0].UpdatedAt, got[late[0].ID].UpdatedAt.Format(cursor.TimeLayout))
			st, err = p.Pipeline.Pass(t.Context())
			require.NoError(t, err)
			assert.Zero(t, st.Produced, "the window is re-read but nothing is sent twice")
		})
	}
}

func TestLookbackWindowOfManyPagesIsNotAStall(t *testing.T) {
	// The window behind the cursor holds several pages that were all delivered: re-reading them
	// sends nothing and does not move the cursor, but it is progress, not a loop.
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	p := pipelinetest.New(t, kafkatest.NewFake(t), pipelinetest.Options{
		Playground: playground.Config{Records: 1000, PageSize: 50, TieWidth: 40, Seed: 3, Clock: func() time.Time { return now }},
		Walk:       source.WalkOptions{Lookback: time.Minute, Now: func() time.Time { return now }},
	})
	_, err := p.Pipeline.Pass(t.Context())
	require.NoError(t, err)
	st, err := p.Pipeline.Pass(t.Context())
	require.NoError(t, err)
	assert.Zero(t, st.Produced)
	assert.Greater(t, st.Pages, 3, "the window spans more pages than the stall limit")
}
