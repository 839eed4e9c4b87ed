package main

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/playground"
)

func TestTopicConfigFlagParsing(t *testing.T) {
	var c kafka.TopicConfigFlag
	require.NoError(t, c.Set("cleanup.policy=compact,delete,retention.ms=-1"))
	require.NoError(t, c.Set("segment.ms=600000"))
	require.NoError(t, c.Set(""))
	assert.Equal(t, kafka.TopicConfigFlag{"cleanup.policy": "compact,delete", "retention.ms": "-1", "segment.ms": "600000"}, c)
	assert.Equal(t, "cleanup.policy=compact,delete,retention.ms=-1,segment.ms=600000", c.String())
	assert.Error(t, new(kafka.TopicConfigFlag).Set("compact"))
	assert.Error(t, new(kafka.TopicConfigFlag).Set("=x"))

	code, _, stderr := run(t.Context(), map[string]string{"KEYSETSYNC_TOPIC_CONFIG": "nonsense"}, "once")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "KEYSETSYNC_TOPIC_CONFIG")
}

func TestTopicConfigIsAppliedOnCreateAndMismatchesAreWarned(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		api, err := playground.New(playground.Config{Records: 20})
		require.NoError(t, err)
		srv := httptest.NewServer(api.Handler())
		t.Cleanup(srv.Close)
		topic := kafkatest.Topic(t, "users")
		vars := map[string]string{
			"KEYSETSYNC_BROKERS": strings.Join(tg.Brokers, ","), "KEYSETSYNC_API_URL": srv.URL + "/pagination/keyset",
			"KEYSETSYNC_TOPIC": topic, "KEYSETSYNC_CURSOR_TOPIC": kafkatest.Topic(t, "cursors"), "KEYSETSYNC_TOPIC_REPLICATION_FACTOR": "1",
		}
		code, _, stderr := run(t.Context(), vars, "once", "--topic-config", "cleanup.policy=compact", "--topic-config", "retention.ms=-1")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "created data topic")
		assert.NotContains(t, stderr, "level=WARN", "a topic created with the configs matches them")
		configs, err := tg.Kafka(t).TopicConfigs(t.Context(), topic)
		require.NoError(t, err)
		assert.Equal(t, "compact", configs["cleanup.policy"])
		assert.Equal(t, "-1", configs["retention.ms"])

		// The topic exists now: it is used as it is, and what differs is warned about.
		vars["KEYSETSYNC_TOPIC_CONFIG"] = "retention.ms=3600000,cleanup.policy=compact"
		vars["KEYSETSYNC_DELETED_FIELD"] = "deletedAt"
		code, _, stderr = run(t.Context(), vars, "once")
		require.Equal(t, 0, code, stderr)
		assert.NotContains(t, stderr, "created data topic")
		assert.Contains(t, stderr, "level=WARN msg=\"the existing topic has a config with another value than requested")
		assert.Contains(t, stderr, "config=retention.ms requested=3600000 actual=-1")
		assert.NotContains(t, stderr, "config=cleanup.policy", "a matching config is not warned about")
		assert.Contains(t, stderr, "the data topic is compacted (cleanup.policy=compact, without delete) and deletes are written as tombstones")
		configs, err = tg.Kafka(t).TopicConfigs(t.Context(), topic)
		require.NoError(t, err)
		assert.Equal(t, "-1", configs["retention.ms"], "an existing topic is never altered")

		// Without --deleted-field, compaction is nothing to warn about.
		delete(vars, "KEYSETSYNC_DELETED_FIELD")
		vars["KEYSETSYNC_TOPIC_CONFIG"] = "cleanup.policy=compact"
		code, _, stderr = run(t.Context(), vars, "once")
		require.Equal(t, 0, code, stderr)
		assert.NotContains(t, stderr, "level=WARN")
	})
}

func TestTopicCheckWarnings(t *testing.T) {
	info := kafka.TopicInfo{Configs: map[string]string{"cleanup.policy": "delete,compact", "retention.ms": "-1", "delete.retention.ms": "86400000"}}
	assert.Empty(t, info.Check("u", map[string]string{"cleanup.policy": "compact,delete"}, true), "a policy is a set; compact,delete keeps tombstones' ids deletable")
	w := info.Check("u", map[string]string{"retention.ms": "5", "no.such.config": "x"}, false)
	require.Len(t, w, 2)
	assert.Contains(t, w[0].Msg, "does not report")
	assert.Contains(t, w[1].Msg, "another value")

	compacted := kafka.TopicInfo{Configs: map[string]string{"cleanup.policy": "compact", "delete.retention.ms": "86400000"}}
	assert.Empty(t, compacted.Check("u", nil, false))
	w = compacted.Check("u", nil, true)
	require.Len(t, w, 1)
	assert.Contains(t, w[0].Attrs, "86400000")
}

// deletesAPI serves a live a and b on the first request; from then on b is deleted (a later
// updatedAt and a deletedAt time).
func deletesAPI(t *testing.T) string {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := `{"id":"b","name":"B","updatedAt":"2024-01-01T00:00:01Z","deletedAt":null}`
		if calls.Add(1) > 1 {
			b = `{"id":"b","name":"B","updatedAt":"2024-01-01T00:00:02Z","deletedAt":"2024-01-01T00:00:02Z"}`
		}
		fmt.Fprint(w, `{"data":[{"id":"a","name":"A","updatedAt":"2024-01-01T00:00:01Z"},`+b+`],"scroll_param":null}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/pagination/keyset"
}

func TestDeletedFieldWritesTombstonesThatSnapshotDrops(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		topic := kafkatest.Topic(t, "users")
		kafkatest.CreateTopic(t, tg, topic, 1, nil)
		vars := map[string]string{
			"KEYSETSYNC_BROKERS": strings.Join(tg.Brokers, ","), "KEYSETSYNC_API_URL": deletesAPI(t),
			"KEYSETSYNC_TOPIC": topic, "KEYSETSYNC_CURSOR_TOPIC": kafkatest.Topic(t, "cursors"), "KEYSETSYNC_TOPIC_REPLICATION_FACTOR": "1",
			"KEYSETSYNC_DELETED_FIELD": "deletedAt",
		}
		code, _, stderr := run(t.Context(), vars, "once")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "deleted=0")
		code, _, stderr = run(t.Context(), vars, "once")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "deleted=1")
		msgs := kafkatest.ReadAll(t, tg, topic)
		require.Len(t, msgs, 3)
		assert.Equal(t, "b", string(msgs[2].Key))
		assert.Nil(t, msgs[2].Value, "a tombstone")
		assert.Equal(t, "2024-01-01T00:00:02Z", msgs[2].Headers["keysetsync.updated_at"])

		code, out, stderr := run(t.Context(), vars, "snapshot")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "tombstones=1")
		assert.Contains(t, out, `"id":"a"`)
		assert.NotContains(t, out, `"id":"b"`)

		// verify knows the delete too: the tombstone is b's expected state.
		code, out, stderr = run(t.Context(), vars, "verify")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, out, "missing=0 stale=0 extra=0")
		noDeletes := maps.Clone(vars)
		delete(noDeletes, "KEYSETSYNC_DELETED_FIELD")
		code, out, _ = run(t.Context(), noDeletes, "verify")
		assert.Equal(t, 1, code, "without --deleted-field b is expected with a value")
		assert.Contains(t, out, "missing b")
	})
}
