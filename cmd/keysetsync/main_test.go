package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/cursor"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/internal/logtest"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/source"
)

// run calls dispatch in-process with the given env vars and returns exit code, stdout, stderr.
func run(ctx context.Context, vars map[string]string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }}
	code := dispatch(ctx, e, args)
	return code, out.String(), errb.String()
}

func TestSchemaPrintsTheEmbeddedSchema(t *testing.T) {
	code, out, _ := run(t.Context(), nil, "schema")
	require.Equal(t, 0, code)
	assert.Equal(t, avro.UserSchema(), out)
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		name string
		vars map[string]string
		args []string
		code int
		msg  string
	}{
		{"no command", nil, nil, 2, "Usage: keysetsync <command>"},
		{"unknown command", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", nil, []string{"once", "--nope"}, 2, "flag provided but not defined: -nope"},
		{"bad duration in env", map[string]string{"KEYSETSYNC_INTERVAL": "soon"}, []string{"run"}, 2, `invalid value "soon" for KEYSETSYNC_INTERVAL`},
		{"same topic twice", nil, []string{"once", "--topic", "x", "--cursor-topic", "x"}, 2, `--topic and --cursor-topic are both "x"`},
		{"bad batch size", nil, []string{"once", "--batch-records", "0"}, 2, "--batch-records 0"},
		{"fetch concurrency 0", nil, []string{"once", "--fetch-concurrency", "0"}, 2, "--fetch-concurrency 0: must be 1 to 32"},
		{"fetch concurrency beyond the cursor's shares", nil, []string{"once", "--fetch-concurrency", "33"}, 2, "--fetch-concurrency 33: must be 1 to 32"},
		{"bad log level", nil, []string{"once", "--log-level", "loud"}, 2, `--log-level "loud"`},
		// The API settings are checked before Kafka is contacted: a usage error, not a connection failure.
		{"bad api url", nil, []string{"once", "--brokers", "127.0.0.1:1", "--api-url", "ftp://x"}, 2, `api url "ftp://x": want http(s)://host/path`},
		// An unreachable broker: without the floor, run would fail there with 1, not 2.
		{"interval 0s", nil, []string{"run", "--brokers", "127.0.0.1:1", "--interval", "0s"}, 2, "--interval 0s: below the floor of 100ms (a pass would start about 1000 times a second)"},
		{"interval below the floor in env", map[string]string{"KEYSETSYNC_INTERVAL": "99ms"}, []string{"run", "--brokers", "127.0.0.1:1"}, 2, "--interval 99ms: below the floor of 100ms"},
		{"interval at the floor", nil, []string{"run", "--brokers", "127.0.0.1:1", "--kafka-wait", "0s", "--interval", "100ms"}, 1, "127.0.0.1:1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := run(t.Context(), c.vars, c.args...)
			assert.Equal(t, c.code, code, stderr)
			assert.Contains(t, stderr, c.msg)
		})
	}
}

func TestHelpListsEveryFlagWithItsEnvVar(t *testing.T) {
	for _, cmd := range []string{"once", "run", "playground"} {
		t.Run(cmd, func(t *testing.T) {
			code, _, stderr := run(t.Context(), nil, cmd, "--help")
			require.Equal(t, 0, code)
			for _, flag := range []string{"api-url", "brokers", "topic", "cursor-topic", "pipeline"} {
				if cmd == "playground" {
					flag = "addr"
				}
				assert.Contains(t, stderr, "--"+flag+"  (env "+envName(flag)+", default ")
			}
		})
	}
}

// TestREADMEDocumentsEveryFlag: the README is the user's reference, so every flag of every
// command appears in it, and so does the env var of each flag of once and run (the tables).
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	flagLine := regexp.MustCompile(`(?m)^  --([a-z0-9-]+)  \(env (KEYSETSYNC_[A-Z0-9_]+),`)
	for _, cmd := range [][]string{{"once"}, {"run"}, {"config"}, {"verify"}, {"cursor", "show"}, {"cursor", "set"}, {"cursor", "reset"},
		{"tail"}, {"snapshot"}, {"playground"}, {"schema"}} {
		t.Run(strings.Join(cmd, " "), func(t *testing.T) {
			code, _, stderr := run(t.Context(), nil, append(cmd, "--help")...)
			require.Equal(t, 0, code)
			flags := flagLine.FindAllStringSubmatch(stderr, -1)
			require.NotEmpty(t, flags)
			for _, f := range flags {
				assert.Contains(t, string(readme), "`--"+f[1]+"`", "keysetsync %s --%s", strings.Join(cmd, " "), f[1])
				if cmd[0] == "once" || cmd[0] == "run" {
					// Flags documented as a group ("the Kafka security flags") name their env vars there.
					assert.Contains(t, string(readme), "`"+f[2]+"`", "env var of keysetsync %s --%s", cmd[0], f[1])
				}
			}
		})
	}
}

