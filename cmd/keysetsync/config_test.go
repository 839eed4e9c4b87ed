package main

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/playground"
)

// writeConfig writes a config file into a temp dir and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keysetsync.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

type shown struct {
	Value  any    `yaml:"value"`
	Source string `yaml:"source"`
}

// effectiveConfig runs the config command and parses its output.
func effectiveConfig(t *testing.T, vars map[string]string, args ...string) (map[string]shown, string) {
	t.Helper()
	code, out, stderr := run(t.Context(), vars, append([]string{"config"}, args...)...)
	require.Equal(t, 0, code, stderr)
	var m map[string]shown
	require.NoError(t, yaml.Unmarshal([]byte(out), &m), out)
	return m, out
}

func TestConfigPrecedenceFlagEnvFileDefault(t *testing.T) {
	path := writeConfig(t, "api-url: http://file.example/keyset\nbatch-records: 500\ntopic: from-file\ncursor-topic: cursors-from-file\ninterval: 5m\n")
	cases := []struct {
		name       string
		vars       map[string]string
		args       []string
		key, value string
		source     string
	}{
		{"default", nil, nil, "max-in-flight", "4", "default"},
		{"file", nil, nil, "batch-records", "500", "file"},
		{"file beats default for run's interval", nil, nil, "interval", "5m0s", "file"},
		{"env beats file", map[string]string{"KEYSETSYNC_BATCH_RECORDS": "200"}, nil, "batch-records", "200", "env"},
		{"flag beats env and file", map[string]string{"KEYSETSYNC_BATCH_RECORDS": "200"}, []string{"--batch-records", "100"}, "batch-records", "100", "flag"},
		{"config itself by flag", nil, nil, "config", path, "flag"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, _ := effectiveConfig(t, c.vars, append([]string{"--config", path}, c.args...)...)
			assert.Equal(t, shown{Value: c.value, Source: c.source}, m[c.key])
		})
	}
	t.Run("config from env", func(t *testing.T) {
		m, _ := effectiveConfig(t, map[string]string{"KEYSETSYNC_CONFIG": path})
		assert.Equal(t, shown{Value: path, Source: "env"}, m["config"])
		assert.Equal(t, shown{Value: "from-file", Source: "file"}, m["topic"])
	})
	t.Run("every flag of once and run is listed", func(t *testing.T) {
		m, _ := effectiveConfig(t, nil)
		for _, cmd := range []string{"once", "run"} {
			fs, _ := syncFlagSet(&env{stderr: &strings.Builder{}, getenv: func(string) string { return "" }}, cmd, "", new(time.Duration))
			for _, name := range []string{"api-url", "interval", "kafka-sasl-password", "api-header", "metrics-addr", "config"} {
				require.NotNil(t, fs.Lookup(name))
				assert.Contains(t, m, name)
			}
		}
		assert.Equal(t, "default", m["api-url"].Source)
	})
}

