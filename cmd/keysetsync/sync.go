package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/runner"
	"github.com/keysetsync/keysetsync/schedule"
)

// syncFlags are the settings shared by once and run.
type syncFlags struct {
	source         sourceFlags
	apiMaxAttempts int
	brokers        string
	topic          string
	cursorTopic    string
	pipeline       string
	batchRecords   int
	writeTimeout   time.Duration
	partitions     int
	replication    int
	retryTimeout   time.Duration
	kafkaWait      time.Duration
	maxInFlight    int
	fetchConc      int
	backfillMargin time.Duration
	backfillWait   float64
	maxReqPerSec   float64
	onInvalid      string
	dlqTopic       string
	lookback       time.Duration
	maxRecordBytes int
	maxFuture      time.Duration
	topicConfigs   kafka.TopicConfigFlag
	progress       time.Duration
	acceptOverflow bool
	delivery       string
	txnIDPrefix    string
	txnTimeout     time.Duration
	maxPasses      int
	logFlags
	metrics  metricsFlags
	kafkaSec kafkaSecurityFlags
	registry registryFlags
}

func (f *syncFlags) register(fs *flag.FlagSet) {
	f.source.register(fs)
	fs.IntVar(&f.apiMaxAttempts, "api-max-attempts", 6, "attempts per page on 5xx, 429, timeouts and connection errors (backoff with jitter, Retry-After)")
	fs.StringVar(&f.brokers, "brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers")
	fs.StringVar(&f.topic, "topic", "users", "data topic: one Avro message per new or updated record, keyed by id")
	fs.StringVar(&f.cursorTopic, "cursor-topic", "keysetsync-cursors", "compacted topic holding the cursors (key = pipeline name)")
	fs.StringVar(&f.pipeline, "pipeline", "users", "pipeline name: the cursor's key and the keysetsync.pipeline header")
	fs.IntVar(&f.batchRecords, "batch-records", 1000, "records produced and acknowledged per cursor commit")
	fs.IntVar(&f.maxInFlight, "max-in-flight", 4, "batches produced and not yet acknowledged while the next pages are fetched (1: one at a time)")
	fs.IntVar(&f.fetchConc, "fetch-concurrency", 8, "pages fetched at once by a parallel backfill when far behind the API (1: always sequential)")
	fs.Float64Var(&f.backfillWait, "backfill-min-wait", 0.5, "share of its first pages' time a far-behind pass must wait on the API to backfill (0: always)")
	fs.DurationVar(&f.backfillMargin, "backfill-margin", time.Minute, "a parallel backfill ends this far before the pass's start; above the API's clock skew")
	fs.Float64Var(&f.maxReqPerSec, "max-requests-per-second", 0, "ceiling on API requests per second of each pipeline (0: none)")
	fs.DurationVar(&f.writeTimeout, "write-timeout", 60*time.Second, "bound on producing one batch and committing its cursor, also when shutting down")
	fs.IntVar(&f.partitions, "topic-partitions", 1, "partitions of the data topic when keysetsync creates it (-1: broker default)")
	fs.IntVar(&f.replication, "topic-replication-factor", -1, "replication factor of the data and cursor topics when keysetsync creates them (-1: broker default)")
	fs.DurationVar(&f.retryTimeout, "retry-timeout", 5*time.Minute, "how long a failing pass is retried while the error is retryable, from its first failure (0: never)")
	fs.DurationVar(&f.kafkaWait, "kafka-wait", 0, "at start, how long to wait for Kafka to become reachable (0: fail at once with the connection error)")
	fs.StringVar(&f.onInvalid, "on-invalid", "fail", "what an invalid record does: fail (stop the pass) or dlq (send it to --dlq-topic and go on)")
	fs.StringVar(&f.dlqTopic, "dlq-topic", "", "dead-letter topic for --on-invalid dlq (default: <topic>.dlq)")
	fs.DurationVar(&f.lookback, "lookback", 0, "also re-read this far behind the cursor every pass, for records committed late (no duplicates sent)")
	fs.IntVar(&f.maxRecordBytes, "max-record-bytes", pipeline.DefaultMaxRecordBytes, "largest Kafka message of a record (the topic's max.message.bytes may lower it); larger is invalid")
	fs.DurationVar(&f.maxFuture, "max-future", 24*time.Hour, "an updatedAt later than now plus this is invalid (a broken source clock must not move the cursor)")
	fs.Var(&f.topicConfigs, "topic-config", "name=value config of the data topic when keysetsync creates it, e.g. cleanup.policy=compact; repeatable")
	fs.BoolVar(&f.acceptOverflow, "accept-tie-overflow", false, "accept the loss of records a tie wider than a page hides: log it, exit 0 and stay ready")
	fs.StringVar(&f.delivery, "delivery", "exactly-once", "exactly-once (each batch and its cursor one transaction; fences other instances) or at-least-once")
	fs.StringVar(&f.txnIDPrefix, "transactional-id-prefix", "keysetsync-", "exactly-once: the transactional id is this prefix, the cursor topic, / and the pipeline name")
	fs.DurationVar(&f.txnTimeout, "transaction-timeout", time.Minute, "exactly-once: how long the broker lets a transaction stay open before it aborts it")
	fs.IntVar(&f.maxPasses, "max-concurrent-passes", defaultMaxPasses(), "passes working at once in the process, first come first served; API waits hold no turn (4 x GOMAXPROCS)")
	fs.DurationVar(&f.progress, "progress-interval", 10*time.Second, "how often a pass logs progress (records/s, with --api-total-path what remains) (0: never)")
	f.logFlags.register(fs)
	f.metrics.register(fs)
	f.kafkaSec.register(fs)
	f.registry.register(fs)
}

