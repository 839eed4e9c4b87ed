package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/retry"
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
	onInvalid      string
	dlqTopic       string
	lookback       time.Duration
	maxRecordBytes int
	maxFuture      time.Duration
	topicConfigs   kafka.TopicConfigFlag
	progress       time.Duration
	acceptOverflow bool
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
	if f.maxInFlight < 1 {
		errs = append(errs, fmt.Errorf("--max-in-flight %d: must be at least 1", f.maxInFlight))
	}
	if f.batchRecords < 1 {
		errs = append(errs, fmt.Errorf("--batch-records %d: must be at least 1", f.batchRecords))
	}
	if f.partitions == 0 || f.partitions < -1 {
		errs = append(errs, fmt.Errorf("--topic-partitions %d: must be positive or -1", f.partitions))
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

func brokerList(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// pipeline is a ready Pipeline with what it holds open.
type openPipeline struct {
	syncer *pipeline.Pipeline
	close  func()
}

// openPipeline connects to Kafka, makes sure both topics exist (and that the cursor topic is
// compacted), and builds the pipeline. While Kafka cannot be reached it retries for --kafka-wait.
// With --metrics-addr the metrics server runs from before the first attempt until close.
func open(ctx context.Context, f *syncFlags, log *slog.Logger) (*openPipeline, error) {
	return f.metrics.serve(ctx, log, f.pipeline, func(obs pipeline.Observer) (*openPipeline, error) {
		var p *openPipeline
		err := retry.Do(ctx, retry.Policy{Budget: f.kafkaWait, Retryable: retry.IsRetryable, What: "connecting to Kafka", Log: log}, func() (bool, error) {
			var err error
			p, err = tryOpenPipeline(ctx, f, log, obs)
			return false, err
		})
		return p, err
	})
}

func tryOpenPipeline(ctx context.Context, f *syncFlags, log *slog.Logger, obs pipeline.Observer) (*openPipeline, error) {
	schemaText, err := f.source.schemaText()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	valuePrefix, err := f.registry.valuePrefix(ctx, f.topic, schemaText, log) // nil: plain Avro
	if err != nil {
		return nil, err
	}
	client, err := newKafkaClient(&f.kafkaSec, f.brokers, "keysetsync", log)
	if err != nil {
		return nil, err
	}
	closeAll := client.Close

	info, err := client.EnsureTopic(ctx, kafka.TopicSpec{Name: f.topic, Partitions: f.partitions, ReplicationFactor: f.replication, Configs: f.topicConfigs})
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("data topic on %s: %w", f.brokers, err)
	}
	if info.Created {
		log.Info("created data topic", "topic", f.topic, "partitions", len(info.Partitions), "configs", f.topicConfigs.String())
	}
	for _, w := range info.Check(f.topic, f.topicConfigs, len(f.source.deletedField) > 0) {
		log.Warn(w.Msg, w.Attrs...)
	}
	// The broker's limit on a record batch is what really bounds a record: learn it.
	topicMax, err := info.MaxMessageBytes()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("data topic %q: %w", f.topic, err)
	}
	dlq, dlqMax := "", 0
	if f.onInvalid == "dlq" {
		dlq = f.dlqTopic
		if dlq == "" {
			dlq = f.topic + ".dlq"
		}
		dlqInfo, err := client.EnsureTopic(ctx, kafka.TopicSpec{Name: dlq, Partitions: 1, ReplicationFactor: f.replication})
		if err == nil {
			dlqMax, err = dlqInfo.MaxMessageBytes()
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("dead-letter topic %q: %w", dlq, err)
		}
	}
	store, err := openCursorStore(ctx, client, f.cursorTopic, f.replication, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	codec, err := avro.NewCodec()
	if err != nil {
		closeAll()
		return nil, err
	}
	src, err := f.source.newSource(f.apiMaxAttempts, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	walk, err := f.source.walkOptions()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	walk.Lookback, walk.MaxRecordBytes, walk.MaxFuture = f.lookback, f.maxRecordBytes, f.maxFuture
	walk.AcceptTieOverflow = f.acceptOverflow
	// The sink takes what the pipeline makes: messages sized to the smaller topic limit.
	sinkMax := topicMax
	if dlq != "" {
		sinkMax = min(topicMax, dlqMax)
	}
	out, err := kafka.NewSink(kafka.SinkConfig{Client: client, BatchRecords: f.batchRecords, MaxMessageBytes: sinkMax})
	if err != nil {
		store.Close()
		closeAll()
		return nil, err
	}
	s, err := pipeline.New(pipeline.Config{
		Pipeline: f.pipeline, Source: src, Store: store, Codec: codec, Topic: f.topic, DLQTopic: dlq, ValuePrefix: valuePrefix,
		Walk: walk, TopicMaxMessageBytes: topicMax, DLQMaxMessageBytes: dlqMax, Sink: out,
		BatchRecords: f.batchRecords, MaxInFlight: f.maxInFlight, WriteTimeout: f.writeTimeout, Logger: log,
		ProgressInterval: f.progress,
		Observer:         obs,
	})
	if err != nil {
		out.Close()
		store.Close()
		closeAll()
		return nil, err
	}
	return &openPipeline{syncer: s, close: func() {
		out.Close()
		store.Close()
		closeAll()
	}}, nil
}

// openCursorStore opens the cursor store on topic (created compacted, with replication, when
// missing); a topic without compaction names the flag that chose it.
func openCursorStore(ctx context.Context, client *kafka.Client, topic string, replication int, log *slog.Logger) (*kafka.CursorStore, error) {
	s, err := kafka.NewCursorStore(ctx, kafka.CursorStoreConfig{Client: client, Topic: topic, ReplicationFactor: replication, Logger: log})
	if errors.Is(err, cursor.ErrNotCompacted) {
		return nil, fmt.Errorf("--cursor-topic: %w", err)
	}
	return s, err
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

// syncPass runs one pass and, while its error is retryable, runs it again with backoff for up
// to --retry-timeout (retry.Do). Every attempt starts from the committed cursor, never from
// memory. A failed pass that committed batches made progress: the passes after it get a new
// budget.
func syncPass(ctx context.Context, s *pipeline.Pipeline, f *syncFlags, log *slog.Logger) error {
	return retry.Do(ctx, retry.Policy{Budget: f.retryTimeout, Retryable: retry.IsRetryable, What: "sync pass", Log: log}, func() (bool, error) {
		st, err := s.Pass(ctx)
		return st.Batches > 0, err
	})
}
