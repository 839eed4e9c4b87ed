package proctest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Broker is a dedicated single-node Kafka run by scripts/kafka.sh on ports of its own and a state
// directory in the test's temporary directory, so a test may stop, restart or reconfigure it
// without touching the shared broker of the other tests. It is stopped at cleanup.
type Broker struct {
	t      *testing.T
	script string
	env    []string
}

// NewBroker prepares (does not start) a broker on 127.0.0.1:port with its controller on
// controllerPort. extraEnv adds kafka.sh settings (e.g. KAFKA_SECURITY=sasl_ssl and its ports,
// which are checked to be free as well when passed in extraPorts).
func NewBroker(t *testing.T, port, controllerPort int, extraPorts []int, extraEnv ...string) *Broker {
	t.Helper()
	for _, p := range append([]int{port, controllerPort}, extraPorts...) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second); err == nil {
			c.Close()
			t.Fatalf("port %d is in use: a broker left over by an earlier run? (the dedicated broker needs ports %d, %d and %v)", p, port, controllerPort, extraPorts)
		}
	}
	home := t.TempDir()
	linkSharedJars(t, home)
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "KAFKA_") || name == "KEYSETSYNC_KAFKA_HOME" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, fmt.Sprintf("KAFKA_PORT=%d", port), fmt.Sprintf("KAFKA_CONTROLLER_PORT=%d", controllerPort),
		"KEYSETSYNC_KAFKA_HOME="+home, "KAFKA_HOST=127.0.0.1")
	b := &Broker{t: t, script: filepath.Join(ModuleRoot(t), "scripts", "kafka.sh"), env: append(env, extraEnv...)}
	t.Cleanup(func() { b.Run("stop") }) // before the temporary directory is removed
	return b
}

// linkSharedJars reuses the jars the shared broker resolved (the real tier started it) rather
// than have Maven copy them again; without them kafka.sh resolves its own.
func linkSharedJars(t *testing.T, home string) {
	shared := os.Getenv("KEYSETSYNC_KAFKA_HOME")
	if shared == "" {
		if h, err := os.UserHomeDir(); err == nil {
			shared = filepath.Join(h, ".cache", "keysetsync-kafka")
		}
	}
	if _, err := os.Stat(filepath.Join(shared, "libs", ".pom.sha256")); err != nil {
		return // not completely resolved
	}
	entries, err := os.ReadDir(filepath.Join(shared, "libs"))
	require.NoError(t, err)
	libs := filepath.Join(home, "libs")
	require.NoError(t, os.Mkdir(libs, 0o755))
	for _, e := range entries {
		require.NoError(t, os.Symlink(filepath.Join(shared, "libs", e.Name()), filepath.Join(libs, e.Name())))
	}
}

// Run runs `kafka.sh cmd` and returns how long it took.
func (b *Broker) Run(cmd string) time.Duration {
	b.t.Helper()
	start := time.Now()
	c := exec.Command("bash", b.script, cmd)
	c.Env = b.env
	out, err := c.CombinedOutput()
	took := time.Since(start)
	b.t.Logf("kafka.sh %s (%s):\n%s", cmd, took.Round(time.Millisecond), strings.TrimSpace(string(out)))
	require.NoError(b.t, err, "kafka.sh %s", cmd)
	return took
}

// Start starts the broker and waits until it answers; a running broker is left as it is.
func (b *Broker) Start() time.Duration { return b.Run("start") }

// Stop stops the broker.
func (b *Broker) Stop() time.Duration { return b.Run("stop") }
