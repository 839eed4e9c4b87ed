package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/kafka"
	"github.com/keysetsync/keysetsync/metrics"
	"github.com/keysetsync/keysetsync/runner"
	"github.com/keysetsync/keysetsync/schedule"
	"github.com/keysetsync/keysetsync/source"
	"go.yaml.in/yaml/v3"
)

// configFlag is --config of once, run and config: a YAML file whose keys are flag names.
const configFlag = "config"

// pipelinesKey is the top-level key of a config file that lists several pipelines.
const pipelinesKey = "pipelines"

func registerConfigFlag(fs *flag.FlagSet) {
	fs.String(configFlag, "", "YAML file whose keys are flag names; flag > env var > file; a 'pipelines:' list runs several")
}

// configFile is a parsed --config file, its keys checked against the flag set.
type configFile struct {
	path      string
	entries   []configEntry    // top-level keys: the values of every pipeline
	pipelines []configPipeline // empty: one pipeline, configured by the top level alone
}

// configEntry is one key of a config file with its value node (which knows its line).
type configEntry struct {
	key   string
	value *yaml.Node
}

// configPipeline is one item of the pipelines list; its keys win over the top level and over
// flags and env vars (they are the most specific setting there is).
type configPipeline struct {
	line    int
	entries []configEntry
}

// configError is a usage error that names the file, the line and the key.
func (c *configFile) errorf(line int, format string, args ...any) error {
	return fmt.Errorf("%w: config file %s, line %d: %s", errUsage, c.path, line, fmt.Sprintf(format, args...))
}

// applyConfigFile loads the file named by fs's --config (if it has that flag and it is set),
// unless loaded is that file already, and sets every flag whose source is still the default
// from the file's top-level keys.
func applyConfigFile(fs *flag.FlagSet, source map[string]string, loaded *configFile) (*configFile, error) {
	cf := fs.Lookup(configFlag)
	if cf == nil || cf.Value.String() == "" {
		return nil, nil
	}
	c := loaded
	if c == nil || c.path != cf.Value.String() {
		var err error
		if c, err = loadConfig(cf.Value.String(), fs); err != nil {
			return nil, err
		}
	}
	if err := c.apply(fs, c.entries, source, false); err != nil {
		return nil, err
	}
	return c, nil
}

// loadConfig reads path and checks that every key is a flag of fs and every value a scalar (or
// a list, for a repeatable flag). Values are checked when applied.
func loadConfig(path string, fs *flag.FlagSet) (*configFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --config: %w", errUsage, err)
	}
	c := &configFile{path: path}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%w: config file %s: %w", errUsage, path, err)
	}
	if len(doc.Content) == 0 { // empty file
		return c, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, c.errorf(root.Line, "want a mapping of flag names to values")
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if runOnly(fs, k.Value) {
			continue
		}
		if k.Value != pipelinesKey {
			e, err := c.entry(fs, k, v)
			if err != nil {
				return nil, err
			}
			c.entries = append(c.entries, e)
			continue
		}
		if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
			return nil, c.errorf(v.Line, "%s: want a non-empty list of mappings (one per pipeline)", pipelinesKey)
		}
		for _, item := range v.Content {
			if item.Kind != yaml.MappingNode {
				return nil, c.errorf(item.Line, "%s: each item must be a mapping of flag names to values", pipelinesKey)
			}
			p := configPipeline{line: item.Line}
			for j := 0; j+1 < len(item.Content); j += 2 {
				if runOnly(fs, item.Content[j].Value) {
					continue
				}
				e, err := c.entry(fs, item.Content[j], item.Content[j+1])
				if err != nil {
					return nil, err
				}
				p.entries = append(p.entries, e)
			}
			c.pipelines = append(c.pipelines, p)
		}
	}
	return c, nil
}

// runOnly says whether key is a flag of run that fs (once's) lacks: once ignores it, so once
// and run can share a config file.
func runOnly(fs *flag.FlagSet, key string) bool {
	return key == "interval" && fs.Lookup(key) == nil
}

