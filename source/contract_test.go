package source_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/source"
)

func TestTimeFormats(t *testing.T) {
	at := time.Date(2024, 3, 1, 12, 30, 45, 123_000_000, time.UTC)
	whole := at.Truncate(time.Second)
	cases := []struct {
		format  source.TimeFormat
		in      any
		want    time.Time
		wantErr string
	}{
		{source.TimeSeconds, "2024-03-01T12:30:45Z", whole, ""},
		{source.TimeSeconds, "2024-03-01T12:30:45.123Z", time.Time{}, "YYYY-MM-DDTHH:MM:SSZ"},
		{source.TimeSeconds, json.Number("1709296245"), time.Time{}, "got number 1709296245, want a string"},
		{source.TimeRFC3339, "2024-03-01T12:30:45.123Z", at, ""},
		{source.TimeRFC3339, "2024-03-01T14:30:45.123+02:00", at, ""},
		{source.TimeRFC3339, "2024-03-01T12:30:45Z", whole, ""},
		{source.TimeRFC3339, "2024-03-01 12:30:45", time.Time{}, "not an RFC 3339 time"},
		{source.TimeRFC3339, true, time.Time{}, "got boolean true"},
		{source.TimeEpochSeconds, json.Number("1709296245"), whole, ""},
		{source.TimeEpochSeconds, "1709296245", whole, ""},
		{source.TimeEpochSeconds, json.Number("1709296245.5"), time.Time{}, "not a non-negative integer of seconds"},
		{source.TimeEpochMillis, json.Number("1709296245123"), at, ""},
		{source.TimeEpochMillis, json.Number("-5"), time.Time{}, "not a non-negative integer of milliseconds"},
		{source.TimeEpochMillis, map[string]any{}, time.Time{}, "got an object"},
	}
	for _, c := range cases {
		t.Run(string(c.format)+" "+describe(c.in), func(t *testing.T) {
			got, err := c.format.Parse(c.in)
			if c.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.wantErr)
				return
			}
			require.NoError(t, err)
			assert.True(t, c.want.Equal(got), "got %v, want %v", got, c.want)
			assert.Equal(t, time.UTC, got.Location())
			// What is sent back in the since parameter reads as the same time.
			back, err := c.format.Parse(sinceValue(c.format, got))
			require.NoError(t, err)
			assert.True(t, got.Equal(back), "%s: %v formats as %q, which parses as %v", c.format, got, c.format.Format(got), back)
		})
	}
	_, err := source.ParseTimeFormat("iso8601")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "want seconds, rfc3339, epoch_s or epoch_ms")
}

// sinceValue is the since parameter for t as a JSON value of the API's kind.
func sinceValue(f source.TimeFormat, t time.Time) any {
	s := f.Format(t)
	if f == source.TimeEpochSeconds || f == source.TimeEpochMillis {
		return json.Number(s)
	}
	return s
}