func TestOnceSyncsThePlaygroundAndFlagsBeatEnv(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		api, err := playground.New(playground.Config{Records: 500, TieWidth: 20})
		require.NoError(t, err)
		srv := httptest.NewServer(api.Handler())
		t.Cleanup(srv.Close)
		topic, cursors := kafkatest.Topic(t, "users"), kafkatest.Topic(t, "cursors")
		vars := map[string]string{
			"KEYSETSYNC_BROKERS":      strings.Join(tg.Brokers, ","),
			"KEYSETSYNC_API_URL":      srv.URL + "/pagination/keyset",
			"KEYSETSYNC_TOPIC":        "overridden-by-the-flag",
			"KEYSETSYNC_CURSOR_TOPIC": cursors,
			"KEYSETSYNC_PIPELINE":     "cli",
		}
		code, _, stderr := run(t.Context(), vars, "once", "--topic", topic, "--topic-replication-factor", "1")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, "records_produced=500")
		assert.Len(t, kafkatest.ReadAll(t, tg, topic), 500)

		assert.EqualValues(t, 500, kafkatest.Cursor(t, tg, cursors, "cli").Records)

		code, _, stderr = run(t.Context(), vars, "once", "--topic", topic, "--log-format", "json")
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, `"records_produced":0`)
	})
}

func TestOnceFailsClearlyWhenTheAPIIsDown(t *testing.T) {
	tg := kafkatest.NewFake(t)
	srv := httptest.NewServer(nil)
	url := srv.URL
	srv.Close()
	code, _, stderr := run(t.Context(), nil, "once", "--brokers", tg.Brokers[0], "--api-url", url+"/pagination/keyset",
		"--api-max-attempts", "2", "--retry-timeout", "0", "--topic", kafkatest.Topic(t, "u"), "--cursor-topic", kafkatest.Topic(t, "c"))
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "source API request failed")
	assert.Contains(t, stderr, "connection refused")
}

func TestRunStopsCleanlyWhenCancelled(t *testing.T) {
	tg := kafkatest.NewFake(t)
	api, err := playground.New(playground.Config{Records: 50})
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	topic := kafkatest.Topic(t, "u")
	ctx, cancel := context.WithCancel(t.Context())
	var code int
	var stderr string
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, _, stderr = run(ctx, nil, "run", "--brokers", tg.Brokers[0], "--api-url", srv.URL+"/pagination/keyset",
			"--interval", "1h", "--topic", topic, "--cursor-topic", kafkatest.Topic(t, "c"))
	}()
	// The first pass has finished once all 50 records are in the topic; then stop it.
	client := tg.Kafka(t)
	require.Eventually(t, func() bool {
		_, err := client.Partitions(t.Context(), topic) // run creates it; until then there is nothing to read
		return err == nil && len(kafkatest.ReadAll(t, tg, topic)) == 50
	}, 30*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after cancellation")
	}
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "stopping on signal")
}

func TestVerifyFindsMissingAndStaleIDs(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		api, err := playground.New(playground.Config{Records: 300, TieWidth: 7})
		require.NoError(t, err)
		srv := httptest.NewServer(api.Handler())
		t.Cleanup(srv.Close)
		topic := kafkatest.Topic(t, "users")
		kafkatest.CreateTopic(t, tg, topic, 3, nil)
		vars := map[string]string{
			"KEYSETSYNC_BROKERS": strings.Join(tg.Brokers, ","), "KEYSETSYNC_API_URL": srv.URL + "/pagination/keyset",
			"KEYSETSYNC_TOPIC": topic, "KEYSETSYNC_CURSOR_TOPIC": kafkatest.Topic(t, "cursors"), "KEYSETSYNC_TOPIC_REPLICATION_FACTOR": "1",
		}
		code, _, stderr := run(t.Context(), vars, "verify")
		assert.Equal(t, 1, code, "verify before any sync: everything is missing")
		assert.Contains(t, stderr, "300 missing")

		code, _, stderr = run(t.Context(), vars, "once")
		require.Equal(t, 0, code, stderr)
		code, out, stderr := run(t.Context(), vars, "verify")
		assert.Equal(t, 0, code, stderr)
		assert.Contains(t, out, "ids_in_topic=300 ids_in_api=300 missing=0 stale=0 extra=0")

		updated := api.Update(3)
		code, out, _ = run(t.Context(), vars, "verify")
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "missing=0 stale=3")
		for _, u := range updated {
			assert.Contains(t, out, "stale "+u.ID)
		}
	})
}

