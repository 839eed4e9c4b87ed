package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/shapetest"
	"github.com/keysetsync/keysetsync/registry"
	"github.com/keysetsync/keysetsync/registry/registrytest"
)

// shapeFixture is the orders API of internal/shapetest (nested records, numeric ids, a compound
// keyset, another time format) served over HTTP, with the flags and env vars that describe it
// to keysetsync: no code of keysetsync knows this API.
type shapeFixture struct {
	tg     kafkatest.Target
	api    *shapetest.Server
	schema *avro.Schema
	topic  string
	vars   map[string]string
}

func newShapeFixture(t *testing.T, tg kafkatest.Target, cfg shapetest.Config, afterID bool) *shapeFixture {
	t.Helper()
	api, err := shapetest.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	schemaFile := filepath.Join(t.TempDir(), "order.avsc")
	require.NoError(t, os.WriteFile(schemaFile, []byte(shapetest.Schema()), 0o644))
	schema, err := avro.ParseSchema(shapetest.Schema())
	require.NoError(t, err)
	f := &shapeFixture{tg: tg, api: api, schema: schema, topic: kafkatest.Topic(t, "orders")}
	cfg = api.Config() // defaults filled in
	f.vars = map[string]string{
		"KEYSETSYNC_BROKERS":                  strings.Join(tg.Brokers, ","),
		"KEYSETSYNC_API_URL":                  srv.URL + shapetest.Path,
		"KEYSETSYNC_TOPIC":                    f.topic,
		"KEYSETSYNC_CURSOR_TOPIC":             kafkatest.Topic(t, "cursors"),
		"KEYSETSYNC_PIPELINE":                 "orders",
		"KEYSETSYNC_TOPIC_REPLICATION_FACTOR": "1",
		"KEYSETSYNC_API_SINCE_PARAM":          shapetest.ParamModifiedSince,
		"KEYSETSYNC_API_TOKEN_PARAM":          shapetest.ParamCursor,
		"KEYSETSYNC_API_PAGE_SIZE_PARAM":      shapetest.ParamLimit,
		"KEYSETSYNC_API_PAGE_SIZE":            strconv.Itoa(cfg.PageSize),
		"KEYSETSYNC_API_RECORDS_PATH":         "result.orders",
		"KEYSETSYNC_API_NEXT_PATH":            "paging.next_cursor",
		"KEYSETSYNC_API_TOTAL_PATH":           "paging.total_matching",
		"KEYSETSYNC_API_ID_PATH":              "order_id",
		"KEYSETSYNC_API_UPDATED_AT_PATH":      "meta.modified",
		"KEYSETSYNC_API_TIME_FORMAT":          string(cfg.TimeFormat),
		"KEYSETSYNC_SCHEMA":                   schemaFile,
		"KEYSETSYNC_DELETED_FIELD":            "meta.deleted",
	}
	if afterID {
		f.vars["KEYSETSYNC_API_AFTER_ID_PARAM"] = shapetest.ParamAfterID
	}
	return f
}

func (f *shapeFixture) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return run(t.Context(), f.vars, args...)
}

// latest is the topic's latest value per key, decoded (nil for a tombstone), and the number of
// messages.
func (f *shapeFixture) latest(t *testing.T) (map[string]map[string]any, int) {
	t.Helper()
	msgs := kafkatest.ReadAll(t, f.tg, f.topic)
	out := map[string]map[string]any{}
	for _, m := range msgs {
		if m.Value == nil {
			out[string(m.Key)] = nil
			continue
		}
		v, err := f.schema.JSON(m.Value)
		require.NoError(t, err, "offset %d", m.Offset)
		out[string(m.Key)] = v
	}
	return out, len(msgs)
}

