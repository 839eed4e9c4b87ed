// Package runner runs one pipeline against the real systems: it opens them (the data, dead-letter
// and cursor topics, the schema registry, the Kafka sink and cursor store) and runs passes, once
// with retries or every interval until stopped. It is the one constructor cmd calls for `once`
// and `run`; everything it needs comes in its Config, translated from flags by cmd.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/pipeline"
	"github.com/keysetsync/keysetsync/registry"
	"github.com/keysetsync/keysetsync/retry"
	"github.com/keysetsync/keysetsync/schedule"
	"github.com/keysetsync/keysetsync/sink"
	"github.com/keysetsync/keysetsync/source"
)

// Config is one pipeline and the systems it runs against.
type Config struct {
	Pipeline string
	// Kafka is the cluster of the topics. The Runner uses it and does not close it: one Client
	// may serve many Runners.
	Kafka *kafka.Client
	// Topic is the data topic, created with this spec when missing; an existing one is checked
	// against its Configs (warnings, not errors).
	Topic kafka.TopicSpec
	// DLQTopic, when set, receives invalid records (created with one partition when missing);
	// without it an invalid record stops the pass.
	DLQTopic string
	// CursorTopic holds the cursors, compacted (created so when missing).
	CursorTopic string
	// CursorStore, when set, is the store of CursorTopic that the process's pipelines share: it
	// reads the topic once and follows it, where a store per pipeline would read it once per
	// pipeline. The Runner uses it and does not close it. Nil: the Runner opens its own.
	CursorStore *kafka.CursorStore
	// ReplicationFactor of the dead-letter and cursor topics when the Runner creates them (-1:
	// the broker's default).
	ReplicationFactor int
	Source            *source.Source
	Walk              source.WalkOptions
	// Registry, when set, registers the value schema (SchemaText) under <topic>-value at open
	// and every value is framed in the Confluent wire format; nil: plain Avro binary.
	Registry   *registry.Client
	SchemaText string
	// Codec encodes the values; it is safe for concurrent use, so the pipelines of a process
	// share one (each its own cost 13 KB of live heap, 13 MB for 1,000). Nil: the Runner makes
	// its own.
	Codec *avro.Codec
	// ExactlyOnce writes each batch and its cursor in one Kafka transaction (kafka.TxnSink) under
	// TransactionalID, which fences any other instance using it; otherwise the at-least-once
	// writer (kafka.Sink), which fences nothing. TransactionTimeout: see kafka.TxnConfig.
	ExactlyOnce        bool
	TransactionalID    string
	TransactionTimeout time.Duration
	// Batch, flight and timing of the pipeline: see pipeline.Config.
	BatchRecords, MaxInFlight      int
	WriteTimeout, ProgressInterval time.Duration
	// FetchConcurrency, BackfillMargin and BackfillMinWait: the parallel backfill, see
	// pipeline.Config.
	FetchConcurrency     int
	BackfillMargin       time.Duration
	BackfillMinWait      float64
	MaxRequestsPerSecond float64
	// KafkaWait is how long Open keeps trying while Kafka cannot be reached (0: fail at once);
	// RetryTimeout how long Pass retries a pass while its error is retryable (0: no retry).
	KafkaWait, RetryTimeout time.Duration
	Observer                pipeline.Observer
	// Limiter, when set, bounds the passes of the process that work at once: each attempt of a
	// pass holds one of its slots (waiting in first-come, first-served order), except while it
	// waits on the API (package schedule); the backoff between attempts holds none. SlotWaited,
	// when set, is told how long each wait for a slot took.
	Limiter    *schedule.Limiter
	SlotWaited func(time.Duration)
	Logger     *slog.Logger
	// Hint, when set, is applied to an error before it is logged: cmd adds the flag that
	// changes the outcome.
	Hint func(error) error
}

// Runner is an open pipeline with what it holds open.
type Runner struct {
	cfg      Config
	log      *slog.Logger
	pipeline *pipeline.Pipeline
	closers  []func() error
}

