#!/usr/bin/env bash
# Runs the Go tests against a real Kafka broker, then every benchmark briefly.
#
#   scripts/test.sh                          # go test -count=1 -race ./... ; short benchmarks
#   scripts/test.sh -run TestX ./pipeline/   # extra args replace ./... (go test flags + packages)
#   KAFKA_BROKERS=host:9092 scripts/test.sh  # use that broker; don't start one
#   KEYSETSYNC_SKIP_BENCH=1 scripts/test.sh  # tests only
#
# Without KAFKA_BROKERS it starts the local broker (scripts/kafka.sh start) and
# leaves it running for quicker reruns; stop it with scripts/kafka.sh stop.
# If only flags are given (no package pattern), ./... is appended. The benchmark
# pass gets the package patterns only, not the flags.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

started_broker=0
if [ -z "${KAFKA_BROKERS:-}" ]; then
  scripts/kafka.sh start || ks_die "could not start the Kafka broker (scripts/kafka.sh start)"
  export KAFKA_BROKERS="${KAFKA_HOST:-127.0.0.1}:${KAFKA_PORT:-9092}"
  started_broker=1
else
  ks_log "using KAFKA_BROKERS=$KAFKA_BROKERS"
fi

# Split "$@" into package patterns and everything else. A package pattern is an
# argument that starts with ./ ../ / or the module path, or is "all"/"std" --
# unless it is the value of the previous flag (e.g. -run ./x is unusual enough).
module="$(go list -m 2>/dev/null || true)"
pkgs=()
for a in "$@"; do
  case "$a" in
  ./* | ../* | /* | all | . | ..) pkgs+=("$a") ;;
  *) if [ -n "$module" ] && [[ $a == "$module" || $a == "$module"/* ]]; then pkgs+=("$a"); fi ;;
  esac
done
args=("$@")
if [ "${#pkgs[@]}" -eq 0 ]; then
  pkgs=(./...)
  args+=(./...)
fi

# go test -json, rendered like plain `go test` (package lines, and the output of
# failed tests only) plus a closing "tests: N passed, N failed, N skipped" line.
# The raw JSON is kept in $json_log.
RENDER='
import json, sys
w = sys.stdout.write
buf, passed, failed, skipped, failures = {}, 0, 0, 0, []
for line in sys.stdin:
    try:
        ev = json.loads(line)
    except ValueError:
        w(line); sys.stdout.flush(); continue
    act, test = ev.get("Action"), ev.get("Test")
    pkg = ev.get("Package") or ev.get("ImportPath") or ""
    if act == "build-output":
        w(ev.get("Output", ""))
    elif test:
        key = (pkg, test)
        if act == "output":
            buf.setdefault(key, []).append(ev.get("Output", ""))
        elif act in ("pass", "skip"):
            passed += act == "pass"; skipped += act == "skip"
            buf.pop(key, None)
        elif act == "fail":
            failed += 1; failures.append(pkg + " " + test)
            w("".join(buf.pop(key, [])))
    elif act == "output" and ev.get("Output", "").strip() != "PASS":
        w(ev["Output"])
    sys.stdout.flush()
if failures:
    w("failed tests:\n" + "".join("  %s\n" % f for f in failures))
w("tests: %d passed, %d failed, %d skipped\n" % (passed, failed, skipped))
'
py=/usr/bin/python3
[ -x "$py" ] || py=python3
json_log="$(mktemp "${TMPDIR:-/tmp}/keysetsync-gotest.XXXXXX.json")"

rc=0
ks_log "go test -count=1 -race -timeout 30m ${args[*]}   (KAFKA_BROKERS=$KAFKA_BROKERS; raw JSON: $json_log)"
# -timeout: a package of real-broker and crash tests takes minutes under -race; the default
# 10 minutes per package is too close on a loaded 2-core machine.
go test -json -count=1 -race -timeout 30m "${args[@]}" 2>&1 | tee "$json_log" | "$py" -c "$RENDER"
st=("${PIPESTATUS[@]}")
if [ "${st[0]}" = 0 ] && [ "${st[2]}" = 0 ]; then
  tests=PASS
  rm -f "$json_log"
else
  tests=FAIL
  rc=1
fi

bench=skipped
if [ "${KEYSETSYNC_SKIP_BENCH:-0}" != 1 ]; then
  ks_log "go test -run '^\$' -bench . -benchtime 100x ${pkgs[*]}"
  if go test -count=1 -run '^$' -bench . -benchtime 100x "${pkgs[@]}"; then
    bench=PASS
  else
    bench=FAIL
    rc=1
  fi
fi

ks_log "tests: $tests, benchmarks: $bench"
if [ "$started_broker" = 1 ]; then
  ks_log "the Kafka broker is left running for reruns; stop it with: scripts/kafka.sh stop"
fi
exit "$rc"