// requireInSync compares the topic with the API field by field, independently of the encoder:
// the values are decoded by goavro and compared with the API's JSON, soft deletes expected as
// tombstones.
func (f *shapeFixture) requireInSync(t *testing.T) {
	t.Helper()
	got, _ := f.latest(t)
	snap := f.api.Snapshot()
	require.ElementsMatch(t, slices.Collect(maps.Keys(snap)), slices.Collect(maps.Keys(got)), "the topic's ids are the API's")
	for id, raw := range snap {
		var rec map[string]any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		require.NoError(t, d.Decode(&rec))
		meta := rec["meta"].(map[string]any)
		if meta["deleted"] == true {
			assert.Nil(t, got[id], "order %s is deleted at the source: its latest message is a tombstone", id)
			continue
		}
		v := got[id]
		require.NotNil(t, v, "order %s", id)
		assert.Equal(t, id, jsonText(v["order_id"]), "order %s: the key is order_id", id)
		assert.Equal(t, rec["status"], v["status"], "order %s", id)
		assert.Equal(t, rec["total"], v["total"], "order %s: decimal total", id)
		assert.Equal(t, jsonText(rec["customer"]), jsonText(v["customer"]), "order %s: nested customer", id)
		assert.Equal(t, jsonText(rec["items"]), jsonText(v["items"]), "order %s: items", id)
		assert.Equal(t, "web", v["channel"], "order %s: a field the API lacks takes the schema default", id)
		if tags, ok := rec["tags"]; ok {
			assert.Equal(t, jsonText(tags), jsonText(v["tags"]), "order %s", id)
		} else {
			assert.Equal(t, "[]", jsonText(v["tags"]), "order %s: absent tags take the default []", id)
		}
		modified, err := f.api.ParseTime(jsonValueText(meta["modified"]))
		require.NoError(t, err)
		vm := v["meta"].(map[string]any)
		assert.Equal(t, modified.UTC().Format(time.RFC3339Nano), vm["modified"], "order %s: meta.modified as timestamp-millis", id)
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// jsonValueText is a decoded JSON scalar as the API wrote it: a number's digits, a string's text.
func jsonValueText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return jsonText(v)
}

// TestOnceSyncsAnotherAPIShape syncs an API of another shape, configured by flags alone: nested
// records at result.orders, integer ids, epoch or RFC 3339 times, a custom schema with nested
// records, arrays, an enum, decimals and defaults, soft deletes as tombstones, and ties twice
// as wide as a page, paged through exactly by the compound keyset.
func TestOnceSyncsAnotherAPIShape(t *testing.T) {
	formats := []shapetest.TimeFormat{shapetest.EpochMillis, shapetest.EpochSeconds, shapetest.RFC3339}
	for _, format := range formats {
		t.Run(string(format), func(t *testing.T) {
			kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
				const records, page, tie = 1500, 25, 60
				f := newShapeFixture(t, tg, shapetest.Config{Records: records, PageSize: page, TieWidth: tie, TimeFormat: format, Seed: 7}, true)
				code, _, stderr := f.run(t, "once")
				require.Equal(t, 0, code, stderr)
				assert.Contains(t, stderr, "records_produced=1500 ")
				assert.Contains(t, stderr, "tie_overflows=0 ")
				_, messages := f.latest(t)
				assert.Equal(t, records, messages, "ties %d wide on pages of %d: every record once, none twice", tie, page)
				f.requireInSync(t)

				// Changes: updates (all at one time, a tie) and soft deletes.
				f.api.Update(40)
				f.api.Delete(5)
				code, _, stderr = f.run(t, "once")
				require.Equal(t, 0, code, stderr)
				assert.Contains(t, stderr, "records_produced=45 ", "only what changed is sent again")
				assert.Contains(t, stderr, "deleted=5 ")
				f.requireInSync(t)

				code, stdout, stderr := f.run(t, "verify")
				require.Equal(t, 0, code, stdout+stderr)
				assert.Contains(t, stdout, "missing=0 stale=0 extra=0")

				code, stdout, stderr = f.run(t, "tail", "--from-beginning", "--max-messages", "2")
				require.Equal(t, 0, code, stderr)
				lines := strings.Split(strings.TrimSpace(stdout), "\n")
				require.Len(t, lines, 2, stdout)
				for _, l := range lines {
					var msg struct {
						Key   string         `json:"key"`
						Value map[string]any `json:"value"`
						Error string         `json:"error"`
					}
					require.NoError(t, json.Unmarshal([]byte(l), &msg), l)
					require.Empty(t, msg.Error, "tail decodes with --schema")
					assert.Equal(t, msg.Key, jsonValueText(msg.Value["order_id"]))
					assert.Contains(t, shapetest.Statuses(), msg.Value["status"])
				}

				// snapshot --format csv: the schema's top-level fields as columns, one row per
				// live order, nested values as JSON.
				code, stdout, stderr = f.run(t, "snapshot", "--format", "csv")
				require.Equal(t, 0, code, stderr)
				rows, err := csv.NewReader(strings.NewReader(stdout)).ReadAll()
				require.NoError(t, err)
				var schema struct {
					Fields []struct{ Name string } `json:"fields"`
				}
				require.NoError(t, json.Unmarshal([]byte(shapetest.Schema()), &schema))
				var header []string
				for _, fl := range schema.Fields {
					header = append(header, fl.Name)
				}
				require.Equal(t, header, rows[0])
				assert.Len(t, rows[1:], records-5, "deleted orders are tombstones: not in the snapshot")
				latest, _ := f.latest(t)
				for _, row := range rows[1:] {
					v := latest[row[0]]
					require.NotNil(t, v, "order %s", row[0])
					for i, col := range header {
						want := jsonValueText(v[col])
						assert.Equal(t, want, row[i], "order %s, column %s", row[0], col)
					}
				}
			})
		})
	}
}