func TestConfigFileErrors(t *testing.T) {
	cases := []struct {
		name string
		body string
		args []string
		msg  []string
	}{
		{"unknown key", "api-url: http://x\nbatch-record: 5\n", nil, []string{"line 2", `unknown key "batch-record"`}},
		{"dashes", "--topic: x\n", nil, []string{"line 1", "without the leading dashes"}},
		{"invalid int", "topic: t\nbatch-records: lots\n", nil, []string{"line 2", `batch-records: invalid value "lots"`}},
		{"invalid duration", "api-timeout: soon\n", nil, []string{"line 1", "api-timeout", `"soon"`}},
		{"invalid bool", "kafka-tls: maybe\n", nil, []string{"line 1", "kafka-tls"}},
		{"invalid value of a secret is not shown", "kafka-tls: s3cr3t-hunter2\nkafka-sasl-password: [a, b]\n", nil, []string{"line 2", "kafka-sasl-password: want a single value"}},
		{"list for a single flag", "topic: [a, b]\n", nil, []string{"line 1", "topic: want a single value, not a list"}},
		{"mapping", "topic:\n  a: b\n", nil, []string{"line 2", "topic: want a single value"}},
		{"not a mapping", "- a\n- b\n", nil, []string{"line 1", "want a mapping"}},
		{"bad yaml", "topic: [\n", nil, []string{"yaml:", "line"}},
		{"config in the file", "config: other.yaml\n", nil, []string{"line 1", `"config" cannot be set`}},
		{"pipelines not a list", "pipelines: x\n", nil, []string{"line 1", "pipelines: want a non-empty list"}},
		{"unknown key in a pipeline", "pipelines:\n  - pipeline: a\n    topc: x\n", nil, []string{"line 3", `unknown key "topc"`}},
		{"pipeline without a name", "pipelines:\n  - topic: a\n  - pipeline: b\n    topic: b\n", nil, []string{"line 2", "item 1: set its own pipeline"}},
		{"duplicate pipeline", "pipelines:\n  - {pipeline: a, topic: a}\n  - {pipeline: a, topic: b}\n", nil, []string{"line 3", `pipeline "a" is also item 1`}},
		{"a pass limit per pipeline", "pipelines:\n  - {pipeline: a, topic: a}\n  - {pipeline: b, topic: b, max-concurrent-passes: 3}\n", nil, []string{"line 3", "item 2: max-concurrent-passes is one limit for the whole process: set it at the top level"}},
		{"validated after the file", "topic: same\ncursor-topic: same\n", nil, []string{`--topic and --cursor-topic are both "same"`}},
	}
	for _, c := range cases {
		for _, cmd := range []string{"once", "run", "config"} {
			if c.name == "validated after the file" && cmd == "config" {
				continue // config prints the values; only once and run validate them
			}
			t.Run(c.name+"/"+cmd, func(t *testing.T) {
				path := writeConfig(t, c.body)
				code, _, stderr := run(t.Context(), nil, append([]string{cmd, "--config", path, "--brokers", "127.0.0.1:1"}, c.args...)...)
				assert.Equal(t, 2, code, stderr)
				if c.name != "validated after the file" {
					assert.Contains(t, stderr, "config file "+path)
				}
				for _, m := range c.msg {
					assert.Contains(t, stderr, m)
				}
				assert.NotContains(t, stderr, "s3cr3t")
			})
		}
	}
	t.Run("missing file", func(t *testing.T) {
		code, _, stderr := run(t.Context(), nil, "once", "--config", "/nonexistent/k.yaml")
		assert.Equal(t, 2, code)
		assert.Contains(t, stderr, "--config: open /nonexistent/k.yaml")
	})
	t.Run("once ignores run's interval", func(t *testing.T) {
		path := writeConfig(t, "interval: 1m\ntopic: same\ncursor-topic: same\n")
		_, _, stderr := run(t.Context(), nil, "once", "--config", path)
		assert.Contains(t, stderr, `both "same"`) // got as far as validation
	})
}

func TestConfigMasksSecrets(t *testing.T) {
	const secret = "s3cr3t-hunter2"
	cases := []struct {
		name string
		vars map[string]string
		args []string
		file string
	}{
		{"flag", nil, []string{"--kafka-sasl-password", secret, "--api-header", "X-Api-Key: " + secret, "--api-url", "http://u:" + secret + "@h/keyset"}, ""},
		{"env", map[string]string{"KEYSETSYNC_KAFKA_SASL_PASSWORD": secret, "KEYSETSYNC_API_HEADER": "X-Api-Key: " + secret + "\nX-Tenant: @/run/tenant", "KEYSETSYNC_API_URL": "http://u:" + secret + "@h/keyset"}, nil, ""},
		{"file", nil, nil, "kafka-sasl-password: " + secret + "\napi-header:\n  - 'X-Api-Key: " + secret + "'\n  - 'X-Tenant: @/run/tenant'\napi-url: http://u:" + secret + "@h/keyset\n"},
		{"pipeline in the file", nil, nil, "pipelines:\n  - pipeline: a\n    kafka-sasl-password: " + secret + "\n    api-header: ['X-Api-Key: " + secret + "']\n    api-url: http://u:" + secret + "@h/keyset\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if c.file != "" {
				args = append(args, "--config", writeConfig(t, c.file))
			}
			args = append(args, "--kafka-sasl-password-file", "/run/secrets/kafka")
			code, out, stderr := run(t.Context(), c.vars, append([]string{"config"}, args...)...)
			require.Equal(t, 0, code, stderr)
			assert.NotContains(t, out+stderr, secret)
			assert.Contains(t, out, "value: /run/secrets/kafka") // a file path is shown
			if c.name == "pipeline in the file" {
				return
			}
			var m map[string]shown
			require.NoError(t, yaml.Unmarshal([]byte(out), &m))
			assert.Equal(t, "***", m["kafka-sasl-password"].Value)
			assert.Equal(t, "http://***@h/keyset", m["api-url"].Value)
			assert.Contains(t, m["api-header"].Value, "X-Api-Key: ***")
			if c.name != "flag" {
				assert.Contains(t, m["api-header"].Value, "X-Tenant: @/run/tenant")
			}
		})
	}
	t.Run("empty secret is shown empty", func(t *testing.T) {
		m, _ := effectiveConfig(t, nil)
		assert.Equal(t, "", m["kafka-sasl-password"].Value)
	})
}