func (c *configFile) entry(fs *flag.FlagSet, k, v *yaml.Node) (configEntry, error) {
	key := k.Value
	switch {
	case k.Kind != yaml.ScalarNode:
		return configEntry{}, c.errorf(k.Line, "keys must be flag names")
	case key == configFlag:
		return configEntry{}, c.errorf(k.Line, "%q cannot be set in the config file", key)
	case key == pipelinesKey:
		return configEntry{}, c.errorf(k.Line, "%q is only allowed at the top level", key)
	case strings.HasPrefix(key, "-"):
		return configEntry{}, c.errorf(k.Line, "unknown key %q (write flag names without the leading dashes)", key)
	case fs.Lookup(key) == nil:
		return configEntry{}, c.errorf(k.Line, "unknown key %q (not a flag of keysetsync %s)", key, fs.Name())
	}
	_, repeatable := fs.Lookup(key).Value.(*headerList)
	switch {
	case v.Kind == yaml.ScalarNode:
	case v.Kind == yaml.SequenceNode && repeatable:
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode {
				return configEntry{}, c.errorf(item.Line, "%s: each item must be a string", key)
			}
		}
	case v.Kind == yaml.SequenceNode:
		return configEntry{}, c.errorf(v.Line, "%s: want a single value, not a list", key)
	default:
		return configEntry{}, c.errorf(v.Line, "%s: want a single value", key)
	}
	return configEntry{key: key, value: v}, nil
}

// apply sets the flags of entries: all of them with override, otherwise only those whose source
// is still the default. The source of every flag set becomes fromFile.
func (c *configFile) apply(fs *flag.FlagSet, entries []configEntry, source map[string]string, override bool) error {
	var errs []error
	for _, e := range entries {
		if !override && source[e.key] != fromDefault {
			continue
		}
		f := fs.Lookup(e.key)
		if h, ok := f.Value.(*headerList); ok {
			*h = nil // the file's list replaces the default (or the top level's list)
		}
		values := []*yaml.Node{e.value}
		if e.value.Kind == yaml.SequenceNode {
			values = e.value.Content
		}
		for _, v := range values {
			s := v.Value
			if v.Tag == "!!null" {
				s = ""
			}
			if err := f.Value.Set(s); err != nil {
				shown := fmt.Sprintf(" %q", s)
				if secretFlag(e.key) || e.key == "api-header" {
					shown = ""
				}
				errs = append(errs, c.errorf(v.Line, "%s: invalid value%s: %v", e.key, shown, err))
			}
		}
		source[e.key] = fromFile
	}
	return errors.Join(errs...)
}

// secretFlag says whether a flag carries a secret inline (rather than the path of a file that
// holds it): its name mentions a password, token, secret, credential or auth and does not end
// in -file. The config command shows such values as "***". --api-header is masked per header.
func secretFlag(name string) bool {
	if strings.HasSuffix(name, "-file") {
		return false
	}
	for _, w := range []string{"password", "token", "secret", "credential", "auth"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

const masked = "***"

// shownValue is the value of f as the config command prints it: secrets masked, the user info
// of a URL redacted, and --api-header as a list whose inline values are masked (a value @FILE,
// a file name, is shown).
func shownValue(f *flag.Flag) *yaml.Node {
	if h, ok := f.Value.(*headerList); ok {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, l := range *h {
			name, value, _ := strings.Cut(l, ":")
			if v := strings.TrimSpace(value); !strings.HasPrefix(v, "@") {
				value = " " + masked
			}
			seq.Content = append(seq.Content, str(name+":"+value))
		}
		return seq
	}
	v := f.Value.String()
	switch {
	case v != "" && secretFlag(f.Name):
		v = masked
	case strings.Contains(v, "://"):
		v = source.RedactURL(v) // the user info of a URL, as everywhere else
	}
	return str(v)
}

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

// syncFlagSet returns the flag set of once and run (with interval non-nil, run's --interval
// too) and the parsed flags it fills. extra adds the flags of a command of its own that takes
// the sync flags too (verify's --max-examples), so one config file serves them all.
func syncFlagSet(e *env, name, summary string, interval *time.Duration, extra ...func(*flag.FlagSet)) (*flag.FlagSet, *syncFlags) {
	var f syncFlags
	fs := newFlagSet(e, name, summary)
	f.register(fs)
	registerConfigFlag(fs)
	if interval != nil {
		registerInterval(fs, interval)
	}
	for _, x := range extra {
		x(fs)
	}
	return fs, &f
}

// runConfig prints the effective configuration of once/run as YAML: every flag with its value
// and where it came from; with a pipelines list, every pipeline's too.
func runConfig(ctx context.Context, e *env, args []string) error {
	var interval time.Duration
	summary := "Print the effective configuration of once and run as YAML: every flag, its value and where it\ncame from (flag, env, file or default). Secret values are shown as \"***\"; file paths are shown."
	fs, _ := syncFlagSet(e, "config", summary, &interval)
	p, err := parseFlagSources(e, fs, args)
	if err != nil {
		return err
	}
	root := effective(fs, p.source)
	if p.config != nil && len(p.config.pipelines) > 0 {
		sets, err := pipelineFlagSets(e, args, "config", summary, p.config, true)
		if err != nil {
			return err
		}
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, ps := range sets {
			seq.Content = append(seq.Content, effective(ps.fs, ps.source))
		}
		root.Content = append(root.Content, str(pipelinesKey), seq)
	}
	fmt.Fprintf(e.stdout, "# keysetsync effective configuration: value and source (flag, env, file or default) of every\n# flag of once and run; secret values are shown as %q.\n", masked)
	enc := yaml.NewEncoder(e.stdout)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return err
	}
	return enc.Close()
}

func effective(fs *flag.FlagSet, source map[string]string) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	fs.VisitAll(func(f *flag.Flag) {
		entry := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{
			str("value"), shownValue(f), str("source"), str(source[f.Name]),
		}}
		m.Content = append(m.Content, str(f.Name), entry)
	})
	return m
}