// TestTiesWithoutTheAfterIDParameter: the same API without its compound keyset is paged by
// updated time and scroll token only. Ties wider than a page then go through the API's token
// (it is compound in this API, so nothing is lost) and each is reported as a tie overflow;
// with the after-id parameter there is none (above).
func TestTiesWithoutTheAfterIDParameter(t *testing.T) {
	tg := kafkatest.NewFake(t)
	f := newShapeFixture(t, tg, shapetest.Config{Records: 300, PageSize: 25, TieWidth: 60, Seed: 3}, false)
	f.vars["KEYSETSYNC_ACCEPT_TIE_OVERFLOW"] = "true" // counted as overflows, exit 3 without it
	code, _, stderr := f.run(t, "once")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "more records share one updatedAt than a page holds")
	assert.NotContains(t, stderr, "tie_overflows=0 ")
	f.requireInSync(t)
}

// TestCustomSchemaErrorsAreClear: a record that does not fit the schema stops the pass with the
// page, the record and the field path, and the cursor stays before it.
func TestCustomSchemaErrorsAreClear(t *testing.T) {
	tg := kafkatest.NewFake(t)
	f := newShapeFixture(t, tg, shapetest.Config{Records: 100, PageSize: 25, Seed: 5}, true)
	strict := strings.Replace(shapetest.Schema(), `"name": "channel", "type": "string", "default": "web"`, `"name": "channel", "type": "string"`, 1)
	require.NotEqual(t, shapetest.Schema(), strict, "the test schema has a channel field with a default")
	path := filepath.Join(t.TempDir(), "strict.avsc")
	require.NoError(t, os.WriteFile(path, []byte(strict), 0o644))
	f.vars["KEYSETSYNC_SCHEMA"] = path
	code, _, stderr := f.run(t, "once")
	require.Equal(t, 1, code, stderr)
	assert.Contains(t, stderr, "page 1")
	assert.Contains(t, stderr, "record 0")
	assert.Contains(t, stderr, "channel")
	assert.Contains(t, stderr, "no default")
	_, messages := f.latest(t)
	assert.Zero(t, messages)

	f.vars["KEYSETSYNC_SCHEMA"] = filepath.Join(t.TempDir(), "missing.avsc")
	code, _, stderr = f.run(t, "once")
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, "--schema")

	bad := filepath.Join(t.TempDir(), "bad.avsc")
	require.NoError(t, os.WriteFile(bad, []byte(`{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}`), 0o644))
	f.vars["KEYSETSYNC_SCHEMA"] = bad
	code, _, stderr = f.run(t, "once")
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, "nope")
}

// TestCustomSchemaWithSchemaRegistry: with --schema and --schema-registry, the custom schema is
// the one registered under <topic>-value, every value is framed with its id, and the tools read
// the framed values back with the same flags.
func TestCustomSchemaWithSchemaRegistry(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		f := newShapeFixture(t, tg, shapetest.Config{Records: 80, PageSize: 25, TieWidth: 3, Seed: 11}, true)
		fake := registrytest.New()
		f.vars["KEYSETSYNC_SCHEMA_REGISTRY"] = fake.Start(t)
		code, _, stderr := f.run(t, "once")
		require.Equal(t, 0, code, stderr)
		ids := fake.Subject(f.topic + "-value")
		require.Len(t, ids, 1)
		var registered []string
		for _, r := range fake.Requests() {
			var body struct{ Schema string }
			if json.Unmarshal([]byte(r.Body), &body) == nil && body.Schema != "" {
				registered = append(registered, body.Schema)
			}
		}
		require.NotEmpty(t, registered)
		assert.Equal(t, shapetest.Schema(), registered[0], "the --schema file, as written, is registered")

		msgs := kafkatest.ReadAll(t, tg, f.topic)
		require.Len(t, msgs, 80)
		for _, m := range msgs {
			require.Equal(t, registry.Header(ids[0]), m.Value[:5], "order %s: magic byte and schema id", m.Key)
			_, err := f.schema.JSON(m.Value[5:])
			require.NoError(t, err)
		}
		code, stdout, stderr := f.run(t, "verify")
		require.Equal(t, 0, code, stdout+stderr)
		assert.Contains(t, stdout, "missing=0 stale=0 extra=0")
		code, stdout, stderr = f.run(t, "snapshot")
		require.Equal(t, 0, code, stderr)
		assert.Len(t, strings.Split(strings.TrimSpace(stdout), "\n"), 80)
	})
}