func TestExitCodes(t *testing.T) {
	cases := []struct {
		name string
		err  error
		code int
	}{
		{"success", nil, 0},
		{"failure", errors.New("API down"), 1},
		{"usage", fmt.Errorf("%w: --batch-records 0", errUsage), 2},
		{"records may be missing", fmt.Errorf("%w: %w", errMayBeMissing, errors.New("ties")), 3},
		{"cannot verify", fmt.Errorf("%w: ties", errCannotVerify), 3},
		{"SIGINT", fmt.Errorf("%w: stopped", &signalError{sig: syscall.SIGINT}), 130},
		{"SIGTERM", fmt.Errorf("%w: stopped", &signalError{sig: syscall.SIGTERM}), 143},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.code, exitCode(c.err))
		})
	}
	assert.Equal(t, "interrupted by SIGTERM", (&signalError{sig: syscall.SIGTERM}).Error())
}

// TestOnceStoppedBySignalWhileOpening: a signal that arrives before the pipeline is open (here
// before once starts; in life during --kafka-wait) is still reported as the signal, not as the
// connection error it caused. The subprocess tests of a signal mid-pass are in
// internal/crashtest (TestGracefulStop).
func TestOnceStoppedBySignalWhileOpening(t *testing.T) {
	f := newToolsFixture(t, kafkatest.NewFake(t), playground.Config{Records: 10}, 1)
	ctx, cancel := context.WithCancelCause(t.Context())
	stderr := &logtest.Buffer{}
	e := &env{stdout: io.Discard, stderr: stderr, getenv: func(k string) string { return f.vars[k] }}
	cancel(&signalError{sig: syscall.SIGTERM}) // what main's notifySignals does on SIGTERM
	code := dispatch(ctx, e, []string{"once"})
	assert.Equal(t, 143, code, stderr.String())
	assert.Contains(t, stderr.String(), "keysetsync once: interrupted by SIGTERM")
}

// TestLibraryErrorsGetTheirFlagHint: a library error that says what is wrong in its own terms
// reaches the user with the flag or command that changes it; others are left as they are.
func TestLibraryErrorsGetTheirFlagHint(t *testing.T) {
	corrupt := &cursor.CorruptError{Pipeline: "users", At: "c/0 offset 3", Err: fmt.Errorf("%w: bad", cursor.ErrCorrupt)}
	cases := []struct {
		name string
		err  error
		want string // the whole message
	}{
		{"tie overflow", fmt.Errorf("pass: %w", &source.TieOverflowError{Total: 1, Overflows: []source.TieOverflow{{Page: 2, Delivered: 50}}}),
			"Configure its after-id parameter or a larger page size, then re-read from before the first of these times: --api-after-id-param or a larger --api-page-size; move the cursor back with keysetsync cursor set --to"},
		{"corrupt cursor", fmt.Errorf("load: %w", corrupt),
			"commit a new cursor over it: keysetsync cursor set --pipeline users --to <time> (or cursor reset)"},
		{"corrupt, not a record", fmt.Errorf("%w: seq 9 cannot be increased", cursor.ErrCorrupt), "corrupt cursor record: seq 9 cannot be increased"},
		{"cursor topic not compacted", fmt.Errorf("open: %w: topic %q has cleanup.policy=%q; set cleanup.policy=compact on it or choose another cursor topic", cursor.ErrNotCompacted, "c", "delete"),
			"choose another cursor topic: --cursor-topic names the cursor topic"},
		{"anything else", errors.New("boom"), "boom"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := withHint(c.err)
			assert.True(t, strings.HasSuffix(got.Error(), c.want), "%q\ndoes not end with\n%q", got, c.want)
			assert.ErrorIs(t, got, c.err, "the cause stays reachable")
		})
	}
}
