package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// maxFlagHelp bounds a flag's help line in --help: one short line each, the detail in the
// README's flag tables.
const maxFlagHelp = 110

// longHelpPending are flags whose help is still longer, in files another change is moving
// (security.go, issue 9): shorten them there, then empty this.
var longHelpPending = map[string]bool{"api-header": true}

// helpFlags runs a command with --help and returns its flags' help lines by flag name.
func helpFlags(t *testing.T, args ...string) map[string]string {
	t.Helper()
	code, _, stderr := run(t.Context(), nil, append(args, "--help")...)
	require.Equal(t, 0, code, stderr)
	flags := map[string]string{}
	lines := strings.Split(stderr, "\n")
	head := regexp.MustCompile(`^  --(\S+)  \(env `)
	for i, l := range lines {
		if m := head.FindStringSubmatch(l); m != nil && i+1 < len(lines) {
			flags[m[1]] = strings.TrimPrefix(lines[i+1], "      ")
		}
	}
	require.NotEmpty(t, flags, stderr)
	return flags
}

// commandsWithFlags are the command lines whose --help lists flags.
var commandsWithFlags = [][]string{
	{"once"}, {"run"}, {"config"}, {"verify"}, {"playground"}, {"schema"},
	{"cursor", "show"}, {"cursor", "set"}, {"cursor", "reset"}, {"tail"}, {"snapshot"},
}

// TestFlagHelpIsOneShortLine: every flag of every command says what it is in one line of at most
// maxFlagHelp characters, and the README's flag tables hold every flag with its env var.
func TestFlagHelpIsOneShortLine(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, c := range commandsWithFlags {
		t.Run(strings.Join(c, " "), func(t *testing.T) {
			for name, help := range helpFlags(t, c...) {
				if !longHelpPending[name] {
					assert.LessOrEqual(t, len(help), maxFlagHelp, "--%s: %q", name, help)
				}
				assert.Contains(t, string(readme), "`--"+name+"`", "--%s is in a README flag table", name)
				assert.Contains(t, string(readme), "`"+envName(name)+"`", "--%s: the README names its env var", name)
			}
		})
	}
}
