// Command incremental measures an incremental sync: a playground runs in this process (httptest
// on 127.0.0.1), `keysetsync once` (a subprocess) syncs it in full into fresh topics, then
// --percent of the records are updated and `keysetsync once` runs again. It prints one JSON line
// with the pages, records and time of both passes.
//
// The playground's clock is driven here: the updates get updatedAt values just after the
// newest initial record, --per-second of them per second, so no second holds more records than
// a page (a wider tie is a different problem, see README "Ties"), and every timestamp stays in
// the past. The records to update are picked at random; a record picked twice counts once.
//
//	incremental --bin bin/keysetsync --brokers 127.0.0.1:9092 --records 100000 --page-size 1000
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"time"

	"github.com/keysetsync/keysetsync/bench/internal/benchkit"
	"github.com/keysetsync/keysetsync/playground"
)

func main() {
	bin := flag.String("bin", "bin/keysetsync", "keysetsync binary")
	run := benchkit.NewRunFlags("incremental")
	records := flag.Int("records", 100000, "records in the playground")
	pageSize := flag.Int("page-size", 1000, "page size of the playground")
	percent := flag.Float64("percent", 1, "percentage of the records updated between the passes")
	perSecond := flag.Int("per-second", 10, "updates sharing one updatedAt second")
	timeout := flag.Duration("timeout", 15*time.Minute, "bound on the whole measurement")
	run.Parse()
	bs := run.BrokerList
	if *perSecond < 1 || *perSecond >= *pageSize {
		benchkit.Fatal("incremental", fmt.Errorf("--per-second %d must be between 1 and the page size - 1", *perSecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	api, err := playground.New(playground.Config{
		Records: *records, PageSize: *pageSize, Seed: 1,
		Clock: func() time.Time { return time.Unix(0, clock.Load()) },
	})
	if err != nil {
		benchkit.Fatal("incremental", err)
	}
	srv := httptest.NewServer(api.Handler()) // 127.0.0.1:0
	defer srv.Close()
	url := srv.URL + playground.KeysetPath

	client, topic, cursorTopic, closeRun := run.Open("incr", os.Stdout)
	defer closeRun()
	args := benchkit.SyncArgs(url, bs, topic, cursorTopic, "bench")

	full, err := benchkit.RunOnce(ctx, *bin, args...)
	if err != nil {
		benchkit.Fatal("incremental: full sync", err)
	}
	if got := full.Pass.Int("records_produced"); got != int64(*records) {
		benchkit.Fatal("incremental", fmt.Errorf("full sync produced %d records, want %d", got, *records))
	}

	// Updates: per-second of them per second, starting one second after the newest record.
	cfg := api.Config()
	newest := cfg.Start.Unix() + int64((*records-1)/cfg.TieWidth)
	n := int(math.Round(float64(*records) * *percent / 100))
	distinct := map[string]bool{}
	t0 := time.Now()
	for i, sec := 0, int64(1); i < n; i, sec = i+*perSecond, sec+1 {
		clock.Store(time.Unix(newest+sec, 0).UnixNano())
		for _, u := range api.Update(min(*perSecond, n-i)) {
			distinct[u.ID] = true
		}
	}
	updateSecs := time.Since(t0).Seconds()

	incr, err := benchkit.RunOnce(ctx, *bin, args...)
	if err != nil {
		benchkit.Fatal("incremental: incremental sync", err)
	}
	produced := incr.Pass.Int("records_produced")
	if produced != int64(len(distinct)) {
		benchkit.Fatal("incremental", fmt.Errorf("incremental sync produced %d records, want the %d updated", produced, len(distinct)))
	}
	msgs, err := benchkit.Messages(ctx, client, topic)
	if err != nil {
		benchkit.Fatal("incremental", err)
	}
	pass := func(o benchkit.Once) map[string]any {
		return map[string]any{
			"pages": o.Pass.Int("pages"), "fetched": o.Pass.Int("records_fetched"), "produced": o.Pass.Int("records_produced"),
			"skipped": o.Pass.Int("records_skipped"), "batches": o.Pass.Int("batches"),
			"pass_s": o.Pass.Seconds("duration"), "wall_s": o.Wall.Seconds(),
		}
	}
	benchkit.Emit(map[string]any{
		"records": *records, "page_size": *pageSize, "percent": *percent, "per_second": *perSecond,
		"updated": len(distinct), "update_s": updateSecs, "topic_messages": msgs,
		// The fewest pages a pass could fetch for these records: full pages, plus the last one.
		"min_pages": (len(distinct) + *pageSize - 1) / *pageSize,
		"full":      pass(full), "incremental": pass(incr),
	})
}
