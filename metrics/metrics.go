// Package metrics exposes what a keysetsync pipeline does as Prometheus metrics. Metrics
// implements pipeline.Observer; its registry is its own (never the global default one), served
// by Handler.
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/source"
)

var _ pipeline.Observer = (*Metrics)(nil)

// Namespace prefixes every metric name.
const Namespace = "keysetsync"

// Process is the metrics of every pipeline of one process, in one registry of its own (never
// the global default one) served by Handler: each pipeline's series carry its pipeline label.
// It is safe for concurrent use.
type Process struct {
	reg *prometheus.Registry
	now func() time.Time

	mu        sync.Mutex
	pipelines []*Metrics // in the order added: /readyz lists them so
}

// Option configures NewProcess and New.
type Option func(*options)

type options struct {
	now       func() time.Time
	noRuntime bool
}

// WithClock sets the clock cursor_lag_seconds and /readyz's times are computed with (default
// time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithoutRuntime leaves out the Go runtime and process collectors (they are on by default).
func WithoutRuntime() Option { return func(o *options) { o.noRuntime = true } }

// NewProcess makes the registry of a process's pipelines (see Pipeline).
func NewProcess(opts ...Option) *Process {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	p := &Process{reg: prometheus.NewRegistry(), now: o.now}
	if !o.noRuntime {
		p.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return p
}

// Registry is where the metrics are registered; add collectors of your own to it.
func (p *Process) Registry() *prometheus.Registry { return p.reg }

// Handler serves the registry in the Prometheus text (or OpenMetrics) format.
func (p *Process) Handler() http.Handler {
	return promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{Registry: p.reg, EnableOpenMetrics: true})
}

// Limiter is what the slot metrics read: the process's pass limiter (schedule.Limiter).
type Limiter interface {
	Size() int
	Waiting() int
}

// WatchLimiter exports the slots of the process's pass limiter and the passes waiting for one.
func (p *Process) WatchLimiter(l Limiter) {
	p.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "pass_slots",
			Help: "Passes of the process that may work at once (--max-concurrent-passes)."}, func() float64 { return float64(l.Size()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "passes_waiting",
			Help: "Passes of the process waiting for a slot now (first come, first served)."}, func() float64 { return float64(l.Waiting()) }),
	)
}

// Metrics counts what one pipeline does. Every metric carries a constant pipeline label.
// It is safe for concurrent use.
type Metrics struct {
	name string
	reg  *prometheus.Registry
	now  func() time.Time

	pages, recordsFetched, recordsProduced, deadLetters prometheus.Counter
	tieOverflows, invalid, late, skipped, resent        prometheus.Counter
	txnCommitted, txnAborted, fencedTotal               prometheus.Counter
	produceErrors, apiErrors, apiRetries, passes        *prometheus.CounterVec
	batchAck, cursorCommit, pageFetch, slotWait         prometheus.Histogram
	cursorTimestamp, remaining, degraded, lastSuccessTS prometheus.Gauge
	backfillActive, backfillUnfinished, fetchLimit      prometheus.Gauge

	mu     sync.Mutex
	cursor time.Time // last committed updatedAt; zero until a cursor is known
	opened bool      // Kafka answered, the topics are checked
	loaded bool      // a pass loaded its cursor
	// degradedBy is the first pass error that said records may be missing for good
	// (source.ErrTieOverflow); "" while none did. It is never cleared: the records stay
	// missing until an operator re-reads them (cursor set --to) and restarts the process.
	degradedBy string
	// lastErr is the error of the last pass attempt while passes keep failing ("" once one
	// succeeds); failingSince the end of the first of them, failures how many in a row.
	lastErr      string
	failingSince time.Time
	failures     int
	// passStarted is when the running pass loaded its cursor (zero between passes), lastPage
	// when the API last answered a page, lastSuccess when a pass last succeeded.
	passStarted, lastPage, lastSuccess time.Time
}

// New makes the metrics of pipeline in a registry of their own: a Process of one.
func New(pipeline string, opts ...Option) *Metrics { return NewProcess(opts...).Pipeline(pipeline) }

