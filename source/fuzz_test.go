package source_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/source"
)

// FuzzPage feeds arbitrary bodies through the page parser, the record decoder and the Avro
// encoder: no input may panic, every error must be one of the package's kinds, and every record
// that is accepted must survive an Avro round trip unchanged. Seeds: testdata/fuzz/FuzzPage.
func FuzzPage(f *testing.F) {
	f.Add([]byte(`{"data":[{"id":"a","name":"Zoë","address":"1 St\nX","updatedAt":"2024-01-01T00:00:00Z","createdAt":"2023-01-01T00:00:00Z"}],"scroll_param":"MjAyNA=="}`))
	f.Add([]byte(`{"data":[],"scroll_param":null}`))
	f.Add([]byte(`{"data":[{"id":1}]}`))
	// Integer ids are keys as their decimal text; fractions, exponents and numbers beyond int64
	// are refused, on either decoder.
	f.Add([]byte(`{"data":[{"id":17,"updatedAt":"2024-01-01T00:00:00Z"},{"id":-9223372036854775808,"updatedAt":"2024-01-01T00:00:00Z"}],"scroll_param":"x"}`))
	f.Add([]byte(`{"data":[{"id":1.5,"updatedAt":"2024-01-01T00:00:00Z"},{"id":9223372036854775808,"updatedAt":"2024-01-01T00:00:00Z"},{"id":1e3},{"id":"caf\u00e9","name":5}]}`))
	codec, err := avro.NewCodec()
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, body []byte) {
		records, _, err := source.ParsePage(body)
		// What Source.Fetch makes of the same body (a one-pass decode when it can) must agree
		// with the record-by-record path.
		src, serr := source.NewSource(source.SourceConfig{URL: "http://127.0.0.1:1/k", Client: &http.Client{Transport: staticTransport{body}}})
		require.NoError(t, serr)
		page, ferr := src.Fetch(t.Context(), 1, source.Query{})
		if err != nil {
			require.ErrorIs(t, ferr, source.ErrBadPage)
			return
		}
		require.NoError(t, ferr)
		require.Equal(t, len(records), page.Len())
		for i, raw := range records {
			u, err := source.DecodeUser(raw, 1, i)
			fu, ferr := page.User(1, i)
			require.Equal(t, err == nil, ferr == nil, "record %d: record by record %v, one pass %v", i, err, ferr)
			if err == nil {
				require.Equal(t, u, fu)
			}
			require.Equal(t, string(raw), string(page.Raw(i)))
			if err != nil {
				var re *source.RecordError
				if !errors.As(err, &re) || !errors.Is(err, source.ErrInvalidRecord) {
					t.Fatalf("record %d: error of an unexpected kind: %v", i, err)
				}
				continue
			}
			b, err := codec.Append(nil, &u)
			if err != nil {
				continue // refused under the schema (empty id), with an error, not a panic
			}
			back, err := codec.Decode(b)
			require.NoError(t, err)
			require.Equal(t, u, back)
		}
	})
}

// FuzzContractPage feeds arbitrary bodies through another contract (nested paths, a has_more
// flag, epoch-millisecond times, integer ids) and a custom schema: no input may panic, every
// error must be one of the package's kinds, and every accepted record must decode under the
// schema with its id as key. Seeds: testdata/fuzz/FuzzContractPage.
func FuzzContractPage(f *testing.F) {
	f.Add([]byte(`{"result": {"orders": [{"order_id": 7, "meta": {"modified": 1709296245123}, "status": "open"}]}, "paging": {"more": true, "total": 5}}`))
	f.Add([]byte(`{"result": {"orders": [{"order_id": "12", "meta": {"modified": "1709296247000"}, "status": "paid", "channel": 5}]}, "paging": {"more": "tok"}}`))
	f.Add([]byte(`{"result": {"orders": [{"order_id": 1.5}, {"meta": []}, 3]}, "paging": []}`))
	f.Add([]byte(`{"result": []}`))
	schema, err := avro.ParseSchema(orderSchema)
	require.NoError(f, err)
	codec, err := avro.NewCodec()
	require.NoError(f, err)
	contract := ordersContract()
	f.Fuzz(func(t *testing.T, body []byte) {
		src, err := source.NewSource(source.SourceConfig{URL: "http://127.0.0.1:1/k", Contract: contract, MaxAttempts: 1,
			Client: &http.Client{Transport: staticTransport{body}}})
		require.NoError(t, err)
		w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{Schema: schema, SkipInvalid: true, Now: fixedNow}, nil)
		recs, err := w.Next(t.Context())
		if err != nil && !errors.Is(err, source.ErrBadPage) && !errors.Is(err, source.ErrInvalidRecord) && !errors.Is(err, source.ErrNoProgress) {
			t.Fatalf("error of an unexpected kind: %v", err)
		}
		for _, r := range recs {
			if r.Invalid != nil {
				require.ErrorIs(t, r.Invalid, source.ErrInvalidRecord)
				continue
			}
			v, err := schema.Decode(r.Value)
			require.NoError(t, err)
			require.Equal(t, r.ID, strings.Trim(toString(v["order_id"]), `"`))
		}
	})
}
