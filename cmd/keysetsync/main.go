// Command keysetsync turns an HTTP API with keyset pagination into a Kafka change stream.
//
// main stays thin: it picks the subcommand, wires signals and the logger, and maps errors to exit
// codes. Each subcommand lives in its own file and owns its flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/keysetsync/keysetsync/pipeline"
)

// command is one subcommand: its name, a one-line summary, and the function that runs it.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what a subcommand may touch outside its flags, so tests can run subcommands in-process.
type env struct {
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// memoryLimit, when set, sets the process's soft memory limit for a number of pipelines
	// sharing a number of pass slots and returns it (see tuneGC); nil when GOMEMLIMIT chose it,
	// and in tests (the limit is global).
	memoryLimit func(pipelines, slots int) int64
}

func commands() []command {
	return []command{
		{"once", "sync until the API has nothing newer, then exit", runOnce},
		{"run", "sync every --interval until SIGINT/SIGTERM", runRun},
		{"config", "print the effective configuration of once/run (flag, env, file, default) as YAML", runConfig},
		{"playground", "serve a demo keyset-paginated users API", runPlayground},
		{"verify", "compare the topic's latest value per id with the API", runVerify},
		{"cursor", "show, set (backfill from a time) or reset a pipeline's committed cursor", runCursor},
		{"tail", "print the data topic's messages as JSON lines, values decoded", runTail},
		{"snapshot", "write the latest value per id from the data topic as JSON lines or CSV", runSnapshot},
		{"schema", "print the Avro schema of the values", runSchema},
		{"version", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := notifySignals(context.Background())
	defer stop()
	e := &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, memoryLimit: tuneGC(os.Getenv)}
	os.Exit(dispatch(ctx, e, os.Args[1:]))
}

// lockedWriter serialises writes: several pipelines of one process each log through their own
// slog handler, and a handler only locks itself.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// dispatch runs the subcommand named by args[0] and returns the process exit code.
func dispatch(ctx context.Context, e *env, args []string) int {
	e = &env{stdout: &lockedWriter{w: e.stdout}, stderr: &lockedWriter{w: e.stderr}, getenv: e.getenv, memoryLimit: e.memoryLimit}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		if err == nil || errors.Is(err, errHelp) {
			return 0
		}
		fmt.Fprintf(e.stderr, "keysetsync %s: %v\n", c.name, withHint(err))
		return exitCode(err)
	}
	fmt.Fprintf(e.stderr, "keysetsync: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return 2
}

// Exit codes other than 0 (success) and 1 (failure), documented in the README's "Exit codes".
const (
	exitUsage = 2 // a bad command line or configuration value
	// exitMayBeMissing: once synced and committed everything the API served, but the API could
	// not serve every record (a tie wider than a page); verify could not check such a topic.
	exitMayBeMissing = 3
	exitFenced       = 4
)

// Errors of the exit codes above. A command returns them wrapped, with the cause.
var (
	// errMayBeMissing: once delivered and committed everything it could read, but the source
	// cannot serve some records (source.ErrTieOverflow): retrying cannot help, so a scheduler
	// must be able to tell it from both success and failure.
	errMayBeMissing = errors.New("synced, but records may be missing: the source cannot serve them")
	// errCannotVerify: verify's own walk of the API has the blind spot that makes records
	// missing, so comparing would report "nothing missing" falsely.
	errCannotVerify = errors.New("cannot verify")
)

// exitCode maps the error of a command to the process's exit status: 2 for usage errors,
// 128+n for a command that stopped on signal n before its job was done, 3 for errMayBeMissing
// and errCannotVerify, 4 for a pipeline fenced by another instance (pipeline.ErrFenced), 1 for
// anything else.
func exitCode(err error) int {
	var sig *signalError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.As(err, &sig):
		return sig.exitCode()
	case errors.Is(err, errMayBeMissing), errors.Is(err, errCannotVerify):
		return exitMayBeMissing
	case errors.Is(err, pipeline.ErrFenced):
		return exitFenced
	default:
		return 1
	}
}

