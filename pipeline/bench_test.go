package pipeline_test

// Benchmark of a whole pass (Walker + Pipeline + Kafka); the source side alone is benchmarked in
// package source. It reports ns/record and allocs/record so numbers
// compare across page sizes. They are short enough for CI (-benchtime 100x).
//
// BenchmarkSyncPass also drives the CPU profile of bench/run.sh: with
// KEYSETSYNC_BENCH_API_URL (an external playground) and KEYSETSYNC_BENCH_BROKERS (the real
// broker) set, one iteration is one full pass, like `keysetsync once` without the CLI.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/sourcetest"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/source"
)

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
//	KEYSETSYNC_BENCH_LATENCY    latency the in-process playground adds to every page (default 0)
//	KEYSETSYNC_BENCH_FETCH_CONCURRENCY  pipeline.Config.FetchConcurrency (default 1: sequential)
//	KEYSETSYNC_BENCH_BROKERS    a real broker (default: in-process kfake); a fresh topic is
//	                            created there and deleted at the end
func BenchmarkSyncPass(b *testing.B) {
	url := os.Getenv("KEYSETSYNC_BENCH_API_URL")
	if url == "" {
		var latency time.Duration
		if v := os.Getenv("KEYSETSYNC_BENCH_LATENCY"); v != "" {
			var err error
			if latency, err = time.ParseDuration(v); err != nil {
				b.Fatalf("KEYSETSYNC_BENCH_LATENCY=%q: %v", v, err)
			}
		}
		_, url = sourcetest.PlaygroundWith(b, playground.Config{Records: envInt(b, "KEYSETSYNC_BENCH_RECORDS", 1000),
			PageSize: envInt(b, "KEYSETSYNC_BENCH_PAGE_SIZE", 1000), Latency: latency, Seed: 1})
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
	client, err := kafka.NewClient(kafka.Config{Brokers: brokers, ClientID: "keysetsync-bench", DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(client.Close)
	ctx := context.Background()
	name := fmt.Sprintf("bench-syncpass-%08x", rand.Uint32())
	if _, err := client.EnsureTopic(ctx, kafka.TopicSpec{Name: name, Partitions: 1, ReplicationFactor: 1}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = client.DeleteTopics(context.Background(), name) })
	codec, err := avro.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	src, err := source.NewSource(source.SourceConfig{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	const batch = 1000
	b.ReportAllocs()
	m := sourcetest.Mallocs()
	records := 0
	for b.Loop() {
		out, err := kafka.NewSink(kafka.SinkConfig{Client: client, BatchRecords: batch})
		if err != nil {
			b.Fatal(err)
		}
		s, err := pipeline.New(pipeline.Config{
			Pipeline: "bench", Source: src, Topic: name, Store: cursor.NewMemStore(), Codec: codec,
			Sink: out, BatchRecords: batch, WriteTimeout: time.Minute, FetchConcurrency: envInt(b, "KEYSETSYNC_BENCH_FETCH_CONCURRENCY", 1),
		})
		if err != nil {
			b.Fatal(err)
		}
		st, err := s.Pass(ctx)
		out.Close()
		if err != nil {
			b.Fatal(err)
		}
		records += st.Produced
	}
	sourcetest.PerRecord(b, records, m)
}
