// Command tie measures the memory of `keysetsync once` through one wide tie: records that all
// share one update time, read through an API with an after-id parameter. The walk holds at most
// WalkOptions.StateLimit (10,000) records of one time exactly and then goes on by (time, last
// id), so a tie of 1,000,000 records must sync in one pass with about the peak memory of a tie of
// 10,000 (issue 8, item 2).
//
// The API is virtual and runs in this process (httptest on 127.0.0.1): records are generated
// from their index, nothing is stored. A tie of N has the ids t000000000 ... t(N-1) at one
// second T, sorted by id, plus one record "later" at T+1s (which also tells the walk that the
// tie is settled). It answers the reference contract: updated_since=T (inclusive),
// updated_since=T&after_id=X (the records after (T, X)), or scroll_param=TOKEN (exclusive by
// time); {"data":[{"id","name","updatedAt"}],"scroll_param":...} with pages of --page-size.
// With --shapes tie,spread it also serves the control: the same N+1 records one per second, no
// tie, so that what the pass's length does to memory shows apart from what the tie does.
//
// For each shape and size, --runs times, interleaved (tie 10k, tie 1M, spread 10k, spread 1M,
// ...), it runs `keysetsync once --api-after-id-param after_id` as a subprocess into fresh topics
// on the real broker, and records the child's peak RSS, wall time, the pass's duration and
// rate, and its Go heap from GODEBUG=gctrace=1. Peak RSS is the child's ru_maxrss, with its
// VmHWM polled from /proc every 10 ms as a cross-check (the larger is kept); benchkit.RunOnce
// first lowers this process's own peak RSS, which Linux would otherwise hand down to the child's
// ru_maxrss. Then it checks, and fails loudly otherwise, that the topic holds exactly N+1
// distinct ids (its keys only, in a bitset) and that every committed cursor is at most
// cursor.MaxBytes (64 KiB) and the last one is past the tie.
//
// It prints one JSON line per measurement ("kind":"tie" or "spread") and one summary line
// ("kind":"tie_summary") with the medians per shape and size and the ratio of the peak RSS
// medians of the largest tie and the smallest (the target: at most --max-ratio; reported, not
// enforced).
//
//	tie --bin bin/keysetsync --brokers 127.0.0.1:9092 --sizes 10000,1000000 --runs 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/bits"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keysetsync/keysetsync/bench/internal/benchkit"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/kafka"
)

// tieAt is the tie's second: long past, so the walk's clock checks never matter; only the
// record at tieAt+1s settles the tie.
var tieAt = time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC)

const (
	timeLayout = "2006-01-02T15:04:05Z" // the reference contract's whole seconds
	laterID    = "later"                // the one record after the tie
	pipeline   = "bench-tie"
)

