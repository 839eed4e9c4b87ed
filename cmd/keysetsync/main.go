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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	tuneGC(os.Getenv)
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
	e = &env{stdout: &lockedWriter{w: e.stdout}, stderr: &lockedWriter{w: e.stderr}, getenv: e.getenv}
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
		switch {
		case err == nil:
			return 0
		case errors.Is(err, errHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(e.stderr, "keysetsync %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(e.stderr, "keysetsync %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "keysetsync: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return 2
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
// 48 MiB for a million records (BENCHMARKS.md). Raise GOMEMLIMIT for very large pages or
// lookback windows.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(48 << 20)
	}
}
