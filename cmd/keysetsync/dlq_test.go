package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/pipeline"
)

// TestOnceOnInvalidDLQThroughTheCLI: --on-invalid dlq given on the command line sends an invalid
// record's original JSON to the dead-letter topic with headers saying why and where from, the
// valid records to the data topic, and the pass (exit 0) past it. Without the flag the same
// answer stops the pass (exit 1) before the invalid record.
func TestOnceOnInvalidDLQThroughTheCLI(t *testing.T) {
	const invalid = `{"id":"b","name":"n","updatedAt":"yesterday"}`
	page := `{"data":[` + strings.Join([]string{
		`{"id":"a","name":"n","updatedAt":"2024-01-01T00:00:01Z"}`, invalid, `{"id":"c","name":"n","updatedAt":"2024-01-01T00:00:02Z"}`,
	}, ",") + `],"scroll_param":null}`
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, page)
	}))
	t.Cleanup(api.Close)
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		cases := []struct {
			name    string
			args    []string
			code    int
			dataIDs []string
		}{
			{"dlq", []string{"once", "--on-invalid", "dlq"}, 0, []string{"a", "c"}},
			{"fail", []string{"once"}, 1, []string{"a"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				topic, cursors := kafkatest.Topic(t, "users"), kafkatest.Topic(t, "cursors")
				vars := map[string]string{
					"KEYSETSYNC_BROKERS": strings.Join(tg.Brokers, ","), "KEYSETSYNC_API_URL": api.URL + "/pagination/keyset",
					"KEYSETSYNC_TOPIC": topic, "KEYSETSYNC_CURSOR_TOPIC": cursors, "KEYSETSYNC_PIPELINE": "dlq-cli",
					"KEYSETSYNC_TOPIC_REPLICATION_FACTOR": "1", "KEYSETSYNC_RETRY_TIMEOUT": "0s",
				}
				code, _, stderr := run(t.Context(), vars, c.args...)
				require.Equal(t, c.code, code, stderr)
				var ids []string
				for _, m := range kafkatest.ReadAll(t, tg, topic) {
					ids = append(ids, string(m.Key))
				}
				assert.Equal(t, c.dataIDs, ids, "the data topic holds the valid records")
				if c.code != 0 {
					assert.Contains(t, stderr, `record 1 (id "b"), field updatedAt`)
					return
				}

				dead := kafkatest.ReadAll(t, tg, topic+".dlq") // the default --dlq-topic
				require.Len(t, dead, 1, "the invalid record is dead-lettered")
				d := dead[0]
				assert.Equal(t, "b", string(d.Key))
				assert.Equal(t, invalid, string(d.Value), "the original JSON, untouched")
				assert.Equal(t, "updatedAt", d.Headers[pipeline.HeaderField])
				assert.Contains(t, d.Headers[pipeline.HeaderError], `page 1, record 1 (id "b"), field updatedAt: "yesterday" is not a UTC time`)
				assert.Equal(t, "1", d.Headers[pipeline.HeaderPage])
				assert.Equal(t, "1", d.Headers[pipeline.HeaderIndex])
				assert.Contains(t, d.Headers[pipeline.HeaderURL], api.URL+"/pagination/keyset?updated_since=0001-01-01T00%3A00%3A00Z")
				assert.Equal(t, api.URL+"/pagination/keyset", d.Headers[pipeline.HeaderSource])
				assert.Equal(t, "dlq-cli", d.Headers[pipeline.HeaderPipeline])
				_, err := time.Parse(time.RFC3339Nano, d.Headers[pipeline.HeaderFailedAt])
				assert.NoError(t, err, "failed_at %q", d.Headers[pipeline.HeaderFailedAt])
				assert.Contains(t, stderr, "invalid=1")
				assert.Equal(t, "2024-01-01T00:00:02Z", kafkatest.Cursor(t, tg, cursors, "dlq-cli").LastUpdatedAt.Format(time.RFC3339),
					"the cursor moves past the dead letter once it is acknowledged")
			})
		}
	})
}
