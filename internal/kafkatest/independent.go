package kafkatest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/internal/proctest"
	"github.com/keysetsync/keysetsync/pipeline"
)

// The clients below are not ours: they check a data topic the way a user's consumer reads it,
// with isolation.level=read_committed, so that what they find does not depend on keysetsync's
// own reader (kafka.TxnReadPartition) being right.

// independentTimeout bounds one run of an independent consumer (a JVM start included).
const independentTimeout = 2 * time.Minute

// CheckTopicPy runs scripts/check_topic.py (librdkafka through python3-confluent-kafka, the
// Apache Avro reference decoder) on topic at isolation.level=read_committed against the API
// snapshot at snapshotURL (the playground's /snapshot), failing the test unless it exits 0:
// every snapshot record in the topic with equal fields, nothing undecodable, and, with
// maxDuplicates >= 0, at most that many repeated record versions. It returns the script's
// summary (messages, duplicates, missing, stale, ...).
func CheckTopicPy(t testing.TB, brokers []string, topic, snapshotURL string, maxDuplicates int) map[string]any {
	t.Helper()
	const py = "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import avro.io, confluent_kafka").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import avro and confluent_kafka (install with: . scripts/lib.sh; ks_ensure_tools): %v\n%s", py, err, out)
	}
	dir := t.TempDir()
	schema := filepath.Join(dir, "schema.avsc")
	require.NoError(t, os.WriteFile(schema, []byte(avro.UserSchema()), 0o600))
	summary := filepath.Join(dir, "summary.json")
	args := []string{filepath.Join(proctest.ModuleRoot(t), "scripts", "check_topic.py"), "--brokers", strings.Join(brokers, ","),
		"--topic", topic, "--schema", schema, "--snapshot-url", snapshotURL, "--summary-json", summary}
	if maxDuplicates >= 0 {
		args = append(args, "--max-duplicates", strconv.Itoa(maxDuplicates))
	}
	ctx, cancel := context.WithTimeout(context.Background(), independentTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, args...).CombinedOutput()
	require.NoError(t, err, "check_topic.py (librdkafka, read_committed) on %s:\n%s", topic, out)
	t.Logf("check_topic.py: %s", firstLine(out, "check_topic: topic="))
	raw, err := os.ReadFile(summary)
	require.NoError(t, err)
	var s map[string]any
	require.NoError(t, json.Unmarshal(raw, &s), "check_topic.py summary")
	return s
}

// consoleSeparators frame the console consumer's output: the value is Avro binary, which any
// single byte (a newline is a string of length 5) can appear in.
const (
	consoleFieldSep  = "\x1f<ks>\x1f"
	consoleRecordSep = "\x1e<ks-record>\x1e"
)

// ConsoleConsume reads the first n records of topic with Kafka's own console consumer
// (org.apache.kafka.tools.consumer.ConsoleConsumer, run by scripts/kafka.sh tool, with
// --isolation-level read_committed and --from-beginning), values as raw bytes. It fails the
// test unless the consumer read n records. Partition and offset come from the consumer's own
// output; headers are parsed as key:value.
func ConsoleConsume(t testing.TB, brokers []string, topic string, n int) []Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), independentTimeout)
	defer cancel()
	// --timeout-ms only bounds a consumer that finds fewer than n records (a failure): the
	// read ends with the nth record.
	cmd := exec.CommandContext(ctx, filepath.Join(proctest.ModuleRoot(t), "scripts", "kafka.sh"), "tool",
		"org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", strings.Join(brokers, ","),
		"--topic", topic, "--from-beginning", "--isolation-level", "read_committed",
		"--max-messages", strconv.Itoa(n), "--timeout-ms", "60000",
		"--formatter-property", "print.partition=true", "--formatter-property", "print.offset=true",
		"--formatter-property", "print.headers=true", "--formatter-property", "print.key=true",
		"--formatter-property", "key.separator="+consoleFieldSep, "--formatter-property", "line.separator="+consoleRecordSep,
		"--formatter-property", "headers.separator=,")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "Kafka console consumer (read_committed) on %s:\n%s", topic, stderr.String())
	require.Contains(t, stderr.String(), fmt.Sprintf("Processed a total of %d messages", n), "console consumer on %s", topic)
	var msgs []Message
	for rec := range strings.SplitSeq(strings.TrimSuffix(stdout.String(), consoleRecordSep), consoleRecordSep) {
		if len(msgs) == 0 && rec == "" && n == 0 {
			break
		}
		f := strings.SplitN(rec, consoleFieldSep, 5)
		require.Len(t, f, 5, "console consumer record %q", rec)
		m := Message{Key: []byte(f[3]), Value: []byte(f[4]), Headers: map[string]string{}}
		p, perr := strconv.Atoi(strings.TrimPrefix(f[0], "Partition:"))
		off, oerr := strconv.ParseInt(strings.TrimPrefix(f[1], "Offset:"), 10, 64)
		require.NoError(t, perr, "partition of %q", rec)
		require.NoError(t, oerr, "offset of %q", rec)
		m.Partition, m.Offset = p, off
		if f[2] != "NO_HEADERS" {
			for h := range strings.SplitSeq(f[2], ",") {
				k, v, _ := strings.Cut(h, ":")
				m.Headers[k] = v
			}
		}
		msgs = append(msgs, m)
	}
	require.Len(t, msgs, n, "records parsed from the console consumer's output on %s", topic)
	return msgs
}

// Versions counts the record versions of msgs: by key, keysetsync.updated_at header and value
// bytes, it returns how many messages repeat an earlier one and up to max examples of them.
func Versions(msgs []Message, max int) (duplicates int, examples []string) {
	seen := make(map[string]int64, len(msgs))
	for _, m := range msgs {
		k := string(m.Key) + "\x00" + m.Headers[pipeline.HeaderUpdatedAt] + "\x00" + string(m.Value)
		if first, ok := seen[k]; ok {
			duplicates++
			if len(examples) < max {
				examples = append(examples, fmt.Sprintf("id %s updated_at %s at %d/%d, first at offset %d", m.Key, m.Headers[pipeline.HeaderUpdatedAt], m.Partition, m.Offset, first))
			}
			continue
		}
		seen[k] = m.Offset
	}
	return duplicates, examples
}

func firstLine(out []byte, prefix string) string {
	for l := range strings.Lines(string(out)) {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(string(out))
}
