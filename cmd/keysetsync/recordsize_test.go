package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/pipeline"
)

// sizedAPI serves fixed users on the playground's contract: every user with updatedAt >=
// updated_since, on one page.
type sizedAPI struct{ users []string } // JSON, sorted by updatedAt

func (a *sizedAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	since := r.URL.Query().Get("updated_since")
	var page []json.RawMessage
	for _, u := range a.users {
		var v struct{ UpdatedAt string }
		if err := json.Unmarshal([]byte(u), &v); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if v.UpdatedAt >= since {
			page = append(page, json.RawMessage(u))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": page, "scroll_param": nil})
}

// sizedUser is the JSON of a user at second sec whose Avro value is exactly valueBytes long
// (its address fills it up).
func sizedUser(t *testing.T, codec *avro.Codec, id string, sec, valueBytes int) string {
	t.Helper()
	at := time.Date(2024, 1, 1, 0, 0, sec, 0, time.UTC)
	size := func(n int) int {
		name, addr := "n", strings.Repeat("x", n)
		b, err := codec.Append(nil, &avro.User{ID: id, Name: &name, Address: &addr, UpdatedAt: at})
		require.NoError(t, err)
		return len(b)
	}
	// One byte of address is one byte of value, but for its length's varint: a second step
	// corrects for a varint longer than the first guess's.
	n := max(valueBytes-size(10000)+10000, 0)
	n += valueBytes - size(n)
	require.Equal(t, valueBytes, size(n), "value of %q", id)
	return fmt.Sprintf(`{"id":%q,"name":"n","address":%q,"updatedAt":%q}`, id, strings.Repeat("x", n), at.Format(cursor.TimeLayout))
}

// TestRecordSizeLimitIsTheOneEnforced: a record's size limit is what the broker and the writer
// really accept, learned from the topic: a record under it is delivered, and one over it is an
// invalid record (a clean stop naming it, or a dead letter cut to fit), never a batch that
// fails on every pass.
func TestRecordSizeLimitIsTheOneEnforced(t *testing.T) {
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	small := func(id string, sec int) string { return sizedUser(t, codec, id, sec, 10000) }
	many := func(ids ...string) []string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = sizedUser(t, codec, id, i+1, 6000)
		}
		return out
	}
	cases := []struct {
		name     string
		users    []string
		configs  map[string]string // of the data topic
		flags    []string
		code     int
		errs     []string // in stderr
		data     []string // keys in the data topic
		dead     string   // key of the one dead letter
		deadCut  bool     // the dead letter is cut to fit
		cursorAt int      // second of the committed cursor
	}{
		{
			name:  "950 kB fits the default limits",
			users: []string{small("a", 1), sizedUser(t, codec, "big", 2, 950_000), small("c", 3)},
			errs:  []string{`msg="largest message accepted" pipeline=sizes bytes=1000000`},
			data:  []string{"a", "big", "c"}, cursorAt: 3,
		},
		{
			name:  "--max-record-bytes counts the whole message",
			users: []string{small("a", 1), sizedUser(t, codec, "big", 2, 1_000_000), small("c", 3)},
			code:  1,
			errs:  []string{`page 1, record 1 (id "big"): its Kafka message would be 10001`, "over the limit of 1000000 bytes: the smaller of --max-record-bytes 1000000 and what topic"},
			data:  []string{"a"}, cursorAt: 1,
		},
		{
			name:  "over the topic limit stops the pass before it",
			users: []string{small("a", 1), sizedUser(t, codec, "big", 2, 1_100_000), small("c", 3)},
			flags: []string{"--max-record-bytes", "2000000"},
			code:  1,
			errs:  []string{`page 1, record 1 (id "big"): its Kafka message would be`, "over the limit of 1048527 bytes", "(its max.message.bytes 1048588 less 61 bytes of record batch header)"},
			data:  []string{"a"}, cursorAt: 1,
		},
		{
			name:  "over the topic limit is a dead letter cut to fit",
			users: []string{small("a", 1), sizedUser(t, codec, "big", 2, 1_100_000), small("c", 3)},
			flags: []string{"--max-record-bytes", "2000000", "--on-invalid", "dlq"},
			data:  []string{"a", "c"}, dead: "big", deadCut: true, cursorAt: 3,
		},
		{
			name:    "small max.message.bytes learned and batches fit it",
			users:   append(many("r1", "r2", "r3", "r4", "r5", "r6"), sizedUser(t, codec, "big", 7, 25000), small("z", 8)),
			configs: map[string]string{"max.message.bytes": "20000"},
			code:    1,
			errs:    []string{`msg="largest message accepted" pipeline=sizes bytes=19939`, `page 1, record 6 (id "big")`, "over the limit of 19939 bytes", "max.message.bytes 20000"},
			data:    []string{"r1", "r2", "r3", "r4", "r5", "r6"}, cursorAt: 6,
		},
		{
			name:    "small max.message.bytes learned and dead letters fit it",
			users:   append(many("r1", "r2", "r3", "r4", "r5", "r6"), sizedUser(t, codec, "big", 7, 25000), small("z", 8)),
			configs: map[string]string{"max.message.bytes": "20000"},
			flags:   []string{"--on-invalid", "dlq"},
			data:    []string{"r1", "r2", "r3", "r4", "r5", "r6", "z"}, dead: "big", deadCut: true, cursorAt: 8,
		},
	}
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				srv := httptest.NewServer(&sizedAPI{users: c.users})
				t.Cleanup(srv.Close)
				topic, cursors := kafkatest.Topic(t, "users"), kafkatest.Topic(t, "cursors")
				kafkatest.CreateTopic(t, tg, topic, 1, c.configs)
				vars := map[string]string{
					"KEYSETSYNC_BROKERS": strings.Join(tg.Brokers, ","), "KEYSETSYNC_API_URL": srv.URL + "/pagination/keyset",
					"KEYSETSYNC_TOPIC": topic, "KEYSETSYNC_CURSOR_TOPIC": cursors, "KEYSETSYNC_PIPELINE": "sizes",
					"KEYSETSYNC_TOPIC_REPLICATION_FACTOR": "1", "KEYSETSYNC_RETRY_TIMEOUT": "0",
				}
				code, _, stderr := run(t.Context(), vars, append([]string{"once"}, c.flags...)...)
				require.Equal(t, c.code, code, stderr)
				for _, e := range c.errs {
					assert.Contains(t, stderr, strings.ReplaceAll(e, "what topic", "what topic \""+topic+"\""))
				}
				var keys []string
				for _, m := range kafkatest.ReadAll(t, tg, topic) {
					keys = append(keys, string(m.Key))
				}
				assert.Equal(t, c.data, keys)
				assert.Equal(t, time.Date(2024, 1, 1, 0, 0, c.cursorAt, 0, time.UTC), kafkatest.Cursor(t, tg, cursors, "sizes").LastUpdatedAt,
					"the cursor covers what was delivered, and stops just before a record it refused")
				if c.dead == "" {
					return
				}
				dead := kafkatest.ReadAll(t, tg, topic+".dlq")
				require.Len(t, dead, 1)
				d := dead[0]
				assert.Equal(t, c.dead, string(d.Key))
				assert.Contains(t, d.Headers[pipeline.HeaderError], `(id "`+c.dead+`"): its Kafka message would be`)
				raw := c.users[slices.IndexFunc(c.users, func(u string) bool { return strings.HasPrefix(u, `{"id":"`+c.dead+`"`) })]
				assert.True(t, strings.HasPrefix(raw, string(d.Value)), "the dead letter's value is the start of the original JSON")
				if c.deadCut {
					assert.Equal(t, "true", d.Headers[pipeline.HeaderTruncated])
					assert.Equal(t, strconv.Itoa(len(raw)), d.Headers[pipeline.HeaderOriginalBytes])
					assert.Less(t, len(d.Value), len(raw))
				}
				// A second pass sends nothing more: no batch fails on every pass.
				code, _, stderr = run(t.Context(), vars, append([]string{"once"}, c.flags...)...)
				require.Equal(t, 0, code, stderr)
				assert.Len(t, kafkatest.ReadAll(t, tg, topic+".dlq"), 1)
			})
		}
	})
}
