package source_test

// Benchmarks of the source side: JSON decode, validation, Avro encode, fingerprint. Each reports
// ns/record and allocs/record so numbers compare across page sizes. They are short enough for CI
// (-benchtime 100x).

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/source"
)

const benchPageRecords = 1000

// benchPageBody is the JSON body of the first page of a playground with benchPageRecords
// records and that page size: one whole page, scroll_param null.
func benchPageBody(b *testing.B) []byte {
	b.Helper()
	_, url := sourcetest.Playground(b, benchPageRecords, benchPageRecords)
	resp, err := http.Get(url + "?updated_since=0001-01-01T00:00:00Z")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("page: status %d, %v", resp.StatusCode, err)
	}
	return body
}

// BenchmarkDecodePage fetches a page of 1000 users from memory and decodes it as Source.Fetch
// does (the envelope and every record's fields in one pass), without the Walker's checks and
// Avro encoding.
func BenchmarkDecodePage(b *testing.B) {
	body := benchPageBody(b)
	src, err := source.NewSource(source.SourceConfig{URL: "http://127.0.0.1:1/pagination/keyset", Client: &http.Client{Transport: staticTransport{body}}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	m := sourcetest.Mallocs()
	records := 0
	for b.Loop() {
		page, err := src.Fetch(b.Context(), 1, source.Query{Since: time.Unix(0, 0)})
		if err != nil {
			b.Fatal(err)
		}
		records += page.Len()
	}
	sourcetest.PerRecord(b, records, m)
}

// staticTransport answers every request with the same page, without a network.
type staticTransport struct{ body []byte }

func (t staticTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(t.body)),
		ContentLength: int64(len(t.body)),
		Request:       r,
	}, nil
}

// BenchmarkWalkerPage walks one page of 1000 users from the start: fetch, envelope, DecodeUser,
// ordering checks, Avro encode and fingerprint of each record: the source side of a pass.
//   - memory: the page comes from an in-memory http.RoundTripper (no network, no server).
//   - generic: the same page through the path of any other contract and of --schema: the
//     envelope split along the contract's paths, each record decoded to a JSON object and
//     mapped to the users schema by field name (avro.Schema).
//   - loopback: from a playground served by httptest on 127.0.0.1, so the server's rendering
//     and JSON encoding run in this process too.
func BenchmarkWalkerPage(b *testing.B) {
	codec, err := avro.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, cfg source.SourceConfig) {
		src, err := source.NewSource(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		m := sourcetest.Mallocs()
		records, valueBytes := 0, 0
		for b.Loop() {
			w := source.NewWalker(src, codec, cursor.Cursor{}, source.WalkOptions{}, nil)
			err := w.Drain(ctx, func(r source.Record) error {
				records, valueBytes = records+1, valueBytes+len(r.Value)
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		sourcetest.PerRecord(b, records, m)
		b.ReportMetric(float64(valueBytes)/float64(records), "value-bytes/record")
	}
	b.Run("memory", func(b *testing.B) {
		body := benchPageBody(b)
		b.SetBytes(int64(len(body)))
		run(b, source.SourceConfig{URL: "http://127.0.0.1:1/pagination/keyset", Client: &http.Client{Transport: staticTransport{body}}})
	})
	b.Run("generic", func(b *testing.B) {
		body := benchPageBody(b)
		b.SetBytes(int64(len(body)))
		// A page-size parameter is enough to leave the playground's one-pass decoder.
		contract := source.DefaultContract()
		contract.PageSizeParam, contract.PageSize = "limit", benchPageRecords
		run(b, source.SourceConfig{URL: "http://127.0.0.1:1/pagination/keyset", Contract: contract, Client: &http.Client{Transport: staticTransport{body}}})
	})
	b.Run("loopback", func(b *testing.B) {
		_, url := sourcetest.Playground(b, benchPageRecords, benchPageRecords)
		run(b, source.SourceConfig{URL: url})
	})
}