func (f *syncFlags) validate() error {
	var errs []error
	if f.pipeline == "" {
		errs = append(errs, errors.New("--pipeline is empty"))
	}
	if f.topic == "" || f.cursorTopic == "" {
		errs = append(errs, errors.New("--topic and --cursor-topic must be set"))
	}
	if f.topic == f.cursorTopic {
		errs = append(errs, fmt.Errorf("--topic and --cursor-topic are both %q", f.topic))
	}
	if len(brokerList(f.brokers)) == 0 {
		errs = append(errs, errors.New("--brokers is empty"))
	}
	if f.maxPasses < 1 {
		errs = append(errs, fmt.Errorf("--max-concurrent-passes %d: must be at least 1", f.maxPasses))
	}
	if f.maxInFlight < 1 {
		errs = append(errs, fmt.Errorf("--max-in-flight %d: must be at least 1", f.maxInFlight))
	}
	if f.fetchConc < 1 || f.fetchConc > maxFetchConcurrency {
		// Each range's share of the 64 KiB cursor shrinks with the workers: from about 59 no
		// range could list a delivered id (every resume re-sends its ties), and past a few
		// hundred the ranges' own entries no longer fit.
		errs = append(errs, fmt.Errorf("--fetch-concurrency %d: must be 1 to %d (each backfill range gets its share of the 64 KiB cursor)", f.fetchConc, maxFetchConcurrency))
	}
	if f.maxReqPerSec < 0 {
		errs = append(errs, fmt.Errorf("--max-requests-per-second %g: must not be negative", f.maxReqPerSec))
	}
	if f.backfillWait < 0 || f.backfillWait > 1 {
		errs = append(errs, fmt.Errorf("--backfill-min-wait %g: must be between 0 and 1", f.backfillWait))
	}
	if f.backfillMargin <= 0 {
		errs = append(errs, fmt.Errorf("--backfill-margin %s: must be positive", f.backfillMargin))
	}
	if f.batchRecords < 1 {
		errs = append(errs, fmt.Errorf("--batch-records %d: must be at least 1", f.batchRecords))
	}
	if f.partitions == 0 || f.partitions < -1 {
		errs = append(errs, fmt.Errorf("--topic-partitions %d: must be positive or -1", f.partitions))
	}
	if f.delivery != "exactly-once" && f.delivery != "at-least-once" {
		errs = append(errs, fmt.Errorf("--delivery %q: want exactly-once or at-least-once", f.delivery))
	}
	if f.txnTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--transaction-timeout %s: must be positive", f.txnTimeout))
	}
	if f.onInvalid != "fail" && f.onInvalid != "dlq" {
		errs = append(errs, fmt.Errorf("--on-invalid %q: want fail or dlq", f.onInvalid))
	}
	if f.lookback < 0 || f.maxFuture < 0 || f.maxRecordBytes < 0 {
		errs = append(errs, errors.New("--lookback, --max-future and --max-record-bytes must not be negative"))
	}
	if f.retryTimeout < 0 || f.kafkaWait < 0 || f.progress < 0 {
		errs = append(errs, errors.New("--retry-timeout, --kafka-wait and --progress-interval must not be negative"))
	}
	if f.replication == 0 || f.replication < -1 {
		errs = append(errs, fmt.Errorf("--topic-replication-factor %d: must be positive or -1", f.replication))
	}
	errs = append(errs, f.kafkaSec.validate()...)
	errs = append(errs, f.source.validate()...)
	errs = append(errs, f.registry.validate()...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	return nil
}

// defaultMaxPasses is --max-concurrent-passes's default: a pass that holds a slot alternates
// CPU (decoding pages, encoding records) with waits on Kafka's acknowledgements, so a few per
// core keep the cores busy; more would only add memory (each holds up to --max-in-flight
// batches) and make every pass slower. Waits on the API hold no slot.
func defaultMaxPasses() int { return 4 * runtime.GOMAXPROCS(0) }

// newLimiter is the process's limiter of passes (--max-concurrent-passes).
func newLimiter(n int) *schedule.Limiter { return schedule.NewLimiter(n) }

