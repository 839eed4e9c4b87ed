package main

import (
	"errors"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/playground"
)

// TestVerifyTakesTheSyncFlagsAndConfig: verify accepts once's flags and config file (a
// pipelines list included, --pipeline selecting one; unknown keys still refused), and reports
// how far the committed cursor is behind the API; a missing cursor is reported, not an error.
func TestVerifyTakesTheSyncFlagsAndConfig(t *testing.T) {
	tg := kafkatest.NewFake(t)
	cursors := kafkatest.Topic(t, "cursors")
	apis := map[string]*playground.Server{}
	urls, topics := map[string]string{}, map[string]string{}
	body := "brokers: " + strings.Join(tg.Brokers, ",") + "\ncursor-topic: " + cursors + "\nbatch-records: 40\ninterval: 1m\npipelines:\n"
	for name, n := range map[string]int{"pa": 30, "pb": 60} {
		api, err := playground.New(playground.Config{Records: n, TieWidth: 3})
		require.NoError(t, err)
		srv := httptest.NewServer(api.Handler())
		t.Cleanup(srv.Close)
		apis[name], urls[name], topics[name] = api, srv.URL+"/pagination/keyset", kafkatest.Topic(t, "users")
		body += "  - pipeline: " + name + "\n    api-url: " + urls[name] + "\n    topic: " + topics[name] + "\n"
	}
	path := writeConfig(t, body)
	code, _, stderr := run(t.Context(), nil, "once", "--config", path)
	require.Equal(t, 0, code, stderr)
	newest := func(name string) string {
		var last string // the times are YYYY-MM-DDTHH:MM:SSZ: text order is time order
		for _, u := range apis[name].Snapshot() {
			last = max(last, u.UpdatedAt)
		}
		return last
	}
	freshCursors := kafkatest.Topic(t, "no-cursors")

	cases := []struct {
		name string
		vars map[string]string
		args []string
		code int
		out  []string // in stdout (exit 0 or 1) or stderr (usage errors)
	}{
		{"config, --pipeline selects", nil, []string{"--config", path, "--pipeline", "pb"}, 0, []string{
			"ids_in_topic=60 ids_in_api=60 missing=0 stale=0 extra=0",
			"cursor pipeline=pb last_updated_at=" + newest("pb") + " seq=",
			"api_newest_updated_at=" + newest("pb") + " behind=0s api_records_newer=0",
		}},
		{"config, pipeline by env var", map[string]string{"KEYSETSYNC_PIPELINE": "pa"}, []string{"--config", path}, 0, []string{
			"ids_in_api=30 missing=0", "cursor pipeline=pa last_updated_at=" + newest("pa"),
		}},
		{"config, no pipeline chosen", nil, []string{"--config", path}, 2, []string{"lists 2 pipelines (pa, pb): choose the one to verify with --pipeline"}},
		{"config, unknown pipeline", nil, []string{"--config", path, "--pipeline", "pz"}, 2, []string{`--pipeline "pz" is not in the pipelines of config file`}},
		{"config, unknown key", nil, []string{"--config", writeConfig(t, body+"batch-record: 5\n")}, 2, []string{`unknown key "batch-record" (not a flag of keysetsync verify)`}},
		{"flags alone", nil, []string{"--brokers", tg.Brokers[0], "--api-url", urls["pa"], "--topic", topics["pa"], "--cursor-topic", cursors, "--pipeline", "pa", "--batch-records", "7"}, 0, []string{
			"ids_in_api=30 missing=0", "cursor pipeline=pa last_updated_at=" + newest("pa"),
		}},
		{"no cursor topic", nil, []string{"--config", path, "--pipeline", "pa", "--cursor-topic", freshCursors}, 0, []string{
			`cursor pipeline=pa last_updated_at=none (cursor topic "` + freshCursors + `" does not exist: its next pass starts from the beginning) api_newest_updated_at=` + newest("pa") + " api_records_newer=30",
		}},
		{"no cursor of the pipeline", nil, []string{"--brokers", tg.Brokers[0], "--api-url", urls["pa"], "--topic", topics["pa"], "--cursor-topic", cursors, "--pipeline", "other"}, 0, []string{
			`last_updated_at=none (no cursor of pipeline "other" in topic "` + cursors + `"`, "api_records_newer=30",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := run(t.Context(), c.vars, append([]string{"verify"}, c.args...)...)
			require.Equal(t, c.code, code, stdout+stderr)
			out := stdout
			if c.code == exitUsage {
				out = stderr
			}
			for _, want := range c.out {
				assert.Contains(t, out, want)
			}
		})
	}
	_, err := tg.Kafka(t).Partitions(t.Context(), freshCursors)
	assert.True(t, errors.Is(err, kafka.ErrUnknownTopic), "verify creates no cursor topic: %v", err)

	t.Run("cursor behind the API", func(t *testing.T) {
		updated := apis["pb"].Update(3)
		code, stdout, stderr := run(t.Context(), nil, "verify", "--config", path, "--pipeline", "pb")
		require.Equal(t, 1, code, stdout+stderr)
		assert.Contains(t, stdout, "missing=0 stale=3")
		m := regexp.MustCompile(`cursor pipeline=pb last_updated_at=(\S+) seq=\d+ api_newest_updated_at=(\S+) behind=(\S+) api_records_newer=(\d+)`).FindStringSubmatch(stdout)
		require.NotNil(t, m, stdout)
		assert.Equal(t, newest("pb"), m[2], "the API's newest is an update just made")
		behind, err := time.ParseDuration(m[3])
		require.NoError(t, err)
		cur, err := time.Parse(time.RFC3339, m[1])
		require.NoError(t, err)
		api, err := time.Parse(time.RFC3339, m[2])
		require.NoError(t, err)
		assert.Equal(t, api.Sub(cur), behind)
		assert.Positive(t, behind)
		assert.Equal(t, "3", m[4], "the records updated after the cursor: %v", updated)
	})
}