// pipelineFlags is the flag set of one pipeline of a config file, filled.
type pipelineFlags struct {
	fs       *flag.FlagSet
	flags    *syncFlags
	interval time.Duration
	source   map[string]string
}

// pipelineFlagSets parses args once per pipeline of c: flag > env > top-level key > default,
// then the pipeline's own keys over all of them. Each pipeline needs its own name, and the
// names must differ; pipelines naming the same --metrics-addr share its server; the pass limit
// is the process's, not an item's.
func pipelineFlagSets(e *env, args []string, name, summary string, c *configFile, withInterval bool, extra ...func(*flag.FlagSet)) ([]*pipelineFlags, error) {
	var out []*pipelineFlags
	names := map[string]int{}
	for i, cp := range c.pipelines {
		ps := &pipelineFlags{}
		var interval *time.Duration
		if withInterval {
			interval = &ps.interval
		}
		ps.fs, ps.flags = syncFlagSet(e, name, summary, interval, extra...)
		p, err := parseFlagSourcesWith(e, ps.fs, args, c)
		if err != nil {
			return nil, err
		}
		if err := c.apply(ps.fs, cp.entries, p.source, true); err != nil {
			return nil, err
		}
		ps.source = p.source
		if p.source["pipeline"] != fromFile || !hasKey(cp.entries, "pipeline") {
			return nil, c.errorf(cp.line, "%s item %d: set its own pipeline (the name of its cursor)", pipelinesKey, i+1)
		}
		pn := ps.flags.pipeline
		if prev, dup := names[pn]; dup {
			return nil, c.errorf(cp.line, "%s item %d: pipeline %q is also item %d", pipelinesKey, i+1, pn, prev)
		}
		names[pn] = i + 1
		if hasKey(cp.entries, "max-concurrent-passes") {
			return nil, c.errorf(cp.line, "%s item %d: max-concurrent-passes is one limit for the whole process: set it at the top level", pipelinesKey, i+1)
		}
		out = append(out, ps)
	}
	return out, nil
}

func hasKey(entries []configEntry, key string) bool {
	for _, e := range entries {
		if e.key == key {
			return true
		}
	}
	return false
}

