// Command latency measures how long an update in the API takes to become readable in Kafka
// when keysetsync runs continuously (`keysetsync run --interval`).
//
// A playground runs in this process (httptest on 127.0.0.1). `keysetsync run` (a subprocess)
// syncs it into fresh topics; once its first pass has finished, this program updates --rate
// records per second for --duration, each record at most once, noting the time just before
// each update. A kafka.Reader follows the data topic from its end, reading committed data as a
// consumer with isolation.level=read_committed does (the Reader's default): with exactly-once
// delivery a record is readable only once its batch's transaction has committed, so that commit
// is part of the latency measured. For every message
// whose key, keysetsync.updated_at header and Avro value match an update, records the time
// from the update to the message being read. It prints one JSON line with the percentiles.
//
//	latency --bin bin/keysetsync --brokers 127.0.0.1:9092 --interval 1s --duration 30s --rate 5 --delivery exactly-once
package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/bench/internal/benchkit"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/playground"
)

type update struct {
	at        time.Time // just before UpdateIDs
	updatedAt string
	company   string
	latency   time.Duration // 0 until read
}

func main() {
	bin := flag.String("bin", "bin/keysetsync", "keysetsync binary")
	run := benchkit.NewRunFlags("latency")
	records := flag.Int("records", 10000, "records in the playground")
	pageSize := flag.Int("page-size", 1000, "page size of the playground")
	interval := flag.Duration("interval", time.Second, "keysetsync run --interval")
	duration := flag.Duration("duration", 30*time.Second, "how long updates are made")
	rate := flag.Float64("rate", 5, "updates per second")
	timeout := flag.Duration("timeout", 5*time.Minute, "bound on the whole measurement")
	logPath := flag.String("log", "", "write keysetsync's log here")
	delivery := flag.String("delivery", "", "keysetsync run --delivery (exactly-once or at-least-once); empty: the binary's default")
	run.Parse()
	bs := run.BrokerList
	n := int(math.Ceil(duration.Seconds() * *rate))
	if *rate <= 0 || n < 1 || n > *records {
		benchkit.Fatal("latency", fmt.Errorf("--rate x --duration = %d updates: must be between 1 and --records", n))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	api, err := playground.New(playground.Config{Records: *records, PageSize: *pageSize, Seed: 1})
	if err != nil {
		benchkit.Fatal("latency", err)
	}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	ids := make([]string, 0, *records)
	for _, u := range api.Snapshot() {
		ids = append(ids, u.ID)
	}
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })

	client, topic, cursorTopic, closeRun := run.Open("lat", os.Stderr)
	defer closeRun()

	// keysetsync run, its JSON log scanned for pass summaries.
	args := append([]string{"run", "--interval", interval.String(), "--topic-partitions", "1"},
		benchkit.SyncArgs(srv.URL+playground.KeysetPath, bs, topic, cursorTopic, "bench")...)
	if *delivery != "" {
		args = append(args, "--delivery", *delivery)
	}
	cmd := benchkit.Command(context.Background(), *bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		benchkit.Fatal("latency", err)
	}
	if err := cmd.Start(); err != nil {
		benchkit.Fatal("latency", err)
	}
	exited := make(chan error, 1)
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	var logw io.Writer = io.Discard
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			benchkit.Fatal("latency", err)
		}
		defer f.Close()
		logw = f
	}
	var (
		mu     sync.Mutex
		passes []benchkit.LogLine
	)
	firstPass := make(chan benchkit.LogLine, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			fmt.Fprintln(logw, sc.Text())
			for _, l := range benchkit.ParseLog(sc.Bytes()) {
				if l.Msg() != "pass finished" {
					continue
				}
				mu.Lock()
				passes = append(passes, l)
				if len(passes) == 1 {
					firstPass <- l
				}
				mu.Unlock()
			}
		}
	}()
	go func() {
		<-scanned
		exited <- cmd.Wait()
	}()
	fail := func(err error) {
		stop()
		benchkit.Fatal("latency", err)
	}

	select {
	case l := <-firstPass:
		if ok, _ := l["ok"].(bool); !ok || l.Int("records_produced") != int64(*records) {
			fail(fmt.Errorf("first pass: ok=%v records_produced=%d, want %d", l["ok"], l.Int("records_produced"), *records))
		}
	case err := <-exited:
		benchkit.Fatal("latency", fmt.Errorf("keysetsync run exited before its first pass: %v", err))
	case <-ctx.Done():
		fail(errors.New("no first pass before the timeout"))
	}
	mu.Lock()
	passesBefore := len(passes)
	mu.Unlock()

	// Follow the data topic from its end.
	end, err := benchkit.EndOffset(ctx, client, topic, 0)
	if err != nil {
		fail(err)
	}
	// Read committed (Uncommitted unset): what a read_committed consumer sees, and when.
	reader := client.NewReader(kafka.ReaderConfig{Topic: topic, MaxWait: 50 * time.Millisecond})
	codec, err := avro.NewCodec()
	if err != nil {
		fail(err)
	}
	pending := map[string]*update{}
	received, unmatched := 0, 0
	done := make(chan struct{}) // closed when every update made has been read, after the last update
	allMade := false
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	// The reader's end is the wait for done below: a reader that stopped times it out.
	go reader.Follow(readCtx, 0, end, func(recs []kafka.Record) error { //nolint:errcheck
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, m := range recs {
			var hdr string
			for _, h := range m.Headers {
				if h.Key == pipeline.HeaderUpdatedAt {
					hdr = string(h.Value)
				}
			}
			u := pending[string(m.Key)]
			if u != nil && u.latency == 0 && hdr == u.updatedAt {
				if v, err := codec.Decode(m.Value); err == nil && v.Company != nil && *v.Company == u.company {
					u.latency = now.Sub(u.at)
					received++
				} else {
					unmatched++
				}
			} else {
				unmatched++
			}
			if allMade && received == len(pending) {
				close(done)
				allMade = false
			}
		}
		return nil
	})

	// Updates at a steady rate, each record once.
	tick := time.NewTicker(time.Duration(float64(time.Second) / *rate))
	for i := 0; i < n; i++ {
		select {
		case <-tick.C:
		case <-ctx.Done():
			fail(errors.New("timeout while updating"))
		}
		mu.Lock() // so the reader cannot see the message before the update is noted
		at := time.Now()
		us, err := api.UpdateIDs(ids[i])
		if err != nil || len(us) != 1 {
			mu.Unlock()
			fail(fmt.Errorf("update %s: %v", ids[i], err))
		}
		pending[ids[i]] = &update{at: at, updatedAt: us[0].UpdatedAt, company: us[0].Company}
		mu.Unlock()
	}
	tick.Stop()
	mu.Lock()
	if received == len(pending) {
		close(done)
	} else {
		allMade = true
	}
	mu.Unlock()
	wait := *interval*3 + 15*time.Second
	select {
	case <-done:
	case <-time.After(wait):
	case <-ctx.Done():
	}
	stopReading()
	stop()

	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for _, u := range pending {
		if u.latency > 0 {
			lat = append(lat, u.latency)
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return math.NaN()
		}
		i := int(math.Ceil(p*float64(len(lat)))) - 1
		return float64(lat[max(i, 0)]) / 1e6
	}
	var passMS []float64
	for _, l := range passes[passesBefore:] {
		passMS = append(passMS, l.Seconds("duration")*1000)
	}
	slices.Sort(passMS)
	medianPass := math.NaN()
	if len(passMS) > 0 {
		medianPass = passMS[len(passMS)/2]
	}
	var mean float64
	for _, d := range lat {
		mean += float64(d) / 1e6
	}
	if len(lat) > 0 {
		mean /= float64(len(lat))
	}
	res := map[string]any{
		"delivery": cmp.Or(*delivery, "default"), "isolation": "read_committed",
		"records": *records, "page_size": *pageSize, "interval_ms": interval.Milliseconds(), "rate": *rate,
		"updates": len(pending), "received": received, "missing": len(pending) - received, "unmatched_messages": unmatched,
		"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1), "mean_ms": mean,
		"passes": len(passMS), "median_pass_ms": medianPass,
		"target_p99_ms": interval.Milliseconds() + 200,
	}
	if len(lat) == 0 {
		for _, k := range []string{"p50_ms", "p90_ms", "p99_ms", "max_ms", "median_pass_ms"} {
			res[k] = nil
		}
	}
	benchkit.Emit(res)
	if received < len(pending) {
		fmt.Fprintf(os.Stderr, "latency: %d of %d updates never arrived (keysetsync log: %s)\n", len(pending)-received, len(pending), strings.TrimSpace(*logPath))
		os.Exit(1)
	}
}
