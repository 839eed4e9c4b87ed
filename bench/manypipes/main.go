// Command manypipes measures what many pipelines cost in one keysetsync process (issue 12): N
// pipelines in one config file, each with its own data topic and all sharing one cursor topic,
// every one of them reading the same playground API of R records, on the real broker.
//
// It measures, in this order, with the same binary:
//
//	single   `keysetsync once --fetch-concurrency 1` of ONE pipeline over a playground of N*R
//	         records: the CPU per record of a single pipeline doing the same total work the same
//	         way; measured right before and right after the first sync, the mean of the two is
//	         the baseline of the ratio. Sequential, as every pass of the N pipelines is (two
//	         pages each): with the default a pass this far behind may start a parallel backfill
//	         or not, depending on how fast the local API answers that moment, and a backfill's 8
//	         walkers cost about twice the CPU per record, so the ratio swung with it.
//	first    `keysetsync once --config` of the N pipelines from scratch: wall, CPU (user+sys),
//	         peak RSS, CPU per record and its ratio to single's
//	idle     the same again, nothing new: open (topic checks, cursor loads, producer ids) plus
//	         one empty pass per pipeline, the process as a user runs it
//	run      `keysetsync run --config --interval I`: after every pipeline finished its first
//	         (empty) pass, the CPU the process uses per "pass finished" over the next K passes
//	         of every pipeline: the steady cost of an idle pass; and the process's peak RSS
//
// With --profile DIR, keysetsync serves pprof (KEYSETSYNC_PPROF_ADDR on 127.0.0.1:0) and the run
// step saves a CPU profile of its window and a heap profile at its end into DIR.
//
// The playgrounds run in this process (httptest on 127.0.0.1), so their CPU is not the measured
// process's. One JSON line per step ("kind":"many_single", "many_first", "many_idle",
// "many_run") on stdout, then "many_summary" with the targets of the issue.
//
//	manypipes --bin bin/keysetsync --pipelines 1000 --records 2000
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keysetsync/keysetsync/bench/internal/benchkit"
	"github.com/keysetsync/keysetsync/playground"
)

// Targets of issue 12.
const (
	targetRSS        = 512 << 20 // peak RSS of the process
	targetIdleCPU    = 2 * time.Millisecond
	targetFirstRatio = 1.5
)