// job is one pipeline of once or run: its settings, its logger and, once open, what it runs
// with (see job.open).
type job struct {
	flags    *syncFlags
	log      *slog.Logger
	interval time.Duration // run's --interval

	limiter *schedule.Limiter // the process's, shared by every job
	codec   *avro.Codec       // the process's, shared by every job
	api     http.RoundTripper // the process's API transport (source.NewTransport), shared by every job
	metrics *metrics.Metrics  // nil without --metrics-addr; its server is the jobSet's

	runner *runner.Runner
	kafka  *kafka.Client // the process's client for its brokers, shared (kafkaClients)
	stores *cursorStores // the process's cursor stores, shared by every job
}

// jobSet is the pipelines of once or run and what they share: the metrics servers (one per
// --metrics-addr), the cursor stores (one per cursor topic) and the Kafka clients (one per
// cluster).
type jobSet struct {
	jobs    []*job
	servers []*metrics.Server
	stores  *cursorStores
	clients *kafkaClients
}

// close closes the pipelines, then what they shared: the cursor stores before the Kafka
// clients they read through, the servers last.
func (js *jobSet) close() {
	closeJobs(js.jobs)
	js.stores.close()
	js.clients.close()
	for _, s := range js.servers {
		s.Close()
	}
}

// serveMetrics starts a metrics server for each --metrics-addr of the jobs, every pipeline
// naming it registered first (so /readyz lists them all from the start), before Kafka is
// contacted (so /healthz answers while it is awaited).
func (js *jobSet) serveMetrics(limiter *schedule.Limiter, log *slog.Logger) error {
	procs := map[string]*metrics.Process{}
	var addrs []string
	for _, j := range js.jobs {
		a := j.flags.metrics.metricsAddr
		if a == "" {
			continue
		}
		p := procs[a]
		if p == nil {
			p = metrics.NewProcess()
			p.WatchLimiter(limiter)
			procs[a] = p
			addrs = append(addrs, a)
		}
		j.metrics = p.Pipeline(j.flags.pipeline)
	}
	for _, a := range addrs {
		s, err := metrics.Listen(a, procs[a], log)
		if err != nil {
			return err
		}
		js.servers = append(js.servers, s)
	}
	return nil
}

// kafkaClients hands every job of the process the same kafka.Client for the same brokers and
// security settings: one connection pool per process and cluster. A kafka-go transport keeps
// the metadata of every topic of the cluster and refreshes it every few seconds, so a client per
// pipeline cost each idle pipeline about 5 MiB and a metadata refresh of the whole cluster
// (issue 12, BENCHMARKS.md "Many pipelines"). Transactional producers share it too: each has its
// own transactional id, not its own connections. Jobs open a few at a time (openJobs): mu guards m.
type kafkaClients struct {
	mu sync.Mutex
	m  map[kafkaClientKey]*kafka.Client
}

// kafkaClientKey is what makes two clients different: the brokers and the security flags (TLS
// files and SASL credentials, compared by value).
type kafkaClientKey struct {
	brokers string
	sec     kafkaSecuritySettings
}

func (c *kafkaClients) get(sec *kafkaSecurityFlags, brokers string, log *slog.Logger) (*kafka.Client, error) {
	k := kafkaClientKey{brokers: strings.Join(brokerList(brokers), ","), sec: sec.kafkaSecuritySettings}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.m[k]; ok {
		return cl, nil
	}
	cl, err := newKafkaClient(sec, brokers, "keysetsync", log)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[kafkaClientKey]*kafka.Client{}
	}
	c.m[k] = cl
	return cl, nil
}

func (c *kafkaClients) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.m {
		cl.Close()
	}
	c.m = nil
}