// Pipeline makes the metrics of pipeline in p's registry; names must differ.
func (p *Process) Pipeline(pipeline string) *Metrics {
	m := &Metrics{name: pipeline, reg: p.reg, now: p.now}
	p.mu.Lock()
	p.pipelines = append(p.pipelines, m)
	p.mu.Unlock()
	labels := prometheus.Labels{"pipeline": pipeline}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: labels})
		m.reg.MustRegister(c)
		return c
	}
	counterVec := func(name, help string, label string, values ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: labels}, []string{label})
		for _, v := range values { // known values are exported as 0 from the start
			c.WithLabelValues(v)
		}
		m.reg.MustRegister(c)
		return c
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: labels, Buckets: buckets})
		m.reg.MustRegister(h)
		return h
	}
	m.pages = counter("pages_fetched_total", "Pages the source API answered.")
	m.recordsFetched = counter("records_fetched_total", "Records on the pages fetched, new or not.")
	m.recordsProduced = counter("records_produced_total", "Records acknowledged by Kafka on the data topic (dead letters not included).")
	m.deadLetters = counter("dead_letters_total", "Invalid records acknowledged by Kafka on the dead-letter topic.")
	m.tieOverflows = counter("tie_overflows_total", "Pages full of one updatedAt that the API could not page through (records may be missing).")
	m.invalid = counter("invalid_records_total", "Invalid records found, dead-lettered or stopping the pass.")
	m.late = counter("late_records_total", "Records found behind the cursor by the lookback window.")
	m.resent = counter("records_resent_total", "Records sent although they may have been delivered before: a tie or lookback window held more records than the walk keeps exactly (duplicates, never a loss).")
	m.skipped = counter("records_skipped_total", "Records fetched again that were already delivered (same id, updatedAt and content).")
	m.txnCommitted = counter("transactions_committed_total", "Batches committed in one Kafka transaction with their cursor (exactly-once).")
	m.txnAborted = counter("transactions_aborted_total", "Batches whose transaction failed and was aborted: none of their records is visible to read_committed consumers (exactly-once).")
	m.fencedTotal = counter("fenced_total", "Times this instance was fenced: another instance with the same transactional id took over (exactly-once). Any increase means two instances ran the pipeline at once.")
	m.produceErrors = counterVec("produce_errors_total", "Batches Kafka did not acknowledge, by whether the error is retryable.", "retryable", "true", "false")
	m.apiErrors = counterVec("api_errors_total", "Page requests that failed for good, by kind: HTTP status, bad_page or network.", "kind")
	m.apiRetries = counterVec("api_retries_total", "Page requests retried, by reason: HTTP status or network.", "reason")
	m.passes = counterVec("passes_total", "Passes finished, by result.", "result", "ok", "failed")
	m.batchAck = histogram("batch_ack_seconds", "Time from enqueueing a batch to its last acknowledgement by Kafka (acks=all).",
		prometheus.ExponentialBuckets(0.001, 2.5, 12)) // 1 ms to about 38 s
	m.cursorCommit = histogram("cursor_commit_seconds", "Time to commit a cursor to the cursor topic.", prometheus.DefBuckets)
	m.pageFetch = histogram("page_fetch_seconds", "Time of the successful request of a page, body included (retries not included).", prometheus.DefBuckets)
	m.slotWait = histogram("slot_wait_seconds", "Time a pass waited for a slot of the process's pass limit (--max-concurrent-passes), at its start and after each wait on the API.",
		prometheus.ExponentialBuckets(0.001, 4, 10)) // 1 ms to about 262 s
	m.cursorTimestamp = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "cursor_timestamp_seconds",
		Help: "updatedAt of the committed cursor, as Unix seconds (0 until a cursor was loaded or committed).", ConstLabels: labels})
	m.remaining = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "records_remaining",
		Help: "Records the source API said remain in the current pass after the last page fetched (only with --api-total-path; -1 until the API said).", ConstLabels: labels})
	m.remaining.Set(-1)
	m.degraded = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "degraded",
		Help: "1 once a pass ended with records the source API cannot serve (a tie wider than a page), for the life of the process; 0 otherwise.", ConstLabels: labels})
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help, ConstLabels: labels})
		m.reg.MustRegister(g)
		return g
	}
	m.backfillActive = gauge("backfill_ranges_active", "Ranges a parallel backfill walks right now (0 while no backfill runs).")
	m.backfillUnfinished = gauge("backfill_ranges_unfinished", "Ranges of a parallel backfill not walked to their end yet (0 while no backfill runs).")
	m.fetchLimit = gauge("backfill_fetch_limit", "API requests a parallel backfill may have in flight at once (its workers, or the adaptive limit).")
	m.lastSuccessTS = gauge("last_success_timestamp_seconds", "When a pass last succeeded, as Unix seconds (0 until one did): alert on now minus it, which grows while passes fail or stall, unlike the cursor lag, which also grows while the source has nothing new.")
	m.reg.MustRegister(m.cursorTimestamp, m.remaining, m.degraded, &lagCollector{m: m, desc: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "cursor_lag_seconds"),
		"Now minus the committed cursor's updatedAt, computed at scrape time; absent until a cursor is known. It grows while the source has nothing newer.",
		nil, labels)})
	return m
}

// Registry is where the metrics are registered (their Process's); add collectors of your own
// to it.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text (or OpenMetrics) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// Opened marks the pipeline open (Kafka answered, its topics are checked): it is then ready
// once a pass loaded its cursor.
func (m *Metrics) Opened() {
	m.mu.Lock()
	m.opened = true
	m.mu.Unlock()
}

// SlotWaited records how long a pass waited for a slot (runner.Config.SlotWaited).
func (m *Metrics) SlotWaited(d time.Duration) { m.slotWait.Observe(d.Seconds()) }

// Loaded reports whether a pass has loaded its cursor: Kafka answered and the pipeline knows
// where it stands.
func (m *Metrics) Loaded() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.loaded
}