func brokerList(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// open starts the job (its metrics server already serves, see startJobs): the runner on the
// process's Kafka client for its brokers (from clients) and cursor store for its cursor topic,
// retrying for --kafka-wait while Kafka cannot be reached. On failure nothing it opened stays
// open; what it shares is the jobSet's to close.
func (j *job) open(ctx context.Context, clients *kafkaClients) (err error) {
	f, log := j.flags, j.log
	defer func() {
		if err != nil {
			j.close()
		}
	}()
	cfg, err := f.runnerConfig(j.api, log)
	if err != nil {
		return err
	}
	if j.kafka, err = clients.get(&f.kafkaSec, f.brokers, log); err != nil {
		return err
	}
	cfg.Kafka, cfg.Limiter, cfg.Codec = j.kafka, j.limiter, j.codec
	if j.metrics != nil {
		cfg.Observer, cfg.SlotWaited = j.metrics, j.metrics.SlotWaited
	}
	if cfg.CursorStore, err = j.stores.get(ctx, f, j.kafka); err != nil {
		return err
	}
	if j.runner, err = runner.Open(ctx, cfg); err != nil {
		return err
	}
	if j.metrics != nil {
		j.metrics.Opened()
	}
	return nil
}

// close closes the runner (its sink waits for writes in flight). The Kafka client and the
// cursor store are shared with the other jobs: jobSet.close closes them.
func (j *job) close() {
	if j.runner != nil {
		j.runner.Close()
	}
}

// runnerConfig translates the flags into the runner's configuration (without its Kafka client
// and Observer); its Source sends through api.
func (f *syncFlags) runnerConfig(api http.RoundTripper, log *slog.Logger) (runner.Config, error) {
	schemaText, err := f.source.schemaText()
	if err != nil {
		return runner.Config{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	reg, err := f.registry.client()
	if err != nil {
		return runner.Config{}, err
	}
	src, err := f.source.newSource(api, f.apiMaxAttempts, log)
	if err != nil {
		return runner.Config{}, err
	}
	walk, err := f.source.walkOptions()
	if err != nil {
		return runner.Config{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	walk.Lookback, walk.MaxRecordBytes, walk.MaxFuture = f.lookback, f.maxRecordBytes, f.maxFuture
	walk.AcceptTieOverflow = f.acceptOverflow
	dlq := ""
	if f.onInvalid == "dlq" {
		if dlq = f.dlqTopic; dlq == "" {
			dlq = f.topic + ".dlq"
		}
	}
	return runner.Config{
		Pipeline:             f.pipeline,
		Topic:                kafka.TopicSpec{Name: f.topic, Partitions: f.partitions, ReplicationFactor: f.replication, Configs: f.topicConfigs},
		DLQTopic:             dlq,
		CursorTopic:          f.cursorTopic,
		ReplicationFactor:    f.replication,
		Source:               src,
		Walk:                 walk,
		ExactlyOnce:          f.delivery == "exactly-once",
		TransactionalID:      f.txnIDPrefix + f.cursorTopic + "/" + f.pipeline,
		TransactionTimeout:   f.txnTimeout,
		Registry:             reg,
		SchemaText:           schemaText,
		BatchRecords:         f.batchRecords,
		MaxInFlight:          f.maxInFlight,
		FetchConcurrency:     f.fetchConc,
		BackfillMargin:       f.backfillMargin,
		BackfillMinWait:      backfillMinWait(f.backfillWait),
		MaxRequestsPerSecond: f.maxReqPerSec,
		WriteTimeout:         f.writeTimeout,
		ProgressInterval:     f.progress,
		KafkaWait:            f.kafkaWait,
		RetryTimeout:         f.retryTimeout,
		Logger:               log,
		Hint:                 withHint,
	}, nil
}

// logFlags select the log format and level.
type logFlags struct {
	format string
	level  string
}

func (f *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.format, "log-format", "text", "log format: text (key=value) or json")
	fs.StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
}

func (f *logFlags) logger(e *env) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.level)); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, f.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch f.format {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	default:
		return nil, fmt.Errorf("%w: --log-format %q: want text or json", errUsage, f.format)
	}
}

// openCursorStore opens the cursor store on topic (created compacted, with replication, when
// missing); a topic without compaction is refused (cursor.ErrNotCompacted, hinted in hints.go).
func openCursorStore(ctx context.Context, client *kafka.Client, topic string, replication int, log *slog.Logger) (*kafka.CursorStore, error) {
	return kafka.NewCursorStore(ctx, kafka.CursorStoreConfig{Client: client, Topic: topic, ReplicationFactor: replication, Logger: log})
}

// maxFetchConcurrency is the most workers a backfill may have: at 32 each range still lists
// about 900 bytes of delivered ids (pipeline.TestBackfillCursorWithinMaxBytes covers it).
const maxFetchConcurrency = 32

// backfillMinWait translates --backfill-min-wait to pipeline.Config.BackfillMinWait, whose zero
// means its default: the flag's 0 (backfill whatever the API's speed) is a negative share there.
func backfillMinWait(share float64) float64 {
	if share == 0 {
		return -1
	}
	return share
}