func TestSecretFlagRule(t *testing.T) {
	for name, want := range map[string]bool{
		"kafka-sasl-password":       true,
		"kafka-sasl-password-file":  false,
		"api-bearer-token-file":     false,
		"api-basic-auth-file":       false,
		"schema-registry-password":  true,
		"schema-registry-auth":      true,
		"kafka-tls-key":             false,
		"kafka-sasl-username":       false,
		"api-url":                   false,
		"some-client-secret":        true,
		"registry-bearer-token":     true,
		"registry-credentials-file": false,
	} {
		assert.Equal(t, want, secretFlag(name), name)
	}
}

func TestOnceWithConfigFileSyncsThePlayground(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		api, err := playground.New(playground.Config{Records: 120})
		require.NoError(t, err)
		srv := httptest.NewServer(api.Handler())
		t.Cleanup(srv.Close)
		topic, cursors := kafkatest.Topic(t, "users"), kafkatest.Topic(t, "cursors")
		path := writeConfig(t, "api-url: "+srv.URL+"/pagination/keyset\ntopic: overridden-by-env\ncursor-topic: "+cursors+
			"\npipeline: from-file\nbatch-records: 50\ntopic-replication-factor: 1\nbrokers: 127.0.0.1:1\n")
		vars := map[string]string{"KEYSETSYNC_TOPIC": topic}
		code, _, stderr := run(t.Context(), vars, "once", "--config", path, "--brokers", strings.Join(tg.Brokers, ","))
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "records_produced=120")
		assert.Len(t, kafkatest.ReadAll(t, tg, topic), 120)
		assert.EqualValues(t, 120, kafkatest.Cursor(t, tg, cursors, "from-file").Records)
	})
}

// twoPipelines starts two playgrounds and writes a config file with one pipeline for each.
func twoPipelines(t *testing.T, tg kafkatest.Target, records [2]int) (path, cursors string, topics [2]string) {
	t.Helper()
	cursors = kafkatest.Topic(t, "cursors")
	body := "brokers: " + strings.Join(tg.Brokers, ",") + "\ncursor-topic: " + cursors + "\nbatch-records: 40\nretry-timeout: 0s\npipelines:\n"
	for i, n := range records {
		api, err := playground.New(playground.Config{Records: n})
		require.NoError(t, err)
		srv := httptest.NewServer(api.Handler())
		t.Cleanup(srv.Close)
		topics[i] = kafkatest.Topic(t, "users")
		body += "  - pipeline: p" + string(rune('a'+i)) + "\n    api-url: " + srv.URL + "/pagination/keyset\n    topic: " + topics[i] + "\n"
	}
	return writeConfig(t, body), cursors, topics
}

