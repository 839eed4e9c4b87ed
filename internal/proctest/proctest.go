// Package proctest runs the real keysetsync binary as a subprocess from tests: it builds
// cmd/keysetsync, starts it with an environment free of KEYSETSYNC_* variables, and follows its
// stderr line by line as it comes.
//
// It exists so that the test packages driving the binary from outside (internal/crashtest,
// internal/restarttest) share one implementation of building, starting, watching and stopping
// it, instead of each carrying its own copy.
package proctest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ModuleRoot returns the directory of go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err, "go env GOMOD")
	gomod := strings.TrimSpace(string(out))
	require.True(t, gomod != "" && gomod != os.DevNull, "not inside the module: go env GOMOD = %q", gomod)
	return filepath.Dir(gomod)
}

// BuildBinary builds cmd/keysetsync into a temporary directory of t and returns its path. It
// builds on every call: the binary lives only as long as t.
func BuildBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keysetsync")
	build := exec.Command("go", "build", "-o", bin, "./cmd/keysetsync")
	build.Dir = ModuleRoot(t)
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/keysetsync:\n%s", out)
	return bin
}

// ChildEnv is the test's environment without KEYSETSYNC_* variables, so only the flags the test
// passes configure the binary.
func ChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYSETSYNC_") {
			env = append(env, kv)
		}
	}
	return env
}

// Options of Start.
type Options struct {
	// Name names the process in failure messages and logs; the binary's base name if empty.
	Name string
	// OnLine, if set, is called for every stderr line, in order, from the goroutine that reads
	// them, as soon as the line is read (and after Lines includes it), so a kill or a signal
	// follows the log line that triggered it as closely as possible. Everything it writes
	// happens before Wait returns.
	OnLine func(p *Proc, line string)
	// Log has Wait log the exit status and the run time, and the cleanup log the last stderr
	// lines.
	Log bool
}

// Proc is one run of a binary. Its stderr is read line by line by one goroutine; its stdout is
// kept in memory.
type Proc struct {
	name    string
	log     bool
	cmd     *exec.Cmd
	stdout  bytes.Buffer
	started time.Time

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line and at exit
	done    chan struct{} // closed once the process was waited for
	state   *os.ProcessState
	exit    int // exit status; -1 if killed by a signal or if waiting failed otherwise
	took    time.Duration
}

// Start runs bin with args and the environment of ChildEnv. The process is killed at cleanup if
// it is still running.
func Start(t testing.TB, bin string, args []string, o Options) *Proc {
	t.Helper()
	name := o.Name
	if name == "" {
		name = filepath.Base(bin)
	}
	p := &Proc{name: name, log: o.Log, cmd: exec.Command(bin, args...), changed: make(chan struct{}), done: make(chan struct{}), started: time.Now()}
	p.cmd.Env = ChildEnv()
	p.cmd.Stdout = &p.stdout
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.notify()
			p.mu.Unlock()
			if o.OnLine != nil {
				o.OnLine(p, line)
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // never block the child, even after a scan error
		err := p.cmd.Wait()                // the exit status is in ProcessState
		p.mu.Lock()
		defer p.mu.Unlock()
		p.took = time.Since(p.started)
		p.state = p.cmd.ProcessState
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			p.exit = ee.ExitCode()
		case err != nil:
			p.exit = -1
		}
		p.notify()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.Kill()
			<-p.done
		}
		if p.log {
			t.Logf("%s stderr (%d lines), last ones:\n%s", p.name, len(p.Lines()), p.Tail(25))
		}
	})
	return p
}

// notify wakes the waiters of WaitLine. p.mu must be held.
func (p *Proc) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process ended and was waited for (ExitCode is then valid).
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL to the process.
func (p *Proc) Kill() error { return p.cmd.Process.Kill() }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// StartedAt is when Start was called.
func (p *Proc) StartedAt() time.Time { return p.started }

// Took is how long the process ran, from Start to its exit; valid once Wait returned.
func (p *Proc) Took() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.took
}

// ExitCode is the exit status of the process, -1 if a signal ended it or waiting for it failed;
// valid once Wait returned.
func (p *Proc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// Stdout is everything the process wrote to stdout; valid once Wait returned.
func (p *Proc) Stdout() string { return p.stdout.String() }

// Lines returns every stderr line read so far. The caller must not modify the slice.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lines[:len(p.lines):len(p.lines)]
}

// Stderr returns every stderr line read so far, joined by newlines.
func (p *Proc) Stderr() string { return strings.Join(p.Lines(), "\n") }

// Tail returns the last n stderr lines read so far, joined by newlines.
func (p *Proc) Tail(n int) string {
	l := p.Lines()
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// Count returns the number of stderr lines read so far that contain substr.
func (p *Proc) Count(substr string) int {
	n := 0
	for _, l := range p.Lines() {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// WaitLine waits for the first stderr line containing substr, and returns it. It fails the test
// if the process ends first or timeout passes.
func (p *Proc) WaitLine(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for i := 0; ; {
		p.mu.Lock()
		lines, changed := p.lines, p.changed
		p.mu.Unlock()
		for ; i < len(lines); i++ {
			if strings.Contains(lines[i], substr) {
				return lines[i]
			}
		}
		select {
		case <-p.done:
			if p.Count(substr) > 0 {
				continue
			}
			require.FailNowf(t, "process ended first", "%s exited %d without a line containing %q; stderr ends with:\n%s", p.name, p.ExitCode(), substr, p.Tail(20))
		case <-timer.C:
			require.FailNowf(t, "line not seen", "%s printed no line containing %q within %s; stderr ends with:\n%s", p.name, substr, timeout, p.Tail(20))
		case <-changed:
		}
	}
}

// Wait waits for the process to end, at most timeout, and returns its state. Past timeout it
// kills the process and fails the test.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) *os.ProcessState {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		if p.log {
			t.Logf("%s exited %d after %s", p.name, p.ExitCode(), p.Took().Round(time.Millisecond))
		}
		return p.state
	case <-timer.C:
		_ = p.Kill()
		<-p.done
		require.FailNowf(t, "did not exit in time", "%s still running after %s; stderr ends with:\n%s", p.name, timeout, p.Tail(30))
		return nil
	}
}
