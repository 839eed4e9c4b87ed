package pipeline_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/source"
)

// del is a record carrying deletedAt (JSON text: "null", "true", a quoted time...).
func del(id, updated, deletedAt string) string {
	return fmt.Sprintf(`{"id":%q,"name":"n","updatedAt":%q,"deletedAt":%s}`, id, updated, deletedAt)
}

// sent is a message as the tests compare it: key, whether it is a tombstone, updated_at header.
type sent struct {
	key       string
	tombstone bool
	updatedAt string
}

func sentMessages(t *testing.T, sp *scriptedPipeline) []sent {
	var out []sent
	for _, m := range kafkatest.ReadAll(t, sp.tg, sp.topic) {
		assert.Equal(t, "p", m.Headers[pipeline.HeaderPipeline], "a tombstone carries the lineage headers too")
		assert.NotEmpty(t, m.Headers[pipeline.HeaderSource])
		out = append(out, sent{key: string(m.Key), tombstone: m.Value == nil, updatedAt: m.Headers[pipeline.HeaderUpdatedAt]})
	}
	return out
}

func TestDeletedRecordsBecomeTombstones(t *testing.T) {
	const t1, t2, t3 = "2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z", "2024-01-01T00:00:03Z"
	pages := []sourcetest.Answer{
		// pass 1: a plain record, a deleted one (a deletion time), two live ones (null, "").
		sourcetest.Page("", sourcetest.Rec("a", t1), del("b", t2, `"`+t2+`"`), del("c", t2, "null"), del("e", t2, `""`)),
		// pass 2: asked again from t2, b and c come back unchanged (skipped); b was undeleted
		// at t3 and a deleted at t3 (boolean true).
		sourcetest.Page("", del("b", t2, `"`+t2+`"`), del("c", t2, "null"), del("e", t2, `""`), del("b", t3, "false"), del("a", t3, "true")),
		// pass 3: a undeleted again within the same second: another fingerprint, delivered.
		sourcetest.Page("", del("b", t3, "false"), del("a", t3, "false")),
	}
	sp := newScriptedPipeline(t, pages, scriptedOptions{walk: source.WalkOptions{DeletedField: source.Path{"deletedAt"}}})

	st, err := sp.pipeline.Pass(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, st.Deleted)
	assert.Equal(t, []sent{{"a", false, t1}, {"b", true, t2}, {"c", false, t2}, {"e", false, t2}}, sentMessages(t, sp))

	st, err = sp.pipeline.Pass(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 3, st.Skipped, "a delete already sent is skipped like any record")
	assert.Equal(t, 1, st.Deleted)
	c, err := sp.store.Load(t.Context(), "p")
	require.NoError(t, err)
	assert.Equal(t, t3, c.LastUpdatedAt.Format(cursor.TimeLayout))
	assert.Equal(t, "deleted", c.Delivered["a"], "the cursor fingerprints a delete with its marker")
	assert.NotEqual(t, "deleted", c.Delivered["b"])

	st, err = sp.pipeline.Pass(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, st.Produced)
	assert.Equal(t, []sent{
		{"a", false, t1}, {"b", true, t2}, {"c", false, t2}, {"e", false, t2},
		{"b", false, t3}, {"a", true, t3},
		{"a", false, t3},
	}, sentMessages(t, sp))
}

func TestDeletedFieldIsIgnoredWhenNotConfigured(t *testing.T) {
	sp := newScriptedPipeline(t, []sourcetest.Answer{sourcetest.Page("", del("a", "2024-01-01T00:00:01Z", "true"))}, scriptedOptions{})
	st, err := sp.pipeline.Pass(t.Context())
	require.NoError(t, err)
	assert.Zero(t, st.Deleted)
	assert.Equal(t, []sent{{"a", false, "2024-01-01T00:00:01Z"}}, sentMessages(t, sp))
}

func TestAnUnclearDeleteMarkIsInvalid(t *testing.T) {
	for _, mark := range []string{"1", "{}", "[true]"} {
		t.Run(mark, func(t *testing.T) {
			pages := []sourcetest.Answer{sourcetest.Page("", sourcetest.Rec("a", "2024-01-01T00:00:01Z"), del("b", "2024-01-01T00:00:02Z", mark))}
			sp := newScriptedPipeline(t, pages, scriptedOptions{walk: source.WalkOptions{DeletedField: source.Path{"deletedAt"}}})
			_, err := sp.pipeline.Pass(t.Context())
			require.ErrorIs(t, err, source.ErrInvalidRecord)
			for _, m := range []string{"page 1, record 1", `(id "b")`, "field deletedAt", "want a boolean, a string"} {
				assert.Contains(t, err.Error(), m)
			}
			c, err := sp.store.Load(t.Context(), "p")
			require.NoError(t, err)
			assert.Equal(t, "2024-01-01T00:00:01Z", c.LastUpdatedAt.Format(cursor.TimeLayout), "the cursor stops just before it")
		})
	}
}

func TestDeletesOnTheSlowDecodePath(t *testing.T) {
	// A wrongly typed record elsewhere on the page sends it through the record-by-record path;
	// with a dead-letter topic the pass goes on and the delete still becomes a tombstone.
	pages := []sourcetest.Answer{sourcetest.Page("", `{"id":"x","name":5,"updatedAt":"2024-01-01T00:00:01Z"}`, del("b", "2024-01-01T00:00:02Z", "true"))}
	sp := newScriptedPipeline(t, pages, scriptedOptions{dlq: true, walk: source.WalkOptions{DeletedField: source.Path{"deletedAt"}}})
	st, err := sp.pipeline.Pass(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, st.Invalid)
	assert.Equal(t, []sent{{"b", true, "2024-01-01T00:00:02Z"}}, sentMessages(t, sp))
}