func main() {
	bin := flag.String("bin", "bin/keysetsync", "keysetsync binary")
	brokers := flag.String("brokers", "127.0.0.1:9092", "bootstrap brokers (loopback only)")
	sizesFlag := flag.String("sizes", "10000,1000000", "tie widths, comma-separated; the ratio is the largest's peak RSS over the smallest's")
	runs := flag.Int("runs", 3, "runs per size, interleaved; medians are reported")
	pageSize := flag.Int("page-size", 1000, "records per page of the API")
	batch := flag.Int("batch-records", 1000, "--batch-records of keysetsync")
	maxRatio := flag.Float64("max-ratio", 1.10, "target: peak RSS of the largest tie over the smallest's (reported, not enforced)")
	gctrace := flag.Bool("gctrace", true, "run keysetsync with GODEBUG=gctrace=1 and report its largest heap (MB, from the GC trace)")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound on the whole measurement")
	keep := flag.Bool("keep-topics", false, "keep the topics (default: delete each after its checks)")
	prefix := flag.String("prefix", "bench-", "prefix of the topic names")
	shapesFlag := flag.String("shapes", "tie,spread", "tie: only the ties; tie,spread: also the control, the same records one per second")
	benchkit.EnvFlag()
	flag.Parse()
	bs, err := benchkit.Brokers(*brokers)
	if err != nil {
		benchkit.Fatal("tie", err)
	}
	sizes, err := parseSizes(*sizesFlag)
	if err != nil {
		benchkit.Fatal("tie: --sizes", err)
	}
	if *runs < 1 || *pageSize < 2 || *batch < 1 {
		benchkit.Fatal("tie", fmt.Errorf("--runs (%d), --page-size (%d) and --batch-records (%d) must be positive, the page size at least 2", *runs, *pageSize, *batch))
	}
	if *gctrace {
		benchkit.Env = append(benchkit.Env, "GODEBUG=gctrace=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var shapes []bool // spread?
	switch *shapesFlag {
	case "tie":
		shapes = []bool{false}
	case "tie,spread":
		shapes = []bool{false, true}
	default:
		benchkit.Fatal("tie", fmt.Errorf("--shapes %q: want tie or tie,spread", *shapesFlag))
	}
	type key struct {
		spread bool
		n      int
	}
	apis := map[key]*tieAPI{}
	mux := http.NewServeMux()
	for _, spread := range shapes {
		for _, n := range sizes {
			a := &tieAPI{n: n, page: *pageSize, spread: spread}
			apis[key{spread, n}] = a
			mux.Handle(fmt.Sprintf("/%s/%d/keyset", a.shape(), n), a)
		}
	}
	srv := httptest.NewServer(mux) // 127.0.0.1:0
	defer srv.Close()

	results := map[string]map[int][]result{"tie": {}, "spread": {}}
	for run := 1; run <= *runs; run++ {
		for _, spread := range shapes {
			for _, n := range sizes {
				a := apis[key{spread, n}]
				fmt.Fprintf(os.Stderr, "tie: run %d/%d, %s of %d records\n", run, *runs, a.shape(), n)
				r, err := measure(ctx, bs, *bin, fmt.Sprintf("%s/%s/%d/keyset", srv.URL, a.shape(), n), a, *batch, *prefix, *keep)
				if err != nil {
					benchkit.Fatal(fmt.Sprintf("tie: run %d, %s of %d", run, a.shape(), n), err)
				}
				r.Run = run
				benchkit.Emit(r)
				results[a.shape()][n] = append(results[a.shape()][n], r)
			}
		}
	}
	benchkit.Emit(summarize(sizes, results, *runs, *pageSize, *maxRatio, *gctrace))
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 999_999_999 {
			return nil, fmt.Errorf("%q is not a tie width between 1 and 999,999,999", f)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil, errors.New("no sizes")
	}
	return out, nil
}

// result is one measurement.
type result struct {
	Kind       string  `json:"kind"`
	Size       int     `json:"size"` // the records before the last one: the tie's width
	Page       int     `json:"page"`
	Run        int     `json:"run"`
	Records    int     `json:"records"`      // size + the record after the tie
	PeakRSSMiB float64 `json:"peak_rss_mib"` // the larger of the two below
	MaxRSSMiB  float64 `json:"maxrss_mib"`   // the child's ru_maxrss
	// PolledHWMMiB is its VmHWM polled every 10 ms; the kernel's RSS counters are batched per
	// thread, so the two differ by a few hundred KiB either way.
	PolledHWMMiB   float64 `json:"polled_hwm_mib"`
	ParentRSSMiB   float64 `json:"parent_rss_mib"`         // this process's peak RSS when the child started
	HeapMaxMB      *int    `json:"heap_max_mb,omitempty"`  // largest heap the GC trace showed (at a GC's end)
	HeapLiveMB     *int    `json:"heap_live_mb,omitempty"` // largest live heap after a GC's mark
	GCs            int     `json:"gcs,omitempty"`
	WallS          float64 `json:"wall_s"`
	Seconds        float64 `json:"seconds"` // the pass's own duration
	RecordsPerS    float64 `json:"records_per_s"`
	Pages          int64   `json:"pages"`
	APIRequests    int64   `json:"api_requests"`
	Produced       int64   `json:"produced"`
	Skipped        int64   `json:"skipped"`
	Resent         int64   `json:"resent"`
	TopicMessages  int     `json:"topic_messages"`
	DistinctIDs    int     `json:"distinct_ids"`
	CursorCommits  int     `json:"cursor_commits"`
	CursorMaxBytes int     `json:"cursor_max_bytes"`
}

func measure(ctx context.Context, bs []string, bin, url string, api *tieAPI, batch int, prefix string, keep bool) (result, error) {
	// A client per measurement: kafka-go's Transport caches the cluster's metadata for seconds,
	// and would answer "unknown topic" for the topics keysetsync has just created.
	kc, err := benchkit.Client(bs)
	if err != nil {
		return result{}, err
	}
	defer kc.Close()
	topicName, cursorTopic := benchkit.RunTopics(prefix, fmt.Sprintf("%s%d", api.shape(), api.n))
	if !keep {
		defer benchkit.Deleter(kc, "tie", os.Stderr, topicName, cursorTopic)()
	}
	args := append(benchkit.SyncArgs(url, bs, topicName, cursorTopic, pipeline),
		"--api-after-id-param", "after_id", "--topic-partitions", "1", "--batch-records", strconv.Itoa(batch))
	before := api.requests.Load()
	o, err := benchkit.RunOnce(ctx, bin, args...)
	if err != nil {
		return result{}, err
	}
	r := result{
		Kind: api.shape(), Size: api.n, Page: api.page, Records: api.n + 1,
		PeakRSSMiB: mib(max(o.PeakRSS, o.PolledHWM)), MaxRSSMiB: mib(o.PeakRSS), PolledHWMMiB: mib(o.PolledHWM),
		ParentRSSMiB: mib(o.ParentRSS), WallS: o.Wall.Seconds(), Seconds: o.Pass.Seconds("duration"),
		Pages: o.Pass.Int("pages"), APIRequests: api.requests.Load() - before,
		Produced: o.Pass.Int("records_produced"), Skipped: o.Pass.Int("records_skipped"), Resent: o.Pass.Int("resent"),
	}
	switch {
	case o.PeakRSS == 0:
		return r, errors.New("the platform gave no peak RSS of the child (getrusage ru_maxrss)")
	case o.ParentRSS < 0:
		return r, errors.New("could not reset this process's peak RSS (/proc/self/clear_refs): the child's ru_maxrss would start at it")
	case o.PeakRSS <= o.ParentRSS:
		// ru_maxrss is then this process's peak, not the child's.
		return r, fmt.Errorf("the child's ru_maxrss (%.1f MiB) is not above this process's peak RSS (%.1f MiB) when it started: it cannot be told apart", r.MaxRSSMiB, r.ParentRSSMiB)
	}
	if r.Seconds > 0 {
		r.RecordsPerS = float64(r.Records) / r.Seconds
	}
	if hm, hl, n := gcHeap(o.Log); n > 0 {
		r.HeapMaxMB, r.HeapLiveMB, r.GCs = &hm, &hl, n
	}
	if tos := o.Pass.Int("tie_overflows"); tos != 0 {
		return r, fmt.Errorf("the pass counted %d tie overflows: the after-id contract must page through the tie", tos)
	}
	if r.TopicMessages, r.DistinctIDs, err = countIDs(ctx, kc, topicName, api.n); err != nil {
		return r, err
	}
	if r.DistinctIDs != api.n+1 {
		return r, fmt.Errorf("topic %s holds %d distinct ids in %d messages, want %d (the tie of %d and %q)",
			topicName, r.DistinctIDs, r.TopicMessages, api.n+1, api.n, laterID)
	}
	if r.CursorCommits, r.CursorMaxBytes, err = checkCursors(ctx, kc, cursorTopic, api.at(api.n)); err != nil {
		return r, err
	}
	return r, nil
}

// countIDs reads the keys of topic name and counts its messages and distinct ids, in a bitset
// rather than a decode of each value; a key that is neither one of the tie's ids nor laterID is
// an error naming its offset.
func countIDs(ctx context.Context, c *kafka.Client, name string, n int) (msgs, distinct int, err error) {
	seen := make([]uint64, (n+1+63)/64) // bit i: id i of the tie; bit n: laterID
	err = c.Scan(ctx, name, func(rec kafka.Record) error {
		msgs++
		i, ok := tieIndex(rec.Key, n)
		if !ok {
			return fmt.Errorf("topic %s partition %d offset %d: key %q is not an id of the API", name, rec.Partition, rec.Offset, rec.Key)
		}
		seen[i/64] |= 1 << (i % 64)
		return nil
	})
	if err != nil {
		return msgs, 0, fmt.Errorf("read topic %s: %w", name, err)
	}
	for _, w := range seen {
		distinct += bits.OnesCount64(w)
	}
	return msgs, distinct, nil
}

// tieIndex is the index of an id: 0..n-1 for the tie's, n for laterID.
func tieIndex(key []byte, n int) (int, bool) {
	if string(key) == laterID {
		return n, true
	}
	if len(key) != 10 || key[0] != 't' {
		return 0, false
	}
	i, err := strconv.Atoi(string(key[1:]))
	if err != nil || i < 0 || i >= n {
		return 0, false
	}
	return i, true
}

// checkCursors reads every cursor committed to topic name: each must be at most
// cursor.MaxBytes and decode, and the one with the highest seq must be at want (past the tie).
// It returns how many there were and the largest.
func checkCursors(ctx context.Context, c *kafka.Client, name string, want time.Time) (commits, largest int, err error) {
	var last cursor.Cursor
	err = c.Scan(ctx, name, func(rec kafka.Record) error {
		if string(rec.Key) != pipeline {
			return fmt.Errorf("cursor topic %s offset %d: key %q, want the pipeline %q", name, rec.Offset, rec.Key, pipeline)
		}
		commits++
		largest = max(largest, len(rec.Value))
		if len(rec.Value) > cursor.MaxBytes {
			return fmt.Errorf("cursor topic %s offset %d: the cursor is %d bytes, more than cursor.MaxBytes (%d)", name, rec.Offset, len(rec.Value), cursor.MaxBytes)
		}
		cur, err := cursor.Unmarshal(rec.Value)
		if err != nil {
			return fmt.Errorf("cursor topic %s offset %d: %w", name, rec.Offset, err)
		}
		if commits == 1 || cur.Seq >= last.Seq {
			last = cur
		}
		return nil
	})
	if err != nil {
		return commits, largest, err
	}
	if commits == 0 {
		return 0, 0, fmt.Errorf("cursor topic %s: no cursor committed", name)
	}
	if !last.LastUpdatedAt.Equal(want) {
		return commits, largest, fmt.Errorf("cursor topic %s: the last cursor (seq %d) is at %s, want %s (past the tie)",
			name, last.Seq, cursor.FormatTime(last.LastUpdatedAt), cursor.FormatTime(want))
	}
	return commits, largest, nil
}

var gcLine = regexp.MustCompile(`(?m)^gc \d+ @.* (\d+)->(\d+)->(\d+) MB`)

// gcHeap reads the GC trace (GODEBUG=gctrace=1) in a log: the largest heap at the end of a GC,
// the largest live heap after a mark (both in MB, as the trace rounds them), and the number of
// GCs.
func gcHeap(log []byte) (heapMax, heapLive, n int) {
	for _, m := range gcLine.FindAllSubmatch(log, -1) {
		end, _ := strconv.Atoi(string(m[2]))
		live, _ := strconv.Atoi(string(m[3]))
		heapMax, heapLive, n = max(heapMax, end), max(heapLive, live), n+1
	}
	return heapMax, heapLive, n
}

// summary is the last line: medians per shape and size, and the ratios of the peak RSS medians.
type summary struct {
	Kind   string                     `json:"kind"`
	Size   int                        `json:"size"` // the largest tie
	Page   int                        `json:"page"`
	Run    int                        `json:"run"`
	Sizes  []int                      `json:"sizes"`
	Runs   int                        `json:"runs"`
	Median map[string]map[string]stat `json:"median"` // by shape, then size as decimal text
	// Ratio is the median peak RSS of the largest tie over the smallest's: the target. PerRun
	// is the median of the same ratio within each run (the two measured back to back).
	Ratio  float64 `json:"ratio"`
	PerRun float64 `json:"ratio_per_run"`
	// With the control: the same ratio without a tie (what the pass's length alone does), and
	// the largest tie over the same records without a tie (what the tie alone does).
	SpreadRatio   *float64 `json:"spread_ratio,omitempty"`
	TieOverSpread *float64 `json:"tie_over_spread,omitempty"`
	MaxRatio      float64  `json:"max_ratio"`
	Met           bool     `json:"met"`
}

type stat struct {
	PeakRSSMiB  float64  `json:"peak_rss_mib"`
	MinRSSMiB   float64  `json:"min_rss_mib"`
	MaxRSSMiB   float64  `json:"max_rss_mib"`
	HeapMaxMB   *float64 `json:"heap_max_mb,omitempty"`
	HeapLiveMB  *float64 `json:"heap_live_mb,omitempty"`
	WallS       float64  `json:"wall_s"`
	Seconds     float64  `json:"seconds"`
	RecordsPerS float64  `json:"records_per_s"`
}

func summarize(sizes []int, res map[string]map[int][]result, runs, page int, maxRatio float64, gctrace bool) summary {
	s := summary{Kind: "tie_summary", Size: sizes[len(sizes)-1], Page: page, Sizes: sizes, Runs: runs,
		Median: map[string]map[string]stat{}, MaxRatio: maxRatio}
	for shape, bySize := range res {
		if len(bySize) == 0 {
			continue
		}
		s.Median[shape] = map[string]stat{}
		for _, n := range sizes {
			rs := bySize[n]
			pick := func(f func(result) float64) []float64 {
				out := make([]float64, len(rs))
				for i, r := range rs {
					out[i] = f(r)
				}
				return out
			}
			rss := pick(func(r result) float64 { return r.PeakRSSMiB })
			st := stat{
				PeakRSSMiB: median(rss), MinRSSMiB: slices.Min(rss), MaxRSSMiB: slices.Max(rss),
				WallS:       median(pick(func(r result) float64 { return r.WallS })),
				Seconds:     median(pick(func(r result) float64 { return r.Seconds })),
				RecordsPerS: median(pick(func(r result) float64 { return r.RecordsPerS })),
			}
			if gctrace {
				// A pass that ended before its first GC left no trace: its heap is counted as 0.
				h := median(pick(func(r result) float64 { return float64(deref(r.HeapMaxMB)) }))
				l := median(pick(func(r result) float64 { return float64(deref(r.HeapLiveMB)) }))
				st.HeapMaxMB, st.HeapLiveMB = &h, &l
			}
			s.Median[shape][strconv.Itoa(n)] = st
		}
	}
	lo, hi := strconv.Itoa(sizes[0]), strconv.Itoa(sizes[len(sizes)-1])
	peak := func(shape, n string) float64 { return s.Median[shape][n].PeakRSSMiB }
	s.Ratio = peak("tie", hi) / peak("tie", lo)
	var per []float64
	ties := res["tie"]
	for i := range min(len(ties[sizes[0]]), len(ties[s.Size])) {
		per = append(per, ties[s.Size][i].PeakRSSMiB/ties[sizes[0]][i].PeakRSSMiB)
	}
	s.PerRun = median(per)
	if _, ok := s.Median["spread"]; ok {
		sr, ts := peak("spread", hi)/peak("spread", lo), peak("tie", hi)/peak("spread", hi)
		s.SpreadRatio, s.TieOverSpread = &sr, &ts
	}
	s.Met = s.Ratio <= maxRatio
	if !s.Met {
		fmt.Fprintf(os.Stderr, "tie: peak RSS of a tie of %s is %.2fx that of a tie of %s, above the target %.2fx\n", hi, s.Ratio, lo, maxRatio)
	}
	return s
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// tieAPI is the virtual API of one tie: record i < n is (tieAt, t%09d), record n is
// (tieAt+1s, laterID); that is their (updatedAt, id) order too. With spread, the control, record
// i is at tieAt+i seconds instead: the same records and pages, no tie.
type tieAPI struct {
	n, page  int
	spread   bool
	requests atomic.Int64
}

func (a *tieAPI) shape() string {
	if a.spread {
		return "spread"
	}
	return "tie"
}

func (a *tieAPI) at(i int) time.Time {
	switch {
	case a.spread:
		return tieAt.Add(time.Duration(i) * time.Second)
	case i < a.n:
		return tieAt
	}
	return tieAt.Add(time.Second)
}

func (a *tieAPI) id(i int) string {
	if i < a.n {
		return fmt.Sprintf("t%09d", i)
	}
	return laterID
}

// start is the index of the first record a query asks for.
func (a *tieAPI) start(q map[string][]string) (int, error) {
	get := func(k string) (string, bool) {
		v, ok := q[k]
		if !ok || len(v) == 0 {
			return "", false
		}
		return v[0], true
	}
	if tok, ok := get("scroll_param"); ok {
		t, err := time.Parse(timeLayout, tok)
		if err != nil {
			return 0, fmt.Errorf("scroll_param %q: %w", tok, err)
		}
		return sort.Search(a.n+1, func(i int) bool { return a.at(i).After(t) }), nil
	}
	s, _ := get("updated_since")
	since, err := time.Parse(timeLayout, s)
	if err != nil {
		return 0, fmt.Errorf("updated_since %q: %w", s, err)
	}
	if after, ok := get("after_id"); ok {
		return sort.Search(a.n+1, func(i int) bool {
			c := a.at(i).Compare(since)
			return c > 0 || c == 0 && a.id(i) > after
		}), nil
	}
	return sort.Search(a.n+1, func(i int) bool { return !a.at(i).Before(since) }), nil
}

// ServeHTTP answers one page, written by hand: the records are generated, not stored.
func (a *tieAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	from, err := a.start(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	end := min(from+a.page, a.n+1)
	b := make([]byte, 0, 80*(end-from)+64)
	b = append(b, `{"data":[`...)
	for i := from; i < end; i++ {
		if i > from {
			b = append(b, ',')
		}
		b = append(b, `{"id":"`...)
		b = append(b, a.id(i)...)
		b = append(b, `","name":"user `...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `","updatedAt":"`...)
		b = a.at(i).AppendFormat(b, timeLayout)
		b = append(b, `"}`...)
	}
	b = append(b, `],"scroll_param":`...)
	if end <= a.n {
		// The reference API's token: the last record's time, exclusive.
		b = append(b, '"')
		b = a.at(end-1).AppendFormat(b, timeLayout)
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}