// Open opens what cfg names and builds the pipeline. While Kafka cannot be reached it retries
// for KafkaWait. The caller closes the Runner.
func Open(ctx context.Context, cfg Config) (*Runner, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Hint == nil {
		cfg.Hint = func(err error) error { return err }
	}
	var r *Runner
	var valuePrefix []byte // nil: plain Avro; registered once, also across the retries of Kafka
	err := retry.Do(ctx, retry.Policy{Budget: cfg.KafkaWait, Retryable: retry.IsRetryable, What: "connecting to Kafka", Log: cfg.Logger}, func() (bool, error) {
		if cfg.Registry != nil && valuePrefix == nil {
			subject := registry.TopicSubject(cfg.Topic.Name)
			id, err := cfg.Registry.Register(ctx, subject, cfg.SchemaText)
			if err != nil {
				return false, err // names the subject and the registry's URL
			}
			cfg.Logger.Info("registered the value schema; values use the Confluent wire format", "schema_registry", cfg.Registry.URL(), "subject", subject, "schema_id", id)
			valuePrefix = registry.Header(id)
		}
		var err error
		r, err = open(ctx, cfg, valuePrefix)
		return false, err
	})
	return r, err
}

func open(ctx context.Context, cfg Config, valuePrefix []byte) (_ *Runner, err error) {
	log := cfg.Logger
	r := &Runner{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			r.Close() // what this attempt opened
		}
	}()
	info, err := cfg.Kafka.EnsureTopic(ctx, cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("data topic on %s: %w", cfg.Kafka.Brokers(), err)
	}
	if info.Created {
		configs := kafka.TopicConfigFlag(cfg.Topic.Configs)
		log.Info("created data topic", "topic", cfg.Topic.Name, "partitions", len(info.Partitions), "configs", configs.String())
	}
	for _, w := range info.Check(cfg.Topic.Name, cfg.Topic.Configs, len(cfg.Walk.DeletedField) > 0) {
		log.Warn(w.Msg, w.Attrs...)
	}
	// The broker's limit on a record batch is what really bounds a record: learn it.
	topicMax, err := info.MaxMessageBytes()
	if err != nil {
		return nil, fmt.Errorf("data topic %q: %w", cfg.Topic.Name, err)
	}
	sinkMax, dlqMax := topicMax, 0
	if cfg.DLQTopic != "" {
		dlqInfo, err := cfg.Kafka.EnsureTopic(ctx, kafka.TopicSpec{Name: cfg.DLQTopic, Partitions: 1, ReplicationFactor: cfg.ReplicationFactor})
		if err == nil {
			dlqMax, err = dlqInfo.MaxMessageBytes()
		}
		if err != nil {
			return nil, fmt.Errorf("dead-letter topic %q: %w", cfg.DLQTopic, err)
		}
		sinkMax = min(topicMax, dlqMax) // the sink takes what the pipeline makes: sized to the smaller
	}
	store := cfg.CursorStore
	switch {
	case store != nil && store.Topic() != cfg.CursorTopic:
		return nil, fmt.Errorf("cursor store of topic %q given for cursor topic %q", store.Topic(), cfg.CursorTopic)
	case store == nil:
		if store, err = kafka.NewCursorStore(ctx, kafka.CursorStoreConfig{Client: cfg.Kafka, Topic: cfg.CursorTopic, ReplicationFactor: cfg.ReplicationFactor, Logger: log}); err != nil {
			return nil, err
		}
		r.closers = append(r.closers, store.Close)
	}
	codec := cfg.Codec
	if codec == nil {
		if codec, err = avro.NewCodec(); err != nil {
			return nil, err
		}
	}
	// The transactional sink starts before the first cursor load: starting it fences the
	// previous instance and aborts its open transaction, which would otherwise hold the load.
	var out sink.Sink
	if cfg.ExactlyOnce {
		out, err = kafka.NewTxnSink(ctx, kafka.TxnConfig{Client: cfg.Kafka, TransactionalID: cfg.TransactionalID, TransactionTimeout: cfg.TransactionTimeout, MaxMessageBytes: sinkMax, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("transactional id %q: %w", cfg.TransactionalID, err)
		}
		log.Info("exactly-once: each batch and its cursor are one transaction; another instance of this pipeline is fenced", "transactional_id", cfg.TransactionalID)
	} else {
		out, err = kafka.NewSink(kafka.SinkConfig{Client: cfg.Kafka, BatchRecords: cfg.BatchRecords, MaxMessageBytes: sinkMax})
		if err != nil {
			return nil, err
		}
		log.Warn("at-least-once: a second instance of this pipeline is NOT fenced; run exactly one, or two can write older versions over newer ones")
	}
	r.closers = append(r.closers, out.Close)
	r.pipeline, err = pipeline.New(pipeline.Config{
		Pipeline: cfg.Pipeline, Source: cfg.Source, Store: store, Codec: codec, Topic: cfg.Topic.Name, DLQTopic: cfg.DLQTopic, ValuePrefix: valuePrefix,
		Walk: cfg.Walk, TopicMaxMessageBytes: topicMax, DLQMaxMessageBytes: dlqMax, Sink: out, ExactlyOnce: cfg.ExactlyOnce,
		BatchRecords: cfg.BatchRecords, MaxInFlight: cfg.MaxInFlight, WriteTimeout: cfg.WriteTimeout, Logger: log,
		ProgressInterval: cfg.ProgressInterval, FetchConcurrency: cfg.FetchConcurrency, BackfillMargin: cfg.BackfillMargin, BackfillMinWait: cfg.BackfillMinWait,
		MaxRequestsPerSecond: cfg.MaxRequestsPerSecond,
		Observer:             cfg.Observer,
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Close closes what Open opened (the sink first, which waits for its writes in flight), not the
// Kafka client.
func (r *Runner) Close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		_ = r.closers[i]()
	}
	r.closers = nil
}

// Pass runs one pass and, while its error is retryable, runs it again with backoff for up to
// RetryTimeout (retry.Do). With a Limiter, each attempt first waits for a slot. Every attempt starts from the committed cursor, never from memory. A
// failed pass that committed batches made progress: the passes after it get a new budget.
func (r *Runner) Pass(ctx context.Context) error {
	return retry.Do(ctx, retry.Policy{Budget: r.cfg.RetryTimeout, Retryable: retry.IsRetryable, What: "sync pass", Log: r.log}, func() (bool, error) {
		// Per attempt, not around retry.Do: a pass waiting out its backoff holds no slot.
		ctx, slot, err := r.cfg.Limiter.Hold(ctx, r.cfg.SlotWaited)
		if err != nil {
			return false, err
		}
		defer slot.Release()
		st, err := r.pipeline.Pass(ctx)
		return st.Batches > 0, err
	})
}

// Run runs passes, interval apart, until ctx ends (it then returns nil) or a pass fails with a
// configuration error or is fenced by another instance (returned: going on would only fence
// the other one back). A failed pass is logged and the next one starts from the
// committed cursor; a pass that ended with records the API cannot serve is logged as an error
// and the next goes on (the Observer marks the pipeline degraded).
func (r *Runner) Run(ctx context.Context, interval time.Duration) error {
	log := r.log
	log.Info("running", "interval", interval)
	failures := 0
	for {
		err := r.Pass(ctx)
		if ctx.Err() != nil {
			log.Info("stopping on signal; the cursor covers every acknowledged batch")
			return nil
		}
		if errors.Is(err, pipeline.ErrConfig) || errors.Is(err, pipeline.ErrFenced) {
			return err
		}
		switch {
		case errors.Is(err, source.ErrTieOverflow):
			// Not a failure to retry: everything readable is committed, and the records the
			// API cannot serve stay missing.
			failures = 0
			log.Error("pass finished, but records may be missing: the pipeline is degraded until restarted", "err", r.cfg.Hint(err))
		case err != nil:
			failures++
			log.Error("pass failed; the next pass resumes from the committed cursor", "err", r.cfg.Hint(err), "retryable", retry.IsRetryable(err), "consecutive_failures", failures)
		default:
			failures = 0
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			log.Info("stopping on signal; the cursor covers every acknowledged batch")
			return nil
		case <-t.C:
		}
	}
}