// signalError is the cause of the context main cancels on SIGINT or SIGTERM: a command that
// could not finish its job because of it (once) returns it, and exits 128 + the signal's
// number (130, 143) as shells and schedulers expect, never 0.
type signalError struct{ sig syscall.Signal }

func (e *signalError) Error() string {
	name := map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM"}[e.sig]
	if name == "" {
		name = e.sig.String()
	}
	return "interrupted by " + name
}

func (e *signalError) exitCode() int { return 128 + int(e.sig) }

// notifySignals returns a context cancelled at the first SIGINT or SIGTERM with a *signalError
// as its cause (context.Cause), so a command can tell which signal stopped it; signal.NotifyContext
// does not say. Later signals are caught and ignored until stop, so a second Ctrl-C does not
// kill the process in the middle of its clean stop.
func notifySignals(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			sig, _ := s.(syscall.Signal) // os.Interrupt and SIGTERM are both syscall.Signal
			cancel(&signalError{sig: sig})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// interruptedBySignal returns the *signalError that cancelled ctx, or nil if ctx is not done or
// ended for another reason.
func interruptedBySignal(ctx context.Context) *signalError {
	var sig *signalError
	if ctx.Err() != nil && errors.As(context.Cause(ctx), &sig) {
		return sig
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: keysetsync <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'keysetsync <command> --help' for the flags of a command; every flag can also be set\nby the environment variable KEYSETSYNC_<FLAG> (upper case, '-' as '_').")
}

// tuneGC trades a little memory for CPU unless GOGC or GOMEMLIMIT say otherwise. A sync's live
// heap is small and bounded (the batches in flight), but it allocates per record, and with the
// default GOGC=100 the collector ran so often that it cost a quarter of the CPU. GOGC=400 with a
// 48 MiB soft limit measured 1.3x the throughput at page size 50 and kept the peak RSS under
// 48 MiB for a million records (BENCHMARKS.md).
//
// The limit is for one pipeline: it returns the function that raises it for the pipelines of a
// config file (memoryLimit), nil when GOMEMLIMIT is set (the user's value stands).
func tuneGC(getenv func(string) string) func(pipelines, slots int) int64 {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if getenv("GOMEMLIMIT") != "" {
		return nil
	}
	debug.SetMemoryLimit(memoryLimit(1, 1))
	return func(n, slots int) int64 {
		l := memoryLimit(n, slots)
		debug.SetMemoryLimit(l)
		return l
	}
}

// The soft memory limit of n pipelines sharing slots pass slots (--max-concurrent-passes) is
// baseMemoryLimit, the one pipeline's, plus perSlotMemory for each further slot they can fill,
// plus perPipelineMemory for each pipeline after the first. What a pass holds while it works (a
// page, its batches in flight) counts against its slot (package schedule: a pass keeps its slot
// while a batch is unacknowledged, and reads a page only with its slot), so the live heap grows
// with the slots, not the pipelines; each pipeline adds only what it keeps between passes.
// Measured (bench/manypipes, BENCHMARKS.md "Many pipelines"): 1,000 pipelines on 8 slots had a
// live heap of about 100-130 MB at the peak of their first sync, 2 MB per pipeline before the
// slots bounded it. A limit too close to the live heap makes the collector run without pause
// (with the one-pipeline 48 MiB, 100 pipelines took 2.3x the CPU); one far above it only lets
// garbage fill it (GOGC=400: five times the live heap). Set GOMEMLIMIT to choose another limit.
const (
	baseMemoryLimit   = 48 << 20
	perSlotMemory     = 40 << 20
	perPipelineMemory = 128 << 10
)

func memoryLimit(pipelines, slots int) int64 {
	busy := max(min(pipelines, slots), 1) // the slots the pipelines can fill at once
	return baseMemoryLimit + int64(busy-1)*perSlotMemory + int64(max(pipelines-1, 0))*perPipelineMemory
}