func describe(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestParsePath(t *testing.T) {
	cases := []struct {
		in   string
		want source.Path
		err  bool
	}{
		{"data", source.Path{"data"}, false},
		{"$.result.orders", source.Path{"result", "orders"}, false},
		{"meta.modified", source.Path{"meta", "modified"}, false},
		{"", nil, false},
		{"a..b", nil, true},
		{"a.", nil, true},
	}
	for _, c := range cases {
		got, err := source.ParsePath(c.in)
		if c.err {
			assert.Error(t, err, c.in)
			continue
		}
		require.NoError(t, err, c.in)
		assert.Equal(t, c.want, got, c.in)
	}
}

func TestContractValidate(t *testing.T) {
	ok := source.DefaultContract()
	require.NoError(t, ok.Validate())
	cases := []struct {
		name   string
		change func(*source.Contract)
		want   []string
	}{
		{"no since param", func(c *source.Contract) { c.SinceParam = "" }, []string{"since param is empty"}},
		{"same param twice", func(c *source.Contract) { c.AfterIDParam = "updated_since" }, []string{`since param and after-id param are both "updated_since"`}},
		{"page size without param", func(c *source.Contract) { c.PageSize = 100 }, []string{"set both or neither"}},
		{"no records path", func(c *source.Contract) { c.RecordsPath = nil }, []string{"records path is empty"}},
		{"bad time format and no id path", func(c *source.Contract) { c.TimeFormat = "iso"; c.IDPath = nil }, []string{"id path is empty", `time format "iso"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := source.DefaultContract()
			c.change(&k)
			err := k.Validate()
			require.Error(t, err)
			for _, w := range c.want {
				assert.Contains(t, err.Error(), w)
			}
			_, err = source.NewSource(source.SourceConfig{URL: "http://127.0.0.1:1/x", Contract: k})
			require.ErrorIs(t, err, source.ErrConfig)
		})
	}
}

// ordersContract is the contract of a nested API with epoch-millisecond times, numeric ids and
// a compound keyset, as the scripted answers below are written.
func ordersContract() source.Contract {
	return source.Contract{
		SinceParam: "modified_since", TokenParam: "cursor", AfterIDParam: "after_id",
		PageSizeParam: "limit", PageSize: 2,
		RecordsPath: source.Path{"result", "orders"}, NextPath: source.Path{"paging", "more"},
		TotalPath: source.Path{"paging", "total"}, IDPath: source.Path{"order_id"},
		UpdatedAtPath: source.Path{"meta", "modified"}, TimeFormat: source.TimeEpochMillis,
	}
}

const orderSchema = `{"type": "record", "name": "Order", "fields": [
	{"name": "order_id", "type": "long"},
	{"name": "meta", "type": {"type": "record", "name": "Meta", "fields": [
		{"name": "modified", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}},
	{"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["open", "paid"]}},
	{"name": "channel", "type": "string", "default": "web"}]}`

// TestContractRequestsAndAnswers drives a Walker over scripted answers of another shape and
// checks every request it sends and what it makes of every answer.
func TestContractRequestsAndAnswers(t *testing.T) {
	schema, err := avro.ParseSchema(orderSchema)
	require.NoError(t, err)
	page1 := `{"result": {"orders": [
		{"order_id": 7, "meta": {"modified": 1709296245123}, "status": "open"},
		{"order_id": 9, "meta": {"modified": 1709296245123}, "status": "paid"}]},
		"paging": {"more": true, "total": 5}}`
	page2 := `{"result": {"orders": [
		{"order_id": 11, "meta": {"modified": 1709296245123}, "status": "open", "channel": "app"},
		{"order_id": 3, "meta": {"modified": 1709296246000}, "status": "open"}]},
		"paging": {"more": true, "total": 3}}`
	page3 := `{"result": {"orders": [{"order_id": "12", "meta": {"modified": "1709296247000"}, "status": "paid"}]}, "paging": {"more": false, "total": 1}}`
	probe := `{"result": {"orders": [{"order_id": 3, "meta": {"modified": 1709296246000}, "status": "open"}]}, "paging": {"more": true, "total": 3}}`
	api := &sourcetest.Scripted{Answers: []sourcetest.Answer{{Status: 200, Body: page1}, {Status: 200, Body: probe}, {Status: 200, Body: page1}, {Status: 200, Body: page2}, {Status: 200, Body: page3}}}
	src := newContractSource(t, api, ordersContract())
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{Schema: schema, Now: fixedNow}, nil)

	var ids []string
	var remaining []int64
	for {
		recs, err := w.Next(context.Background())
		for _, r := range recs {
			ids = append(ids, r.ID)
			native, derr := schema.Decode(r.Value)
			require.NoError(t, derr)
			assert.EqualValues(t, r.ID, toString(native["order_id"]), "the key is the id")
		}
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if n, ok := w.Remaining(); ok {
			remaining = append(remaining, n)
		}
	}
	assert.Equal(t, []string{"7", "9", "11", "3", "12"}, ids)
	assert.Equal(t, []int64{3, 3, 1, 0}, remaining, "the API's total less the page, after each page")

	// Page 1 is full of one time: a probe from the next millisecond finds a later record, so
	// the tie is settled; page 1 is read again, the tie paged by (time, id), and a page that
	// spans times is followed by an inclusive request from its last time.
	reqs := api.Requests()
	require.Len(t, reqs, 5)
	want := []url.Values{
		{"modified_since": {"0"}, "limit": {"2"}, "tenant": {"acme"}},
		{"modified_since": {"1709296245124"}, "limit": {"2"}, "tenant": {"acme"}},
		{"modified_since": {"1709296245123"}, "limit": {"2"}, "tenant": {"acme"}},
		{"modified_since": {"1709296245123"}, "after_id": {"9"}, "limit": {"2"}, "tenant": {"acme"}},
		{"modified_since": {"1709296246000"}, "limit": {"2"}, "tenant": {"acme"}},
	}
	for i, q := range reqs {
		got, err := url.ParseQuery(q)
		require.NoError(t, err)
		assert.Equal(t, want[i], got, "request %d", i+1)
	}
	pos := w.Position()
	assert.Equal(t, "2024-03-01T12:30:47Z", cursor.FormatTime(pos.LastUpdatedAt))
	assert.Equal(t, []string{"12"}, keys(pos.Delivered))
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func fixedNow() time.Time { return time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC) }

func newContractSource(t *testing.T, api *sourcetest.Scripted, c source.Contract) *source.Source {
	t.Helper()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	src, err := source.NewSource(source.SourceConfig{URL: srv.URL + "/v2/orders?tenant=acme", Contract: c, MaxAttempts: 1})
	require.NoError(t, err)
	return src
}

// TestContractBadAnswers: an answer or a record that does not fit the contract is an error
// naming the page, the record and the path; nothing after it is returned.
func TestContractBadAnswers(t *testing.T) {
	schema, err := avro.ParseSchema(orderSchema)
	require.NoError(t, err)
	cases := []struct {
		name  string
		body  string
		field string   // RecordError.Field; "" for a page error
		want  []string // in the error text
	}{
		{"records path missing", `{"result": {}}`, "", []string{"page 1", `no "result.orders" array`}},
		{"records not an array", `{"result": {"orders": {"a": 1}}}`, "", []string{`"result.orders" is not an array`}},
		{"parent not an object", `{"result": [1]}`, "", []string{`"result" is not an object`}},
		{"next token an object", `{"result": {"orders": []}, "paging": {"more": {"x": 1}}}`, "", []string{`next token at "paging.more"`}},
		{"id missing", `{"result": {"orders": [{"meta": {"modified": 1}}]}}`, "order_id", []string{"page 1", "record 0", "missing or null"}},
		{"id fraction", `{"result": {"orders": [{"order_id": 1.5, "meta": {"modified": 1}}]}}`, "order_id", []string{"want a string or an integer"}},
		{"time wrong type", `{"result": {"orders": [{"order_id": 1, "meta": {"modified": true}}]}}`, "meta.modified", []string{"got boolean true"}},
		{"enum symbol", `{"result": {"orders": [{"order_id": 1, "meta": {"modified": 1}, "status": "lost"}]}}`, "status", []string{"lost"}},
		{"record not an object", `{"result": {"orders": [42]}}`, "", []string{"record 0", "want a JSON object"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api := &sourcetest.Scripted{Answers: []sourcetest.Answer{{Status: 200, Body: c.body}}}
			src := newContractSource(t, api, ordersContract())
			codec, err := avro.NewCodec()
			require.NoError(t, err)
			w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{Schema: schema, Now: fixedNow}, nil)
			recs, err := w.Next(context.Background())
			require.Error(t, err)
			assert.Empty(t, recs)
			for _, s := range c.want {
				assert.Contains(t, err.Error(), s)
			}
			var re *source.RecordError
			if c.field != "" {
				require.ErrorAs(t, err, &re)
				assert.Equal(t, c.field, re.Field)
				assert.Equal(t, 1, re.Page)
			}
			assert.True(t, w.Position().LastUpdatedAt.Equal(cursor.Start), "the position did not move")
		})
	}
}

// TestContractNextToken: the forms of the next token, and a full page of one time that the API
// gives no way to page through.
func TestContractNextToken(t *testing.T) {
	rec := func(id int, ms int64) string {
		b, _ := json.Marshal(map[string]any{"order_id": id, "meta": map[string]any{"modified": ms}, "status": "open"})
		return string(b)
	}
	page := func(next string, recs ...string) sourcetest.Answer {
		body := `{"result": {"orders": [`
		for i, r := range recs {
			if i > 0 {
				body += ","
			}
			body += r
		}
		return sourcetest.Answer{Status: 200, Body: body + `]}, "paging": {"more": ` + next + `}}`}
	}
	schema, err := avro.ParseSchema(orderSchema)
	require.NoError(t, err)
	cases := []struct {
		name     string
		afterID  bool
		answers  []sourcetest.Answer
		requests []string // the token or since/after_id of each request after the first
		ids      int
		wantErr  string
	}{
		{"string token after an empty page", false, []sourcetest.Answer{page(`"tok-1"`), page(`null`, rec(1, 5))}, []string{"cursor=tok-1"}, 1, ""},
		{"number token", false, []sourcetest.Answer{page(`42`), page(`""`, rec(1, 5))}, []string{"cursor=42"}, 1, ""},
		{"false ends", true, []sourcetest.Answer{page(`false`, rec(1, 5), rec(2, 6))}, nil, 2, ""},
		// The record the failing page brought (3) is returned with the error: the position
		// covers it, so it must reach Kafka before the cursor does.
		{"tie without a token or after-id", false, []sourcetest.Answer{page(`true`, rec(1, 5), rec(2, 5)), page(`true`, rec(1, 5), rec(2, 5), rec(3, 5))}, []string{"modified_since=5"}, 3,
			"configure its after-id parameter"},
		// A page full of one time: the probe (since=6) finds nothing later, so the tie may still
		// grow; it is paged through by (time, id) and the pass ends inside it.
		{"tie paged by after-id", true, []sourcetest.Answer{page(`true`, rec(1, 5), rec(2, 5)), page(`false`), page(`true`, rec(3, 5), rec(4, 5)), page(`false`, rec(5, 5))},
			[]string{"modified_since=6", "after_id=2&modified_since=5", "after_id=4&modified_since=5"}, 5, ""},
		// The probe finds a later record: the tie is settled; its first page is read again (it
		// was read before the probe), then the tie is paged through by position.
		{"settled tie", true, []sourcetest.Answer{page(`true`, rec(1, 5), rec(2, 5)), page(`true`, rec(9, 6)), page(`true`, rec(1, 5), rec(2, 5)), page(`true`, rec(3, 5), rec(4, 5)), page(`false`, rec(5, 5))},
			[]string{"modified_since=6", "modified_since=5", "after_id=2&modified_since=5", "after_id=4&modified_since=5"}, 5, ""},
		// A tie that may have grown while it was paged through: the page that shows a later time
		// (6) is taken only up to the tie, the tie is read again from its start (record 1 changed
		// within time 5 meanwhile, behind the position: it is delivered), then the walk goes on.
		{"unsettled tie read again before leaving it", true, []sourcetest.Answer{page(`true`, rec(1, 5), rec(2, 5)), page(`false`), page(`true`, rec(3, 5), rec(4, 6)),
			page(`true`, `{"order_id": 1, "meta": {"modified": 5}, "status": "paid"}`, rec(2, 5)), page(`true`, rec(3, 5), rec(4, 6)), page(`false`, rec(4, 6))},
			[]string{"modified_since=6", "after_id=2&modified_since=5", "modified_since=5", "after_id=2&modified_since=5", "modified_since=6"}, 5, ""},
		{"after-id ignored by the API", true, []sourcetest.Answer{page(`true`, rec(1, 5), rec(2, 5)), page(`true`, rec(1, 5), rec(2, 5))},
			[]string{"modified_since=6", "after_id=2&modified_since=5", "after_id=2&modified_since=5", "after_id=2&modified_since=5"}, 2, "brought nothing new"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := ordersContract()
			k.PageSizeParam, k.PageSize, k.TotalPath = "", 0, nil
			if !c.afterID {
				k.AfterIDParam = ""
			}
			api := &sourcetest.Scripted{Answers: c.answers}
			src := newContractSource(t, api, k)
			codec, err := avro.NewCodec()
			require.NoError(t, err)
			// The clock is the data's: a tie with nothing after it may still grow.
			now := func() time.Time { return time.UnixMilli(10) }
			w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{Schema: schema, Now: now}, nil)
			ids := 0
			for {
				recs, err := w.Next(context.Background())
				ids += len(recs)
				if errors.Is(err, io.EOF) {
					require.Empty(t, c.wantErr)
					break
				}
				if c.wantErr != "" && err != nil {
					assert.ErrorIs(t, err, source.ErrNoProgress)
					assert.Contains(t, err.Error(), c.wantErr)
					break
				}
				require.NoError(t, err)
			}
			assert.Equal(t, c.ids, ids)
			reqs := api.Requests()[1:]
			for i := range reqs {
				reqs[i] = stripTenant(reqs[i])
			}
			assert.Equal(t, c.requests, nilIfEmpty(reqs))
		})
	}
}

func stripTenant(q string) string {
	v, _ := url.ParseQuery(q)
	v.Del("tenant")
	return v.Encode()
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