func TestOnceRunsEveryPipelineOfTheConfigFile(t *testing.T) {
	tg := kafkatest.NewFake(t)
	path, cursors, topics := twoPipelines(t, tg, [2]int{70, 130})
	code, _, stderr := run(t.Context(), nil, "once", "--config", path)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, kafkatest.ReadAll(t, tg, topics[0]), 70)
	assert.Len(t, kafkatest.ReadAll(t, tg, topics[1]), 130)
	assert.Contains(t, stderr, "pipeline=pa")
	assert.Contains(t, stderr, "pipeline=pb")
	for name, n := range map[string]int{"pa": 70, "pb": 130} {
		assert.EqualValues(t, n, kafkatest.Cursor(t, tg, cursors, name).Records, name)
	}

	t.Run("config shows each pipeline", func(t *testing.T) {
		code, out, stderr := run(t.Context(), nil, "config", "--config", path)
		require.Equal(t, 0, code, stderr)
		var m struct {
			Pipelines []map[string]shown `yaml:"pipelines"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(out), &m))
		require.Len(t, m.Pipelines, 2)
		assert.Equal(t, shown{Value: topics[1], Source: "file"}, m.Pipelines[1]["topic"])
		assert.Equal(t, shown{Value: "40", Source: "file"}, m.Pipelines[1]["batch-records"])
	})

	t.Run("one failing pipeline fails once and is named", func(t *testing.T) {
		bad := strings.Replace(mustRead(t, path), "pipelines:\n", "pipelines:\n  - {pipeline: pc, api-url: 'http://127.0.0.1:1/keyset', topic: '"+kafkatest.Topic(t, "u")+"', api-max-attempts: 1}\n", 1)
		code, _, stderr := run(t.Context(), nil, "once", "--config", writeConfig(t, bad))
		assert.Equal(t, 1, code, stderr)
		assert.Contains(t, stderr, `pipeline "pc"`)
		assert.Contains(t, stderr, "connection refused")
	})
}

// TestPipelinesShareOneCursorStore: the pipelines of a process that share a cursor topic share
// one store of it, which reads the topic once and follows it; seen from outside, its warning
// about an existing cursor topic that keeps growing is logged once, for no pipeline in
// particular, not once per pipeline.
func TestPipelinesShareOneCursorStore(t *testing.T) {
	tg := kafkatest.NewFake(t)
	path, cursors, topics := twoPipelines(t, tg, [2]int{30, 50})
	kafkatest.CreateTopic(t, tg, cursors, 1, map[string]string{"cleanup.policy": "compact"}) // the broker's segment defaults
	code, _, stderr := run(t.Context(), nil, "once", "--config", path)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, kafkatest.ReadAll(t, tg, topics[1]), 50)
	var warnings []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "compaction never cleans an active segment") {
			warnings = append(warnings, l)
		}
	}
	require.Len(t, warnings, 1, stderr)
	assert.NotContains(t, warnings[0], "pipeline=")
	assert.Contains(t, warnings[0], "topic="+cursors)
}

func mustRead(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func TestRunRunsEveryPipelineUntilCancelled(t *testing.T) {
	tg := kafkatest.NewFake(t)
	path, _, topics := twoPipelines(t, tg, [2]int{30, 60})
	ctx, cancel := context.WithCancel(t.Context())
	var code int
	var stderr string
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, _, stderr = run(ctx, nil, "run", "--config", path, "--interval", "1h")
	}()
	client := tg.Kafka(t)
	require.Eventually(t, func() bool {
		for i, n := range []int{30, 60} {
			if _, err := client.Partitions(t.Context(), topics[i]); err != nil || len(kafkatest.ReadAll(t, tg, topics[i])) != n {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after cancellation")
	}
	assert.Equal(t, 0, code, stderr)
	assert.Equal(t, 2, strings.Count(stderr, "stopping on signal"), stderr)
}

func TestConfigPipelinePrecedence(t *testing.T) {
	path := writeConfig(t, "batch-records: 11\nlookback: 1m\npipelines:\n  - {pipeline: a, batch-records: 9, interval: 2m}\n  - {pipeline: b}\n")
	code, out, stderr := run(t.Context(), map[string]string{"KEYSETSYNC_LOOKBACK": "3m"}, "config", "--config", path, "--batch-records", "7")
	require.Equal(t, 0, code, stderr)
	var m struct {
		Pipelines []map[string]shown `yaml:"pipelines"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(out), &m))
	require.Len(t, m.Pipelines, 2)
	a, b := m.Pipelines[0], m.Pipelines[1]
	cases := []struct {
		name string
		got  shown
		want shown
	}{
		{"item key beats flag", a["batch-records"], shown{"9", "file"}},
		{"flag beats top level", b["batch-records"], shown{"7", "flag"}},
		{"env beats top level", b["lookback"], shown{"3m0s", "env"}},
		{"item interval", a["interval"], shown{"2m0s", "file"}},
		{"default interval", b["interval"], shown{"30s", "default"}},
		{"item name", b["pipeline"], shown{"b", "file"}},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, c.got, c.name)
	}
}