func (m *Metrics) setCursor(at time.Time) {
	m.mu.Lock()
	m.cursor = at
	m.mu.Unlock()
	m.cursorTimestamp.Set(unixSeconds(at))
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// PassStarted implements pipeline.Observer.
func (m *Metrics) PassStarted(at time.Time) {
	m.mu.Lock()
	m.loaded = true
	m.passStarted = m.now()
	m.mu.Unlock()
	if !at.IsZero() {
		m.setCursor(at)
	}
}

// Degraded reports whether a pass of this process ended with records the source API cannot
// serve (source.ErrTieOverflow), and that pass's error. It stays true for the life of the
// Metrics: the loss is permanent, unlike a failed pass that the next one can heal.
func (m *Metrics) Degraded() (bool, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.degradedBy != "", m.degradedBy
}

// PassFinished implements pipeline.Observer.
func (m *Metrics) PassFinished(err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.passes.WithLabelValues(result).Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.passStarted = time.Time{}
	if err == nil {
		m.lastSuccess = m.now()
		m.lastSuccessTS.Set(unixSeconds(m.lastSuccess))
	}
	switch {
	case errors.Is(err, source.ErrTieOverflow):
		// Not failing: everything readable is committed; degraded for good (Status).
		m.lastErr, m.failures = "", 0
		if m.degradedBy == "" { // the first names the earliest times to re-read from
			m.degradedBy = err.Error()
		}
		m.degraded.Set(1)
	case err != nil:
		if m.failures == 0 {
			m.failingSince = m.now()
		}
		m.failures++
		m.lastErr = err.Error()
	default:
		m.lastErr, m.failures = "", 0
	}
}

// PageFetched implements pipeline.Observer.
func (m *Metrics) PageFetched(records, _ int, d time.Duration) {
	m.pages.Inc()
	m.mu.Lock()
	m.lastPage = m.now()
	m.mu.Unlock()
	m.recordsFetched.Add(float64(records))
	m.pageFetch.Observe(d.Seconds())
}

// APIRetry implements pipeline.Observer.
func (m *Metrics) APIRetry(reason string) { m.apiRetries.WithLabelValues(reason).Inc() }

// APIFailed implements pipeline.Observer.
func (m *Metrics) APIFailed(kind string) { m.apiErrors.WithLabelValues(kind).Inc() }

// BatchAcked implements pipeline.Observer.
func (m *Metrics) BatchAcked(records, deadLetters int, ackLatency time.Duration) {
	m.recordsProduced.Add(float64(records))
	m.deadLetters.Add(float64(deadLetters))
	m.batchAck.Observe(ackLatency.Seconds())
}

// ProduceFailed implements pipeline.Observer.
func (m *Metrics) ProduceFailed(retryable bool) {
	m.produceErrors.WithLabelValues(strconv.FormatBool(retryable)).Inc()
}

// CursorCommitted implements pipeline.Observer.
func (m *Metrics) CursorCommitted(at time.Time, d time.Duration) {
	m.setCursor(at)
	m.cursorCommit.Observe(d.Seconds())
}

// TxnCommitted implements pipeline.Observer.
func (m *Metrics) TxnCommitted() { m.txnCommitted.Inc() }

// TxnAborted implements pipeline.Observer.
func (m *Metrics) TxnAborted() { m.txnAborted.Inc() }

// Fenced implements pipeline.Observer.
func (m *Metrics) Fenced() { m.fencedTotal.Inc() }

// TieOverflow implements pipeline.Observer.
func (m *Metrics) TieOverflow() { m.tieOverflows.Inc() }

// InvalidRecord implements pipeline.Observer.
func (m *Metrics) InvalidRecord() { m.invalid.Inc() }

// LateRecord implements pipeline.Observer.
func (m *Metrics) LateRecord() { m.late.Inc() }

// Resent implements pipeline.Observer.
func (m *Metrics) Resent(n int) { m.resent.Add(float64(n)) }

// Skipped implements pipeline.Observer.
func (m *Metrics) Skipped(n int) { m.skipped.Add(float64(n)) }

// BackfillRanges implements pipeline.Observer.
func (m *Metrics) BackfillRanges(active, unfinished int) {
	m.backfillActive.Set(float64(active))
	m.backfillUnfinished.Set(float64(unfinished))
}

// FetchLimit implements pipeline.Observer.
func (m *Metrics) FetchLimit(n int) { m.fetchLimit.Set(float64(n)) }

// RecordsRemaining implements pipeline.Observer.
func (m *Metrics) RecordsRemaining(n int64) { m.remaining.Set(float64(n)) }

// lagCollector computes cursor_lag_seconds when scraped, and leaves it out while no cursor is
// known (a lag measured from year 1 would only trip alerts).
type lagCollector struct {
	m    *Metrics
	desc *prometheus.Desc
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	at := c.m.cursor
	c.m.mu.Unlock()
	if at.IsZero() {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, c.m.now().Sub(at).Seconds())
}
