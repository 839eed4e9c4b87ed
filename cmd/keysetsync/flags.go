package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

var (
	// errHelp is returned when the user asked for --help; usage was already printed.
	errHelp = errors.New("help requested")
	// errUsage marks a bad command line or configuration value (exit code 2).
	errUsage = errors.New("usage")
)

// newFlagSet returns a flag set whose usage lists every flag with its env var and default.
func newFlagSet(e *env, name, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: keysetsync %s [flags]\n\n%s\n\nFlags (each also read from its env var; a flag wins over the env var):\n", name, summary)
		fs.VisitAll(func(f *flag.Flag) {
			def := f.DefValue
			if def == "" {
				def = `""`
			}
			fmt.Fprintf(e.stderr, "  --%s  (env %s, default %s)\n      %s\n", f.Name, envName(f.Name), def, f.Usage)
		})
	}
	return fs
}

// envName is the environment variable that sets flag name: KEYSETSYNC_ + upper snake case.
func envName(name string) string {
	return "KEYSETSYNC_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command line from its env var,
// so the precedence is flag > env > default. Extra positional arguments are an error.
func parseFlags(e *env, fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		v := e.getenv(envName(f.Name))
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%w: invalid value %q for %s: %w", errUsage, v, envName(f.Name), err))
		}
	})
	return errors.Join(errs...)
}