// The pipelines of one process share one Kafka client (one connection pool, one copy of the
// cluster's metadata) per broker set and security settings: a client per pipeline cost about
// 5 MiB and a metadata refresh of the whole cluster per idle pipeline (issue 12).
func TestPipelinesShareOneKafkaClientPerCluster(t *testing.T) {
	one, other := kafkatest.NewFake(t), kafkatest.NewFake(t)
	path, _, _ := twoPipelines(t, one, [2]int{10, 10})
	// Two more: one on the same cluster, its broker list spelled with spaces; one on another.
	body := mustRead(t, path) +
		"  - {pipeline: pc, api-url: 'http://127.0.0.1:1/keyset', topic: '" + kafkatest.Topic(t, "u") + "', brokers: ' " + strings.Join(one.Brokers, " , ") + " '}\n" +
		"  - {pipeline: pd, api-url: 'http://127.0.0.1:1/keyset', topic: '" + kafkatest.Topic(t, "u") + "', brokers: '" + strings.Join(other.Brokers, ",") + "'}\n"
	var errb bytes.Buffer
	e := &env{stdout: io.Discard, stderr: &lockedWriter{w: &errb}, getenv: func(string) string { return "" }}
	set, err := startJobs(t.Context(), e, []string{"--config", writeConfig(t, body)}, "once", "", nil)
	require.NoError(t, err, errb.String())
	t.Cleanup(set.close)
	jobs := set.jobs
	require.Len(t, jobs, 4)
	for _, j := range jobs[1:3] {
		assert.Same(t, jobs[0].kafka, j.kafka, "pipeline %s has a Kafka client of its own", j.flags.pipeline)
	}
	assert.NotSame(t, jobs[0].kafka, jobs[3].kafka, "a pipeline on another cluster got the first cluster's client")
	assert.Equal(t, other.Brokers, jobs[3].kafka.Brokers())
}

// Every line a pipeline logs names it exactly once, whether the process runs one pipeline or
// several: with many pipelines the lines of the pipeline package carried pipeline= twice (cmd
// and pipeline.New both added it).
func TestEveryLogLineNamesItsPipelineOnce(t *testing.T) {
	tg := kafkatest.NewFake(t)
	api, err := playground.New(playground.Config{Records: 30})
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	twoPath, _, _ := twoPipelines(t, tg, [2]int{20, 30})
	cases := []struct {
		name  string
		args  []string
		names []string
	}{
		{"one pipeline", []string{"--api-url", srv.URL + "/pagination/keyset", "--brokers", strings.Join(tg.Brokers, ","),
			"--topic", kafkatest.Topic(t, "u"), "--cursor-topic", kafkatest.Topic(t, "c"), "--pipeline", "solo"}, []string{"solo"}},
		{"two pipelines", []string{"--config", twoPath}, []string{"pa", "pb"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := run(t.Context(), nil, append([]string{"once", "--log-level", "debug"}, c.args...)...)
			require.Equal(t, 0, code, stderr)
			seen := map[string]int{}
			for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
				n := 0
				for _, k := range logtest.Keys(line) {
					if k == "pipeline" {
						n++
					}
				}
				// The process's shared parts (the cursor store of a cursor topic, the memory
				// limit) log unnamed; nothing logs the name twice.
				if n == 0 && processLine(line) {
					continue
				}
				if !assert.Equal(t, 1, n, "pipeline= %d times in: %s", n, line) {
					continue
				}
				for _, name := range c.names {
					if strings.Contains(line, " pipeline="+name+" ") || strings.HasSuffix(line, " pipeline="+name) {
						seen[name]++
					}
				}
			}
			for _, name := range c.names {
				assert.Positive(t, seen[name], "no line of pipeline %s", name)
			}
		})
	}
}

// processLine says whether a log line is the process's rather than one pipeline's: the shared
// cursor store's (which names the pipeline of a cursor it loads itself) and the memory limit's.
func processLine(line string) bool {
	for _, msg := range []string{`msg="created cursor topic"`, `msg="soft memory limit`, `msg="cursor topic`} {
		if strings.Contains(line, msg) {
			return true
		}
	}
	return false
}