// startJobs parses the flags of a sync command (with interval non-nil, run's --interval too),
// builds the logger and opens the pipelines: one, or one per item of the config file's
// pipelines list (each logging with its name). The caller closes them.
func startJobs(ctx context.Context, e *env, args []string, name, summary string, interval *time.Duration) (*jobSet, error) {
	fs, f := syncFlagSet(e, name, summary, interval)
	top := f
	p, err := parseFlagSources(e, fs, args)
	if err != nil {
		return nil, err
	}
	var iv time.Duration
	if interval != nil {
		iv = *interval
	}
	sets := []*pipelineFlags{{fs: fs, flags: f, interval: iv}}
	multi := p.config != nil && len(p.config.pipelines) > 0
	if multi {
		if sets, err = pipelineFlagSets(e, args, name, summary, p.config, interval != nil); err != nil {
			return nil, err
		}
	}
	var jobs []*job
	stores := &cursorStores{}
	for _, ps := range sets {
		f := ps.flags
		err := f.validate()
		if err == nil && interval != nil {
			err = checkInterval(ps.interval)
		}
		if err != nil && multi {
			err = fmt.Errorf("pipeline %q: %w", f.pipeline, err)
		}
		if err != nil {
			return nil, err
		}
		log, err := f.logger(e)
		if err != nil {
			return nil, err
		}
		// Named here, once, for everything the pipeline logs (source, runner, sink, pipeline),
		// also when it is the only one: the same lines whether a config lists one or many.
		log = log.With("pipeline", f.pipeline)
		jobs = append(jobs, &job{flags: f, log: log, interval: ps.interval, stores: stores})
	}
	limiter := newLimiter(top.maxPasses)
	codec, err := avro.NewCodec()
	if err != nil {
		return nil, err
	}
	// One API transport for the process: pipelines reading one host share its connections.
	api := source.NewTransport(len(jobs))
	js := &jobSet{jobs: jobs, stores: stores, clients: &kafkaClients{}}
	for _, j := range jobs {
		j.limiter, j.codec, j.api = limiter, codec, api
	}
	log, err := top.logger(e) // the process's: no pipeline attribute
	if err != nil {
		return nil, err
	}
	stores.log = log
	servePprof(e.getenv, log)
	if e.memoryLimit != nil && len(jobs) > 1 {
		log.Info("soft memory limit raised for the pipelines (GOMEMLIMIT overrides it)",
			"pipelines", len(jobs), "max_concurrent_passes", limiter.Size(), "memory_limit_mib", e.memoryLimit(len(jobs), limiter.Size())>>20)
	}
	if err := js.serveMetrics(limiter, log); err != nil {
		js.close()
		return nil, err
	}
	if err := openJobs(ctx, jobs, js.clients, multi); err != nil {
		js.close() // a job that failed closed what it opened; one never opened holds nothing
		return nil, err
	}
	return js, nil
}

// openConcurrency is how many pipelines open at once. An open mostly waits on the broker (topic
// checks or creation and the wait for its leader, the producer id): one after the other, 1,000
// new pipelines took 60 to 90 s to open on a fresh local broker before their first pass
// (BENCHMARKS.md "Many pipelines"). A few at a time, so that a thousand do not ask the broker
// for a thousand topics at once.
const openConcurrency = 8

// openJobs opens the jobs, openConcurrency at a time; the first error, named by its pipeline
// when multi, stops the others (boundedFirstError).
func openJobs(ctx context.Context, jobs []*job, clients *kafkaClients, multi bool) error {
	return boundedFirstError(ctx, len(jobs), openConcurrency, func(ctx context.Context, i int) error {
		j := jobs[i]
		err := j.open(ctx, clients)
		if err != nil && multi {
			err = fmt.Errorf("pipeline %q: %w", j.flags.pipeline, err)
		}
		return err
	})
}

// boundedFirstError runs fn(ctx, i) for every i below n, in order, at most limit at once. The
// first error cancels the ctx the others run with, none is started after it, and it is returned
// once every started fn has returned; the errors of those it cancelled are not. When the
// caller's ctx ends first, its error is returned.
func boundedFirstError(ctx context.Context, n, limit int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, max(limit, 1))
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(ctx, i); err != nil {
				mu.Lock()
				defer mu.Unlock()
				if first == nil {
					first = err
					cancel() // before the slot is given back: no fn starts after it
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err() // the caller's ctx ended: fns left unstarted
	}
	return first
}

// closeJobs closes the jobs, not what they share (jobSet.close).
func closeJobs(jobs []*job) {
	for _, j := range jobs {
		j.close()
	}
}

// eachJob runs fn for every pipeline concurrently and joins their errors, each named by its
// pipeline when there are several.
func eachJob(jobs []*job, fn func(j *job) error) error {
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			if err := fn(j); err != nil && len(jobs) > 1 {
				errs[i] = fmt.Errorf("pipeline %q: %w", j.flags.pipeline, err)
			} else {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
