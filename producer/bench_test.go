package producer_test

// Benchmarks of the source side (JSON decode, validation, Avro encode, fingerprint) and of a
// whole pass (Walker + Syncer + Kafka). Each reports ns/record and allocs/record so numbers
// compare across page sizes. They are short enough for CI (-benchtime 100x).
//
// BenchmarkSyncPass also drives the CPU profile of bench/run.sh: with
// KEYSETSYNC_BENCH_API_URL (an external playground) and KEYSETSYNC_BENCH_BROKERS (the real
// broker) set, one iteration is one full pass, like `keysetsync once` without the CLI.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/topic"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/producer"
)

const benchPageRecords = 1000

// benchAPI is a playground with n records served in-process on loopback.
func benchAPI(b *testing.B, n, pageSize int) (*playground.Server, string) {
	b.Helper()
	api, err := playground.New(playground.Config{Records: n, PageSize: pageSize, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	b.Cleanup(srv.Close)
	return api, srv.URL + playground.KeysetPath
}

// benchPageBody is the JSON body of the first page of a playground with benchPageRecords
// records and that page size: one whole page, scroll_param null.
func benchPageBody(b *testing.B) []byte {
	b.Helper()
	_, url := benchAPI(b, benchPageRecords, benchPageRecords)
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

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// perRecord reports ns/record and allocs/record; records is the total over all iterations and
// m the malloc count read before the loop.
func perRecord(b *testing.B, records int, m uint64) {
	b.StopTimer()
	after := mallocs()
	if records == 0 {
		b.Fatal("no records handled")
	}
	n := float64(records)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/record")
	b.ReportMetric(float64(after-m)/n, "allocs/record")
	b.ReportMetric(n/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkDecodePage fetches a page of 1000 users from memory and decodes it as Source.Fetch
// does (the envelope and every record's fields in one pass), without the Walker's checks and
// Avro encoding.
func BenchmarkDecodePage(b *testing.B) {
	body := benchPageBody(b)
	src, err := producer.NewSource(producer.SourceConfig{URL: "http://127.0.0.1:1/pagination/keyset", Client: &http.Client{Transport: staticTransport{body}}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	m := mallocs()
	records := 0
	for b.Loop() {
		page, err := src.Fetch(b.Context(), 1, producer.Query{Since: time.Unix(0, 0)})
		if err != nil {
			b.Fatal(err)
		}
		records += page.Len()
	}
	perRecord(b, records, m)
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
	run := func(b *testing.B, cfg producer.SourceConfig) {
		src, err := producer.NewSource(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		m := mallocs()
		records, valueBytes := 0, 0
		for b.Loop() {
			w := producer.NewWalker(src, codec, cursor.Cursor{}, producer.WalkOptions{}, nil)
			for {
				recs, err := w.Next(ctx)
				for _, r := range recs {
					valueBytes += len(r.Value)
				}
				records += len(recs)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		perRecord(b, records, m)
		b.ReportMetric(float64(valueBytes)/float64(records), "value-bytes/record")
	}
	b.Run("memory", func(b *testing.B) {
		body := benchPageBody(b)
		b.SetBytes(int64(len(body)))
		run(b, producer.SourceConfig{URL: "http://127.0.0.1:1/pagination/keyset", Client: &http.Client{Transport: staticTransport{body}}})
	})
	b.Run("generic", func(b *testing.B) {
		body := benchPageBody(b)
		b.SetBytes(int64(len(body)))
		// A page-size parameter is enough to leave the playground's one-pass decoder.
		contract := producer.DefaultContract()
		contract.PageSizeParam, contract.PageSize = "limit", benchPageRecords
		run(b, producer.SourceConfig{URL: "http://127.0.0.1:1/pagination/keyset", Contract: contract, Client: &http.Client{Transport: staticTransport{body}}})
	})
	b.Run("loopback", func(b *testing.B) {
		_, url := benchAPI(b, benchPageRecords, benchPageRecords)
		run(b, producer.SourceConfig{URL: url})
	})
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkSyncPass runs whole passes from the start: Walker, message build, produce with
// acks=all, cursor commit (in memory: MemStore), batches of 1000 records. Every iteration
// starts from an empty cursor, so it re-sends every record of the API.
//
// Environment (all optional):
//
//	KEYSETSYNC_BENCH_API_URL    keyset endpoint of an external API (default: an in-process playground)
//	KEYSETSYNC_BENCH_RECORDS    records of the in-process playground (default 1000)
//	KEYSETSYNC_BENCH_PAGE_SIZE  its page size (default 1000)
//	KEYSETSYNC_BENCH_BROKERS    a real broker (default: in-process kfake); a fresh topic is
//	                            created there and deleted at the end
func BenchmarkSyncPass(b *testing.B) {
	url := os.Getenv("KEYSETSYNC_BENCH_API_URL")
	if url == "" {
		_, url = benchAPI(b, envInt(b, "KEYSETSYNC_BENCH_RECORDS", 1000), envInt(b, "KEYSETSYNC_BENCH_PAGE_SIZE", 1000))
	}
	var brokers []string
	if v := os.Getenv("KEYSETSYNC_BENCH_BROKERS"); v != "" {
		brokers = strings.Split(v, ",")
	} else {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(c.Close)
		brokers = c.ListenAddrs()
	}
	tr := &kafka.Transport{ClientID: "keysetsync-bench", DialTimeout: 5 * time.Second}
	b.Cleanup(tr.CloseIdleConnections)
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr, Timeout: 30 * time.Second}
	ctx := context.Background()
	name := fmt.Sprintf("bench-syncpass-%08x", rand.Uint32())
	if _, err := topic.Ensure(ctx, client, topic.Spec{Name: name, Partitions: 1, ReplicationFactor: 1}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = client.DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{name}})
	})
	codec, err := avro.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	src, err := producer.NewSource(producer.SourceConfig{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	const batch = 1000
	b.ReportAllocs()
	m := mallocs()
	records := 0
	for b.Loop() {
		s, err := producer.New(producer.Config{
			Pipeline: "bench", Source: src, Topic: name, Store: cursor.NewMemStore(), Codec: codec,
			NewWriter:    func() *kafka.Writer { return producer.NewWriter(client, batch) },
			BatchRecords: batch, WriteTimeout: time.Minute,
		})
		if err != nil {
			b.Fatal(err)
		}
		st, err := s.Sync(ctx)
		s.Close()
		if err != nil {
			b.Fatal(err)
		}
		records += st.Produced
	}
	perRecord(b, records, m)
}
