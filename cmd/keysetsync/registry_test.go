package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keysetsync/keysetsync/avro"
	"github.com/keysetsync/keysetsync/internal/kafkatest"
	"github.com/keysetsync/keysetsync/playground"
	"github.com/keysetsync/keysetsync/registry/registrytest"
)

// registryID is the id the fake registry gives the schema: four distinct bytes, so a wrong byte
// order shows.
const registryID = 0x01020304

func TestOnceWithSchemaRegistryFramesValues(t *testing.T) {
	kafkatest.Run(t, func(t *testing.T, tg kafkatest.Target) {
		f := newToolsFixture(t, tg, playground.Config{Records: 60, TieWidth: 3}, 2)
		fake := registrytest.New()
		fake.FirstID = registryID
		fake.Username, fake.Password = "svc", "reg-pa55word"
		authFile := filepath.Join(t.TempDir(), "registry-auth")
		require.NoError(t, os.WriteFile(authFile, []byte("svc:reg-pa55word\n"), 0o600))
		url := fake.Start(t)
		f.vars["KEYSETSYNC_SCHEMA_REGISTRY"] = url
		f.vars["KEYSETSYNC_SCHEMA_REGISTRY_BASIC_AUTH_FILE"] = authFile

		stderr := f.once(t)
		assert.Contains(t, stderr, "records_produced=60")
		assert.Contains(t, stderr, "schema_id=16909060")
		assert.Contains(t, stderr, "subject="+f.topic+"-value")
		assert.NotContains(t, stderr, "reg-pa55word")
		assert.Equal(t, []int{registryID}, fake.Subject(f.topic+"-value"), "TopicNameStrategy: <topic>-value")

		want := f.api.Snapshot()
		sortUsers(want)
		codec, err := avro.NewCodec()
		require.NoError(t, err)
		msgs := kafkatest.ReadAll(t, tg, f.topic)
		require.Len(t, msgs, 60)
		var got []playground.User
		for _, m := range msgs {
			require.Greater(t, len(m.Value), 5)
			require.Equal(t, []byte{0, 1, 2, 3, 4}, m.Value[:5], "magic byte 0, then the id big-endian")
			u, err := codec.Decode(m.Value[5:])
			require.NoError(t, err)
			b, err := json.Marshal(newToolUser(u))
			require.NoError(t, err)
			var pu playground.User
			require.NoError(t, json.Unmarshal(b, &pu))
			assert.Equal(t, string(m.Key), pu.ID)
			got = append(got, pu)
		}
		sortUsers(got)
		assert.Equal(t, want, got)

		// A restart registers the same schema again: same id, no new version.
		assert.Contains(t, f.once(t), "records_produced=0")
		assert.Equal(t, []int{registryID}, fake.Subject(f.topic+"-value"))

		// The tools strip the frame with --schema-registry (flag or env).
		code, out, errOut := f.run(t, "tail", "--from-beginning", "--max-messages", "60")
		require.Equal(t, 0, code, errOut)
		tailed := parseTail(t, out)
		for _, m := range tailed {
			assert.Empty(t, m.Error)
		}
		assert.Equal(t, want, valuesByID(tailed))

		code, out, errOut = f.run(t, "verify")
		require.Equal(t, 0, code, out+errOut)
		assert.Contains(t, out, "missing=0 stale=0 extra=0")

		code, out, errOut = f.run(t, "snapshot")
		require.Equal(t, 0, code, errOut)
		assert.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 60)

		// Without the flag the tools do not strip anything: tail reports undecodable values
		// instead of printing wrong data.
		delete(f.vars, "KEYSETSYNC_SCHEMA_REGISTRY")
		code, out, errOut = f.run(t, "tail", "--from-beginning", "--max-messages", "1")
		require.Equal(t, 0, code, errOut)
		plain := parseTail(t, out)
		require.Len(t, plain, 1)
		assert.NotEmpty(t, plain[0].Error)
	})
}

func TestOnceWithoutSchemaRegistryStaysPlainAvro(t *testing.T) {
	f := newToolsFixture(t, kafkatest.NewFake(t), playground.Config{Records: 5}, 1)
	f.once(t)
	codec, err := avro.NewCodec()
	require.NoError(t, err)
	for _, m := range kafkatest.ReadAll(t, f.tg, f.topic) {
		assert.NotEqual(t, byte(0), m.Value[0])
		_, err := codec.Decode(m.Value)
		require.NoError(t, err)
	}
}

func TestSchemaRegistryFailuresStopTheStart(t *testing.T) {
	f := newToolsFixture(t, kafkatest.NewFake(t), playground.Config{Records: 5}, 1)
	f.vars["KEYSETSYNC_RETRY_TIMEOUT"] = "1m"
	f.vars["KEYSETSYNC_KAFKA_WAIT"] = "1m"

	start := func(t *testing.T, vars map[string]string) (int, string, time.Duration) {
		for k, v := range f.vars {
			if _, ok := vars[k]; !ok {
				vars[k] = v
			}
		}
		began := time.Now()
		code, _, stderr := run(t.Context(), vars, "once")
		return code, stderr, time.Since(began)
	}

	t.Run("incompatible", func(t *testing.T) {
		fake := registrytest.New()
		fake.Refuse(f.topic + "-value")
		code, stderr, took := start(t, map[string]string{"KEYSETSYNC_SCHEMA_REGISTRY": fake.Start(t)})
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, `subject "`+f.topic+`-value"`)
		assert.Contains(t, stderr, "Schema being registered is incompatible")
		assert.Less(t, took, 20*time.Second, "no retry")
	})
	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		url := "http://" + l.Addr().String()
		l.Close()
		code, stderr, took := start(t, map[string]string{"KEYSETSYNC_SCHEMA_REGISTRY": url})
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, "schema registry unreachable")
		assert.Contains(t, stderr, url)
		assert.Less(t, took, 20*time.Second, "fails fast, no retry")
	})
	t.Run("unauthorized, secret never printed", func(t *testing.T) {
		fake := registrytest.New()
		fake.Username, fake.Password = "svc", "right-pa55"
		authFile := filepath.Join(t.TempDir(), "auth")
		require.NoError(t, os.WriteFile(authFile, []byte("svc:wrong-pa55\n"), 0o600))
		url := fake.Start(t)
		code, stderr, _ := start(t, map[string]string{"KEYSETSYNC_SCHEMA_REGISTRY": url, "KEYSETSYNC_SCHEMA_REGISTRY_BASIC_AUTH_FILE": authFile})
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, "401")
		assert.NotContains(t, stderr, "wrong-pa55")
		code, stderr, _ = start(t, map[string]string{"KEYSETSYNC_SCHEMA_REGISTRY": url})
		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, "401")
	})
	t.Run("usage errors", func(t *testing.T) {
		code, stderr, _ := start(t, map[string]string{"KEYSETSYNC_SCHEMA_REGISTRY": "registry:8081"})
		assert.Equal(t, 2, code, stderr)
		code, stderr, _ = start(t, map[string]string{"KEYSETSYNC_SCHEMA_REGISTRY": "", "KEYSETSYNC_SCHEMA_REGISTRY_BASIC_AUTH_FILE": "/nonexistent"})
		assert.Equal(t, 2, code, stderr)
		assert.Contains(t, stderr, "without --schema-registry")
	})
}
