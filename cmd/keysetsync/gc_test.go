package main

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/internal/kafkatest"
)

// The soft memory limit grows with the pass slots the pipelines of the process can fill, and a
// little with the pipelines: the one-pipeline 48 MiB under the live heap of a hundred made the
// collector run without pause, and 2 MiB per pipeline let a thousand fill 2 GiB (issue 12).
func TestMemoryLimitIsSetForThePipelinesOfTheProcess(t *testing.T) {
	tg := kafkatest.NewFake(t)
	path, _, _ := twoPipelines(t, tg, [2]int{5, 5})
	single := []string{"--brokers", tg.Brokers[0], "--api-url", "http://127.0.0.1:1/keyset",
		"--topic", kafkatest.Topic(t, "u"), "--cursor-topic", kafkatest.Topic(t, "c")}
	cases := []struct {
		name string
		args []string
		want int64 // 0: left at the one-pipeline limit tuneGC set
	}{
		{"one pipeline keeps the base limit", single, 0},
		{"two pipelines", []string{"--config", path}, memoryLimit(2, defaultMaxPasses())},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var set int64
			var errb bytes.Buffer
			e := &env{stdout: io.Discard, stderr: &lockedWriter{w: &errb}, getenv: func(string) string { return "" },
				memoryLimit: func(n, slots int) int64 { set = memoryLimit(n, slots); return set }}
			jobs, err := startJobs(t.Context(), e, c.args, "once", "", nil)
			require.NoError(t, err, errb.String())
			jobs.close()
			assert.Equal(t, c.want, set)
			if c.want > 0 {
				assert.Contains(t, errb.String(), "memory_limit_mib=")
			}
		})
	}
	assert.Equal(t, int64(48<<20), memoryLimit(1, 1))
	assert.Equal(t, memoryLimit(1, 1), memoryLimit(1, 8), "one pipeline fills one slot")
	assert.Greater(t, memoryLimit(2, 8), memoryLimit(1, 8))
	assert.Greater(t, memoryLimit(1000, 16), memoryLimit(1000, 8), "more slots, more passes holding data at once")
	// Measured: 1,000 pipelines on 8 slots peaked at a live heap of 100-130 MB; under GOGC=400
	// the limit is what bounds the heap, and the RSS came out about 3% above it.
	assert.GreaterOrEqual(t, memoryLimit(1000, 8), int64(3*130<<20), "too close to the live heap of 1,000 pipelines on 8 slots: the collector runs without pause")
	assert.LessOrEqual(t, memoryLimit(1000, 8), int64(480<<20), "1,000 pipelines on 8 slots must fit 512 MiB")
}

// GOMEMLIMIT is the user's choice: keysetsync never changes it, for any number of pipelines.
func TestGOMEMLIMITWins(t *testing.T) {
	env := map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"} // both set: tuneGC changes nothing
	assert.Nil(t, tuneGC(func(k string) string { return env[k] }))
}

// The pipelines of a process share what is the same for all of them and safe to share: one
// Avro codec (1,000 codecs were 13 MB of the live heap of 1,000 pipelines).
func TestPipelinesShareOneCodec(t *testing.T) {
	tg := kafkatest.NewFake(t)
	path, _, _ := twoPipelines(t, tg, [2]int{5, 5})
	e := &env{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	jobs, err := startJobs(t.Context(), e, []string{"--config", path}, "once", "", nil)
	require.NoError(t, err)
	defer jobs.close()
	require.Len(t, jobs.jobs, 2)
	require.NotNil(t, jobs.jobs[0].codec)
	assert.Same(t, jobs.jobs[0].codec, jobs.jobs[1].codec)
}