type result struct {
	Kind string `json:"kind"`
	// Size (the pipelines), Page (the page size) and Run key the line in bench/report.py.
	Size        int     `json:"size"`
	Page        int     `json:"page"`
	Run         int     `json:"run"`
	Pipelines   int     `json:"pipelines"`
	Records     int64   `json:"records"` // records produced in all
	WallS       float64 `json:"wall_s"`
	CPUS        float64 `json:"cpu_s"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	CPUPerRecUS float64 `json:"cpu_per_record_us,omitempty"`
	// run: passes counted in the window and the CPU per pass.
	Passes        int     `json:"passes,omitempty"`
	CPUPerPassMS  float64 `json:"cpu_per_pass_ms,omitempty"`
	IntervalS     float64 `json:"interval_s,omitempty"`
	PerPipelineMS float64 `json:"cpu_per_pipeline_ms,omitempty"` // idle: CPU / pipelines
	Env           string  `json:"env,omitempty"`
}

func main() {
	bin := flag.String("bin", "bin/keysetsync", "keysetsync binary")
	rf := benchkit.NewRunFlags("manypipes")
	n := flag.Int("pipelines", 100, "pipelines in the one process")
	records := flag.Int("records", 2000, "records of the API every pipeline reads")
	page := flag.Int("page-size", 1000, "records per page of the playground")
	interval := flag.Duration("interval", 5*time.Second, "run: --interval of every pipeline")
	passes := flag.Int("run-passes", 2, "run: idle passes of every pipeline measured after the first")
	single := flag.Bool("single", true, "measure one pipeline over N*R records first (the CPU-per-record baseline)")
	profile := flag.String("profile", "", "directory for cpu.prof and heap.prof of the run step (empty: no profiles)")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound on the whole measurement")
	run := flag.Int("run", 1, "run number written on every result line (bench/run.sh repeats the measurement)")
	logDir := flag.String("log-dir", "", "directory for the stderr of every keysetsync process (single.log, first.log, idle.log, run.log; empty: not kept)")
	rf.Parse()
	if *n < 1 || *records < 1 || *page < 2 || *passes < 1 {
		benchkit.Fatal("manypipes", fmt.Errorf("--pipelines, --records, --run-passes must be positive, --page-size at least 2"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	client, topic, cursorTopic, done := rf.Open("many", os.Stderr)
	defer done()
	// A failed step exits at once (benchkit.Fatal): the topics made so far, 1,000 of them on a
	// shared broker, are deleted first, as the deferred deleters would.
	var cleanups []func()
	fatal := func(what string, err error) {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		benchkit.Fatal(what, err)
	}
	names := make([]string, *n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-p%04d", topic, i)
	}
	if !rf.Keep() {
		del := benchkit.Deleter(client, "manypipes", os.Stderr, append(names, cursorTopic)...)
		defer del()
		cleanups = append(cleanups, del)
	}

	// Every topic of the cluster is in each Kafka client's metadata, refreshed every few seconds
	// and after each topic creation: its count weighs on every result, so it is reported.
	clusterTopics, err := benchkit.TopicsWithPrefix(ctx, client, "")
	if err != nil {
		fatal("manypipes: list topics", err)
	}
	api := startPlayground(*records, *page)
	defer api.Close()
	dir, err := os.MkdirTemp("", "manypipes-")
	if err != nil {
		fatal("manypipes", err)
	}
	defer os.RemoveAll(dir)
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	cfgPath := filepath.Join(dir, "pipelines.yaml")
	if err := writeConfig(cfgPath, api.URL+"/pagination/keyset", rf.BrokerList, cursorTopic, names); err != nil {
		fatal("manypipes", err)
	}
	env := strings.Join(benchkit.Env, " ")
	total := int64(*n) * int64(*records)

	// The single pipeline runs right before the first sync and again right after it: on a
	// shared machine the speed drifts by more than the ratio's margin within minutes, and the
	// mean of two measurements bracketing the first sync is its fairest baseline (both are
	// reported).
	singleOnce := func(kind, suffix string) *result {
		big := startPlayground(int(total), *page)
		defer big.Close()
		st, sct := topic+"-single"+suffix, cursorTopic+"-single"+suffix
		if !rf.Keep() {
			del := benchkit.Deleter(client, "manypipes", os.Stderr, st, sct)
			defer del()
			cleanups = append(cleanups, del) // a fatal exit skips the defer
		}
		fmt.Fprintf(os.Stderr, "manypipes: one pipeline over %d records (%s)\n", total, kind)
		o, err := benchkit.RunOnce(ctx, *bin, append(benchkit.SyncArgs(big.URL+"/pagination/keyset", rf.BrokerList, st, sct, "single"), "--fetch-concurrency", "1")...)
		keepLog(*logDir, kind+".log", o.Log)
		if err != nil {
			fatal("manypipes: "+kind, err)
		}
		if got := o.Pass.Int("records_produced"); got != total {
			fatal("manypipes: "+kind, fmt.Errorf("produced %d records, want %d", got, total))
		}
		r := onceResult(kind, 1, total, o, env)
		emit(r, *n, *page, *run)
		return r
	}
	var singleRes *result
	if *single {
		singleRes = singleOnce("many_single", "")
	}

	args := []string{"--config", cfgPath}
	fmt.Fprintf(os.Stderr, "manypipes: first sync of %d pipelines x %d records\n", *n, *records)
	first, err := manyOnce(ctx, *bin, args, *n, int64(*records))
	keepLog(*logDir, "first.log", first.Log)
	if err != nil {
		fatal("manypipes: first sync", err)
	}
	firstRes := onceResult("many_first", *n, total, first, env)
	emit(firstRes, *n, *page, *run)
	var singleAfter *result
	if *single {
		singleAfter = singleOnce("many_single_after", "-after")
	}

	fmt.Fprintf(os.Stderr, "manypipes: idle once of %d pipelines\n", *n)
	idle, err := manyOnce(ctx, *bin, args, *n, 0)
	keepLog(*logDir, "idle.log", idle.Log)
	if err != nil {
		fatal("manypipes: idle once", err)
	}
	idleRes := onceResult("many_idle", *n, 0, idle, env)
	idleRes.PerPipelineMS = idleRes.CPUS * 1000 / float64(*n)
	emit(idleRes, *n, *page, *run)

	fmt.Fprintf(os.Stderr, "manypipes: run --interval %s of %d pipelines, %d idle passes each\n", *interval, *n, *passes)
	runRes, err := measureRun(ctx, *bin, args, *interval, *n, *passes, *profile, *logDir)
	if err != nil {
		fatal("manypipes: run", err)
	}
	runRes.IntervalS, runRes.Env = interval.Seconds(), env
	emit(runRes, *n, *page, *run)

	sum := map[string]any{"kind": "many_summary", "size": *n, "page": *page, "run": *run, "pipelines": *n, "cluster_topics_at_start": len(clusterTopics), "records_each": *records, "page_size": *page,
		"peak_rss_mib":   max(firstRes.PeakRSSMiB, idleRes.PeakRSSMiB, runRes.PeakRSSMiB),
		"target_rss_mib": targetRSS >> 20, "idle_cpu_per_pass_ms": runRes.CPUPerPassMS,
		"target_idle_ms": float64(targetIdleCPU) / 1e6, "first_cpu_per_record_us": firstRes.CPUPerRecUS,
		"target_first_ratio": targetFirstRatio, "env": env}
	if singleRes != nil {
		base := (singleRes.CPUPerRecUS + singleAfter.CPUPerRecUS) / 2
		sum["single_cpu_per_record_us"] = base
		sum["single_before_cpu_per_record_us"], sum["single_after_cpu_per_record_us"] = singleRes.CPUPerRecUS, singleAfter.CPUPerRecUS
		sum["first_ratio"] = firstRes.CPUPerRecUS / base
	}
	benchkit.Emit(sum)
}

func emit(r *result, n, page, run int) {
	r.Size, r.Page, r.Run = n, page, run
	benchkit.Emit(r)
}

// keepLog writes a process's stderr to dir/name when dir is set; a failure only warns.
func keepLog(dir, name string, b []byte) {
	if dir == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "manypipes: %v\n", err)
	}
}

func startPlayground(records, page int) *httptest.Server {
	pg, err := playground.New(playground.Config{Records: records, PageSize: page})
	if err != nil {
		benchkit.Fatal("manypipes: playground", err)
	}
	return httptest.NewServer(pg.Handler())
}

// writeConfig writes the config file of the N pipelines: the shared settings at the top level,
// each pipeline its name and topic.
func writeConfig(path, apiURL string, brokers []string, cursorTopic string, names []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "api-url: %s\nbrokers: %s\ncursor-topic: %s\ntopic-replication-factor: 1\nretry-timeout: 0s\nlog-format: json\npipelines:\n",
		apiURL, strings.Join(brokers, ","), cursorTopic)
	for _, name := range names {
		fmt.Fprintf(&b, "  - pipeline: %s\n    topic: %s\n", name, name)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// manyOnce runs `once` of every pipeline and checks that each logged one ok pass that produced
// want records.
func manyOnce(ctx context.Context, bin string, args []string, n int, want int64) (benchkit.Once, error) {
	o, err := benchkit.RunOnce(ctx, bin, args...)
	if err != nil {
		return o, err
	}
	passes := 0
	for _, l := range benchkit.ParseLog(o.Log) {
		if l.Msg() != "pass finished" {
			continue
		}
		passes++
		if ok, _ := l["ok"].(bool); !ok || l.Int("records_produced") != want {
			return o, fmt.Errorf("pipeline %v: ok=%v records_produced=%d, want %d", l["pipeline"], l["ok"], l.Int("records_produced"), want)
		}
	}
	if passes != n {
		return o, fmt.Errorf("%d \"pass finished\" lines, want %d", passes, n)
	}
	return o, nil
}

func onceResult(kind string, n int, records int64, o benchkit.Once, env string) *result {
	r := &result{Kind: kind, Pipelines: n, Records: records, WallS: o.Wall.Seconds(), CPUS: o.CPU.Seconds(),
		PeakRSSMiB: float64(max(o.PeakRSS, o.PolledHWM)) / (1 << 20), Env: env}
	if records > 0 {
		r.CPUPerRecUS = float64(o.CPU.Microseconds()) / float64(records)
	}
	return r
}

// measureRun starts `run`, waits for the first pass of every pipeline, then counts the CPU the
// process uses over the next passes*n "pass finished" lines; it stops the process with SIGTERM.
func measureRun(ctx context.Context, bin string, args []string, interval time.Duration, n, passes int, profDir, logDir string) (*result, error) {
	cmd := benchkit.Command(ctx, bin, append([]string{"run", "--interval", interval.String()}, args...)...)
	if profDir != "" {
		cmd.Env = append(cmd.Env, "KEYSETSYNC_PPROF_ADDR=127.0.0.1:0")
	}
	pr, pw := io.Pipe()
	logw := io.Discard
	if logDir != "" {
		f, err := os.Create(filepath.Join(logDir, "run.log"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		logw = f
	}
	cmd.Stdout, cmd.Stderr = io.Discard, pw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var (
		mu       sync.Mutex
		count    int
		waiters  = map[int]chan struct{}{}
		pprofURL = make(chan string, 1)
		tail     []string
	)
	await := func(k int) <-chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		ch := make(chan struct{})
		if count >= k {
			close(ch)
		} else {
			waiters[k] = ch
		}
		return ch
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			fmt.Fprintln(logw, sc.Text())
			for _, l := range benchkit.ParseLog(sc.Bytes()) {
				switch l.Msg() {
				case "profile server listening":
					pprofURL <- "http://" + l["addr"].(string)
				case "pass finished":
					mu.Lock()
					count++
					if ch, ok := waiters[count]; ok {
						close(ch)
						delete(waiters, count)
					}
					mu.Unlock()
				}
				if lvl, _ := l["level"].(string); lvl == "ERROR" || lvl == "WARN" {
					mu.Lock()
					tail = append(tail, sc.Text())
					mu.Unlock()
				}
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		exited <- err
	}()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			<-scanned
			return err
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return errors.New("did not stop within 60s of SIGTERM")
		}
	}
	wait := func(k int) error {
		select {
		case <-await(k):
			return nil
		case err := <-exited:
			exited <- err
			mu.Lock()
			defer mu.Unlock()
			return fmt.Errorf("exited (%v) after %d passes, waiting for %d:\n%s", err, count, k, strings.Join(tail, "\n"))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := wait(n); err != nil {
		stop()
		return nil, err
	}
	pid := cmd.Process.Pid
	t0, c0 := time.Now(), cpuTicks(pid)
	var prof chan error
	base := ""
	if profDir != "" {
		prof = make(chan error, 1)
		base = <-pprofURL
		// The CPU profile covers about the window: passes intervals.
		secs := max(1, int(interval.Seconds())*passes)
		go func() {
			prof <- save(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), filepath.Join(profDir, "cpu.prof"))
		}()
	}
	if err := wait(n * (1 + passes)); err != nil {
		stop()
		return nil, err
	}
	t1, c1 := time.Now(), cpuTicks(pid)
	if prof != nil {
		if err := <-prof; err != nil {
			stop()
			return nil, err
		}
		if err := save(ctx, base+"/debug/pprof/heap", filepath.Join(profDir, "heap.prof")); err != nil {
			stop()
			return nil, err
		}
	}
	mu.Lock()
	counted := count - n
	mu.Unlock()
	if err := stop(); err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	r := &result{Kind: "many_run", Pipelines: n, WallS: t1.Sub(t0).Seconds(), CPUS: float64(c1-c0) / clkTck, Passes: counted}
	r.CPUPerPassMS = r.CPUS * 1000 / float64(counted)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.PeakRSSMiB = float64(ru.Maxrss<<10) / (1 << 20)
	}
	return r, nil
}

// clkTck is USER_HZ, the unit of /proc/<pid>/stat's CPU times (100 on Linux).
const clkTck = 100

// cpuTicks returns user+system CPU ticks of pid (fields 14 and 15 of /proc/<pid>/stat).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	sy, _ := strconv.ParseInt(f[12], 10, 64)
	return u + sy
}

func save(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: %s", url, res.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
