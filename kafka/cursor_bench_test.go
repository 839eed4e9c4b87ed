package kafka_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/kafka"
)

// BenchmarkCursorLoad measures one cursor Load against a cursor topic of N records on the real
// broker, side by side:
//
//	followed: CursorStore.Load, the store having read the topic once (its first Load, not
//	          timed; reported as first_load_ms): one ListOffsets, nothing new to read
//	scan:     what Load did before the store followed its topic: a read_committed scan of
//	          the whole topic, keeping the pipeline's record of the highest Seq
//
// The topic holds N records of 1,000 pipelines (fewer when N is smaller), each a cursor of
// about 200 bytes, uncompacted: created with the broker's segment defaults, so its active
// segment (1 GiB) holds them all, as an older keysetsync's cursor topic does.
//
// KEYSETSYNC_CURSOR_BENCH_SIZES lists the N (default "1000": what scripts/test.sh runs;
// bench/run.sh sets "1000 100000 1000000").
func BenchmarkCursorLoad(b *testing.B) {
	tg := kafkatest.Real(b)
	sizes := []int{1000}
	if v := os.Getenv("KEYSETSYNC_CURSOR_BENCH_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Fields(v) {
			n, err := strconv.Atoi(f)
			if err != nil || n <= 0 {
				b.Fatalf("KEYSETSYNC_CURSOR_BENCH_SIZES: %q is not a positive integer", f)
			}
			sizes = append(sizes, n)
		}
	}
	ctx := context.Background()
	for _, n := range sizes {
		topic := kafkatest.Topic(b, "cursorbench")
		kafkatest.CreateTopic(b, tg, topic, 1, map[string]string{"cleanup.policy": "compact"})
		b.Cleanup(func() { _ = tg.Kafka(b).DeleteTopics(ctx, topic) })
		pipelines := min(n, 1000)
		benchFillCursors(b, tg, topic, n, pipelines)
		pipeline := fmt.Sprintf("p-%04d", pipelines/2)
		k := pipelines / 2
		want := int64((n-1-k)/pipelines*pipelines + k) // the seq of its last record

		b.Run(fmt.Sprintf("records=%d/followed", n), func(b *testing.B) {
			s, err := kafka.NewCursorStore(ctx, kafka.CursorStoreConfig{Client: tg.Kafka(b), Topic: topic})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			start := time.Now()
			benchLoad(b, want, func() (cursor.Cursor, error) { return s.Load(ctx, pipeline) })
			first := time.Since(start)
			for b.Loop() {
				benchLoad(b, want, func() (cursor.Cursor, error) { return s.Load(ctx, pipeline) })
			}
			b.ReportMetric(float64(first.Microseconds())/1000, "first_load_ms")
		})
		b.Run(fmt.Sprintf("records=%d/scan", n), func(b *testing.B) {
			client := tg.Kafka(b)
			for b.Loop() {
				benchLoad(b, want, func() (cursor.Cursor, error) { return benchScanLoad(ctx, client, topic, pipeline) })
			}
		})
		if err := tg.Kafka(b).DeleteTopics(ctx, topic); err != nil { // before the next size is written
			b.Fatal(err)
		}
	}
}

func benchLoad(b *testing.B, want int64, load func() (cursor.Cursor, error)) {
	c, err := load()
	if err != nil {
		b.Fatal(err)
	}
	if c.Seq != want {
		b.Fatalf("loaded seq %d, want %d", c.Seq, want)
	}
}

// benchScanLoad is CursorStore.Load as it was before it followed its topic: a scan of the
// whole topic per Load.
func benchScanLoad(ctx context.Context, c *kafka.Client, topic, pipeline string) (cursor.Cursor, error) {
	var best cursor.Cursor
	found := false
	err := c.Scan(ctx, topic, func(r kafka.Record) error {
		if string(r.Key) != pipeline {
			return nil
		}
		if r.Value == nil {
			best, found = cursor.Cursor{}, false
			return nil
		}
		cur, err := cursor.Unmarshal(r.Value)
		if err != nil {
			return err
		}
		if !found || cur.Seq >= best.Seq {
			best, found = cur, true
		}
		return nil
	})
	if err == nil && !found {
		err = cursor.ErrNotFound
	}
	return best, err
}

// benchFillCursors writes n cursor records of the given number of pipelines to partition 0 of
// topic, round robin, record i with seq i: a Produce per 512 KiB of records (the topic takes
// batches of up to max.message.bytes, 1 MiB), uncompressed as the cursor store writes them.
func benchFillCursors(b *testing.B, tg kafkatest.Target, topic string, n, pipelines int) {
	b.Helper()
	c := tg.Client(b)
	var recs []kafkago.Record
	size := 0
	flush := func() {
		res, err := c.Produce(context.Background(), &kafkago.ProduceRequest{Topic: topic, Partition: 0, RequiredAcks: kafkago.RequireAll,
			Records: kafkago.NewRecordReader(recs...)})
		if err == nil {
			err = res.Error
		}
		if err != nil {
			b.Fatalf("fill %s: %v", topic, err)
		}
		recs, size = recs[:0], 0
	}
	for i := range n {
		p := fmt.Sprintf("p-%04d", i%pipelines)
		v, err := cursor.Marshal(cursor.Cursor{Pipeline: p, LastUpdatedAt: time.Unix(1700000000+int64(i), 0).UTC(), Seq: int64(i),
			Delivered: map[string]string{fmt.Sprintf("id-%d", i): "0123456789abcdef"}, CommittedAt: time.Unix(1700000000, 0), Records: int64(i)})
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, kafkago.Record{Key: kafkago.NewBytes([]byte(p)), Value: kafkago.NewBytes(v)})
		if size += len(p) + len(v) + 16; size >= 512<<10 {
			flush()
		}
	}
	if len(recs) > 0 {
		flush()
	}
}
