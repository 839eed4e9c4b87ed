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
		from := "each also read from its env var; a flag wins over the env var"
		if fs.Lookup(configFlag) != nil {
			from = "each also read from its env var and the --config file; flag > env > file > default"
		}
		fmt.Fprintf(e.stderr, "Usage: keysetsync %s [flags]\n\n%s\n\nFlags (%s):\n", name, summary, from)
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
// then (when the flag set has --config and it is set) every flag still unset from the config
// file, so the precedence is flag > env > file > default. Extra positional arguments are an error.
func parseFlags(e *env, fs *flag.FlagSet, args []string) error {
	_, err := parseFlagSources(e, fs, args)
	return err
}

// Where a flag's value came from, as shown by the config command.
const (
	fromFlag    = "flag"
	fromEnv     = "env"
	fromFile    = "file"
	fromDefault = "default"
)

// parsed is what parseFlagSources learnt besides the flag values.
type parsed struct {
	source map[string]string // flag name -> fromFlag, fromEnv, fromFile or fromDefault
	config *configFile       // nil without --config
}

// parseFlagSources is parseFlags that also says where each value came from.
func parseFlagSources(e *env, fs *flag.FlagSet, args []string) (*parsed, error) {
	return parseFlagSourcesWith(e, fs, args, nil)
}

// parseFlagSourcesWith is parseFlagSources with the config file, when loaded is set, already
// read (for the flag set of the same command): a thousand pipelines of one file then parse it
// once, not once each, which took most of the CPU of opening them (6 of 8 s).
func parseFlagSourcesWith(e *env, fs *flag.FlagSet, args []string, loaded *configFile) (*parsed, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	p := &parsed{source: map[string]string{}}
	fs.VisitAll(func(f *flag.Flag) { p.source[f.Name] = fromDefault })
	fs.Visit(func(f *flag.Flag) { p.source[f.Name] = fromFlag })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if p.source[f.Name] != fromDefault {
			return
		}
		v := e.getenv(envName(f.Name))
		if v == "" {
			return
		}
		p.source[f.Name] = fromEnv
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%w: invalid value %q for %s: %w", errUsage, v, envName(f.Name), err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cf, err := applyConfigFile(fs, p.source, loaded)
	if err != nil {
		return nil, err
	}
	p.config = cf
	return p, nil
}
