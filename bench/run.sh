#!/usr/bin/env bash
# keysetsync throughput benchmark: one command, one machine, one real broker, side by side:
#
#   broker   Kafka's own ProducerPerformance (Java producer): N records of the Avro users'
#            average value size, acks=all                                  -> broker ceiling
#   api      bench/apidrain: keysetsync's Source + Walker drain the playground (JSON decode,
#            validation, Avro encode, fingerprint), producing nothing     -> API ceiling
#   e2e      `keysetsync once` from the playground into fresh topics      -> end to end
#   onepage  `keysetsync once --batch-records 1`: fetch one page, produce it, wait for the
#            acks, commit the cursor, fetch the next page: the one-page-at-a-time baseline
# plus exactly-once against at-least-once (`keysetsync once --delivery ...`, interleaved, the
# ratio of their records/s), an incremental sync (bench/incremental), the update-to-Kafka latency
# of `keysetsync run` in both delivery modes (bench/latency), the cost of many pipelines in one
# process (bench/manypipes: first sync, idle pass, wall, CPU, peak RSS, CPU per record against one
# pipeline's, pprof heap and CPU of the idle passes), the parallel backfill (bench section
# "backfill": `keysetsync once` with the defaults against `--fetch-concurrency 1`, interleaved, on a
# playground answering each page in 100 ms, on one that rate-limits, and on 1M records with no added
# latency; peak RSS, the playground's 429s, `keysetsync verify`), the peak memory of `keysetsync once` through one tie of 1,000,000 records at
# one second against a tie of 10,000, with an after-id API (bench/tie), a CPU profile of a
# 1M-record pass (BenchmarkSyncPass + pprof), and a table of medians with the ratio
# e2e / min(broker, api) and the targets of the performance issue.
#
#   bench/run.sh                      # full: 100k and 1M records, pages 50 and 1000, 3 runs,
#                                     # 1,000 pipelines
#   BENCH_QUICK=1 bench/run.sh        # quick: 100k only, 1 run, shorter latency run, ties of
#                                     # 10k and 100k, 100 pipelines
#   BENCH_MATRIX=0 BENCH_EOS=0 BENCH_INCREMENTAL=0 BENCH_TIE=0 BENCH_LATENCY=0 BENCH_PROFILE=0 BENCH_BACKFILL=0 bench/run.sh
#                                     # many pipelines alone (1,000: about 10 min)
#   BENCH_MATRIX=0 BENCH_EOS=0 BENCH_INCREMENTAL=0 BENCH_LATENCY=0 BENCH_PROFILE=0 BENCH_BACKFILL=0 bench/run.sh
#                                     # the wide tie alone (about 3 min)
#   BENCH_MATRIX=0 BENCH_INCREMENTAL=0 BENCH_TIE=0 BENCH_PROFILE=0 BENCH_BACKFILL=0 bench/run.sh
#                                     # exactly-once against at-least-once alone: throughput
#                                     # and continuous latency
#   BENCH_MATRIX=0 BENCH_EOS=0 BENCH_INCREMENTAL=0 BENCH_TIE=0 BENCH_MANY=0 BENCH_LATENCY=0 BENCH_PROFILE=0 BENCH_CURSOR=0 bench/run.sh
#                                     # the parallel backfill alone (about 14 min; quick: 6 min)
#
# Environment (defaults in brackets):
#   BENCH_QUICK        1: BENCH_SIZES=100000 BENCH_RUNS=1 (so BENCH_BF_RUNS=1) BENCH_LAT_SECONDS=20
#                      BENCH_TIE_SIZES="10000 100000" [0]
#   BENCH_MATRIX       0: skip the throughput matrix (broker, API, e2e, one page at a time) [1];
#                      its keysetsync runs with the binary's default delivery (exactly-once)
#   BENCH_EOS          1: measure `keysetsync once --delivery exactly-once` against
#                      `--delivery at-least-once`, interleaved run by run [1]
#   BENCH_EOS_SIZES / BENCH_EOS_PAGE_SIZE / BENCH_EOS_RUNS   record counts [largest size] / playground
#                      page size [1000] / runs of each mode, the table shows medians [BENCH_RUNS;
#                      quick: 3, a ratio of single runs on a shared machine says little]
#   BENCH_SIZES        record counts ["100000 1000000"]
#   BENCH_PAGE_SIZES   playground page sizes ["50 1000"]
#   BENCH_RUNS         runs per measurement; the table shows medians [3]
#   BENCH_BROKERS      broker, loopback only [127.0.0.1:$KAFKA_PORT or 9092]; the local broker
#                      is started with scripts/kafka.sh start if it does not answer (never stopped)
#   BENCH_OUT          output directory [$TMPDIR/keysetsync-bench-<date>]
#   BENCH_REF          measure this git commit instead of the work tree (e.g. HEAD): it is
#                      exported to $BENCH_OUT/src with the work tree's bench/ and *bench_test.go
#                      files copied in, and everything is built from there [unset: work tree]
#   BENCH_STEP_TIMEOUT seconds allowed to one measured process [900]
#   BENCH_PP_PROPS     ProducerPerformance producer properties besides acks=all
#                      ["linger.ms=5 batch.size=16384"]
#   BENCH_PP_JVM       JVM options of ProducerPerformance ["-Xms256m -Xmx1g"]; scripts/kafka.sh tool
#                      would add -XX:TieredStopAtLevel=1 (C1 only), which lowers the ceiling
#   BENCH_ONEPAGE_PAGE_SIZES / BENCH_ONEPAGE_SIZES   where the one-page baseline runs
#                      ["50"] / [smallest size]
#   BENCH_BASELINE_REF build the one-page baseline's keysetsync from this commit, so that it stays
#                      sequential now that the Syncer pipelines [fe3c283, the last commit before
#                      the pipelined Syncer; set it empty to use the binary under test]
#   BENCH_INCREMENTAL  1: run the incremental measurement [1]
#   BENCH_INCR_SIZES / BENCH_INCR_PAGE_SIZES  [largest size] / [$BENCH_PAGE_SIZES]
#   BENCH_INCR_PERCENT / BENCH_INCR_PER_SECOND  records updated, updates per second [1] / [10]
#   BENCH_TIE          1: run the wide-tie memory measurement (bench/tie) [1]
#   BENCH_TIE_SIZES / BENCH_TIE_RUNS / BENCH_TIE_SHAPES   tie widths (the ratio is the peak RSS of
#                      the largest over the smallest's) / runs per size, interleaved / "tie,spread"
#                      also measures the same records one per second, the control ["10000 1000000"]
#                      / [$BENCH_RUNS] / [tie,spread]
#   BENCH_MANY         1: run the many-pipelines measurement (bench/manypipes) [1]
#   BENCH_MANY_PIPELINES / BENCH_MANY_RECORDS / BENCH_MANY_PAGE_SIZE   pipelines in one process,
#                      each its own topic, one shared cursor topic, all reading one playground /
#                      records of that playground / its page size [1000; quick: 100] / [2000] / [1000]
#   BENCH_MANY_INTERVAL / BENCH_MANY_PASSES   `run --interval` of the idle measurement / idle passes
#                      of every pipeline it counts [10s; quick: 5s] / [2]
#   BENCH_MANY_RUNS    runs of the whole measurement; the table shows each [1]
#   BENCH_LATENCY      1: run the latency measurement [1]
#   BENCH_LAT_SECONDS / BENCH_LAT_RATE / BENCH_LAT_INTERVAL / BENCH_LAT_RECORDS / BENCH_LAT_PAGE_SIZE
#                      [60] / [5 updates/s] / [1s] / [10000] / [1000]
#   BENCH_LAT_DELIVERY one latency run per --delivery mode listed, in order; empty: one run with
#                      the binary's default (for a BENCH_REF without --delivery)
#                      ["exactly-once at-least-once"]
#   BENCH_KEYSETSYNC_ENV  extra environment of every measured keysetsync process, e.g. "GOGC=400"
#                      (once, the one-page baseline, and the ones incremental and latency start) []
#   BENCH_APIDRAIN_ENV extra environment of apidrain ["GOGC=400 GOMEMLIMIT=48MiB": the GC
#                      settings keysetsync sets for itself (cmd/keysetsync tuneGC), so the API
#                      ceiling is measured on equal terms]
#   BENCH_CURSOR       1: time one cursor Load against cursor topics of BENCH_CURSOR_SIZES records,
#                      the followed store against the old whole-topic scan (BenchmarkCursorLoad) [1]
#   BENCH_CURSOR_SIZES / BENCH_CURSOR_RUNS   records in the cursor topic ["1000 100000 1000000";
#                      quick: "1000 100000"] / runs of the benchmark, the table shows medians [3]
#   BENCH_BACKFILL     1: run the parallel-backfill measurement (issue 11) [1]:
#                      latency: a playground of BENCH_BF_RECORDS records, pages of BENCH_BF_PAGE_SIZE,
#                      every page answered after --latency BENCH_BF_LATENCY; `keysetsync once` with the
#                      default settings against `--fetch-concurrency 1`, interleaved (order flips
#                      every run), BENCH_BF_RUNS runs of each;
#                      rate limit: the same with the playground's --rate-limit BENCH_BF_RATE_LIMIT,
#                      default settings, a fresh playground per run (its 429s and requests are that
#                      run's), the topic checked with `keysetsync verify`;
#                      flat: BENCH_BF_FLAT_RECORDS records, no added latency, pages of each of
#                      BENCH_BF_FLAT_PAGE_SIZES: defaults against --fetch-concurrency 1, interleaved
#   BENCH_BF_RECORDS / BENCH_BF_PAGE_SIZE / BENCH_BF_LATENCY / BENCH_BF_RATE_LIMIT   [100000] / [100]
#                      / [100ms] / [50 requests/s; 0 skips the rate-limit measurement]
#   BENCH_BF_FLAT_RECORDS / BENCH_BF_FLAT_PAGE_SIZES   [1000000; 0 skips it] / ["100 1000": at 100
#                      the first pages wait on the API more than half their time and the backfill
#                      engages, at 1000 decoding weighs more and it does not]
#   BENCH_BF_RUNS      runs of each mode [BENCH_RUNS]
#   BENCH_BF_VERIFY    1: `keysetsync verify` the topic of every default-settings run against a
#                      twin playground (same seed and records, no latency, no rate limit) [1]
#   BENCH_PROFILE      1: CPU profile of one pass [1]
#   BENCH_PROFILE_RECORDS / BENCH_PROFILE_PAGE_SIZE   [largest size] / [1000]
#
# Results: $BENCH_OUT/results.jsonl (one JSON line per measurement), report.md (the tables,
# also printed), machine.txt, cpu.prof + profile.txt, and every process's log.
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

QUICK="${BENCH_QUICK:-0}"
if [ "$QUICK" = 1 ]; then
  d_sizes=100000 d_runs=1 d_lat=20 d_tie="10000 100000" d_eos_runs=3 d_cursor="1000 100000" d_many=100 d_many_iv=5s
else
  d_sizes="100000 1000000" d_runs=3 d_lat=60 d_tie="10000 1000000" d_eos_runs= d_cursor="1000 100000 1000000" d_many=1000 d_many_iv=10s
fi
MATRIX="${BENCH_MATRIX:-1}"
SIZES="${BENCH_SIZES:-$d_sizes}"
PAGES="${BENCH_PAGE_SIZES:-50 1000}"
RUNS="${BENCH_RUNS:-$d_runs}"
EOS="${BENCH_EOS:-1}"
EOS_RUNS="${BENCH_EOS_RUNS:-${d_eos_runs:-$RUNS}}"
EOS_PAGE="${BENCH_EOS_PAGE_SIZE:-1000}"
BROKERS="${BENCH_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}"
STEP_TIMEOUT="${BENCH_STEP_TIMEOUT:-900}"
PP_PROPS="${BENCH_PP_PROPS:-linger.ms=5 batch.size=16384}"
PP_JVM="${BENCH_PP_JVM:--Xms256m -Xmx1g}"
read -r -a size_arr <<<"$SIZES"
read -r -a page_arr <<<"$PAGES"
smallest="$(printf '%s\n' "${size_arr[@]}" | sort -n | head -n1)"
largest="$(printf '%s\n' "${size_arr[@]}" | sort -n | tail -n1)"
ONEPAGE_PAGES="${BENCH_ONEPAGE_PAGE_SIZES:-50}"
ONEPAGE_SIZES="${BENCH_ONEPAGE_SIZES:-$smallest}"
EOS_SIZES="${BENCH_EOS_SIZES:-$largest}"
INCR="${BENCH_INCREMENTAL:-1}"
INCR_SIZES="${BENCH_INCR_SIZES:-$largest}"
INCR_PAGES="${BENCH_INCR_PAGE_SIZES:-$PAGES}"
INCR_PERCENT="${BENCH_INCR_PERCENT:-1}"
INCR_PER_SECOND="${BENCH_INCR_PER_SECOND:-10}"
TIE="${BENCH_TIE:-1}"
TIE_SIZES="${BENCH_TIE_SIZES:-$d_tie}"
TIE_RUNS="${BENCH_TIE_RUNS:-$RUNS}"
TIE_SHAPES="${BENCH_TIE_SHAPES:-tie,spread}"
MANY="${BENCH_MANY:-1}"
MANY_PIPELINES="${BENCH_MANY_PIPELINES:-$d_many}"
MANY_RECORDS="${BENCH_MANY_RECORDS:-2000}"
MANY_PAGE="${BENCH_MANY_PAGE_SIZE:-1000}"
MANY_INTERVAL="${BENCH_MANY_INTERVAL:-$d_many_iv}"
MANY_PASSES="${BENCH_MANY_PASSES:-2}"
MANY_RUNS="${BENCH_MANY_RUNS:-1}"
LAT="${BENCH_LATENCY:-1}"
LAT_SECONDS="${BENCH_LAT_SECONDS:-$d_lat}"
LAT_RATE="${BENCH_LAT_RATE:-5}"
LAT_INTERVAL="${BENCH_LAT_INTERVAL:-1s}"
LAT_RECORDS="${BENCH_LAT_RECORDS:-10000}"
LAT_PAGE="${BENCH_LAT_PAGE_SIZE:-1000}"
LAT_DELIVERY="${BENCH_LAT_DELIVERY-exactly-once at-least-once}"
PROFILE="${BENCH_PROFILE:-1}"
BACKFILL="${BENCH_BACKFILL:-1}"
BF_RECORDS="${BENCH_BF_RECORDS:-100000}"
BF_PAGE="${BENCH_BF_PAGE_SIZE:-100}"
BF_LATENCY="${BENCH_BF_LATENCY:-100ms}"
BF_RATE_LIMIT="${BENCH_BF_RATE_LIMIT:-50}"
BF_FLAT_RECORDS="${BENCH_BF_FLAT_RECORDS:-1000000}"
BF_FLAT_PAGES="${BENCH_BF_FLAT_PAGE_SIZES:-100 1000}"
BF_RUNS="${BENCH_BF_RUNS:-$RUNS}"
BF_VERIFY="${BENCH_BF_VERIFY:-1}"
CURSOR="${BENCH_CURSOR:-1}"
CURSOR_SIZES="${BENCH_CURSOR_SIZES:-$d_cursor}"
CURSOR_RUNS="${BENCH_CURSOR_RUNS:-3}"
read -r -a KS_ENV <<<"${BENCH_KEYSETSYNC_ENV:-}"
BENCH_APIDRAIN_ENV="${BENCH_APIDRAIN_ENV-GOGC=400 GOMEMLIMIT=48MiB}"
read -r -a AD_ENV <<<"$BENCH_APIDRAIN_ENV"
KS_ENV_FLAGS=()
for e in "${KS_ENV[@]}"; do KS_ENV_FLAGS+=(--env "$e"); done
PROFILE_RECORDS="${BENCH_PROFILE_RECORDS:-$largest}"
PROFILE_PAGE="${BENCH_PROFILE_PAGE_SIZE:-1000}"
OUT="${BENCH_OUT:-${TMPDIR:-/tmp}/keysetsync-bench-$(date +%Y%m%d-%H%M%S)}"
RUN_ID="$(date +%s)-$RANDOM"
PREFIX="bench-$RUN_ID-"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

for v in $CURSOR_SIZES $CURSOR_RUNS $SIZES $PAGES $RUNS $EOS_SIZES $EOS_PAGE $EOS_RUNS $TIE_SIZES $TIE_RUNS $STEP_TIMEOUT $LAT_RECORDS $LAT_PAGE $PROFILE_RECORDS $PROFILE_PAGE $INCR_PER_SECOND $MANY_PIPELINES $MANY_RECORDS $MANY_PAGE $MANY_PASSES $MANY_RUNS $BF_RECORDS $BF_PAGE $BF_FLAT_PAGES $BF_RUNS; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || ks_die "not a positive integer: $v (BENCH_SIZES, BENCH_PAGE_SIZES, BENCH_RUNS, ...)"
done
# Loopback only: the broker list, like everything else, must be this machine.
IFS=, read -r -a broker_arr <<<"$BROKERS"
for b in "${broker_arr[@]}"; do
  case "$b" in
  127.*:* | localhost:* | "[::1]":*) ;;
  *) ks_die "BENCH_BROKERS: $b is not a loopback address" ;;
  esac
done

mkdir -p "$OUT/bin" "$OUT/logs"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
BIN="$OUT/bin/keysetsync"
T0=$SECONDS

say() { ks_log "[bench +$((SECONDS - T0))s] $*"; }

# ------------------------------------------------------------------ cleanup

PG_PIDS=()
PG_STARTS=0
TOOLS="$OUT/bin"
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PG_PIDS[@]}"; do
    ks_kill "$p" 10
    wait "$p" 2>/dev/null || true
  done
  if [ -x "$TOOLS/topics" ]; then
    timeout 90 "$TOOLS/topics" --brokers "$BROKERS" delete-prefix "$PREFIX" || ks_warn "could not delete the topics $PREFIX*"
  fi
  [ "$rc" = 0 ] || ks_warn "benchmark FAILED (exit $rc); logs in $OUT/logs"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ setup

ks_have go || ks_die "go is not on PATH"
ks_have java || ks_die "java is not on PATH (ProducerPerformance)"
[ -x /usr/bin/time ] || ks_ensure_apt time
[ -x /usr/bin/time ] || ks_die "/usr/bin/time is missing (apt-get install time)"

if ! timeout 30 scripts/kafka.sh status >/dev/null 2>&1; then
  [ "$BROKERS" = "127.0.0.1:${KAFKA_PORT:-9092}" ] || ks_die "no broker answers on $BROKERS"
  say "starting the local broker (scripts/kafka.sh start)"
  bash scripts/kafka.sh start
fi
LIBS="$(bash scripts/kafka.sh libs)"
# The broker's pid, to count its CPU (only if it runs on this machine under scripts/kafka.sh).
BROKER_PID="$(scripts/kafka.sh status 2>&1 | sed -n 's/.*running (pid \([0-9]*\)).*/\1/p' | head -n1)"
[ -f "$(find "$LIBS" -maxdepth 1 -name 'kafka-tools-*.jar' | head -n1)" ] || ks_die "no kafka-tools jar in $LIBS"

SRC="$PWD"
if [ -n "${BENCH_REF:-}" ]; then
  SRC="$OUT/src"
  rev="$(git rev-parse --verify "$BENCH_REF^{commit}")" || ks_die "BENCH_REF=$BENCH_REF is not a commit"
  say "exporting $BENCH_REF ($rev) to $SRC, with the work tree's bench/ and benchmark files"
  rm -rf "$SRC"
  mkdir -p "$SRC"
  git archive "$rev" | tar -x -C "$SRC"
  rm -rf "$SRC/bench"
  cp -r bench "$SRC/bench"
  # The benchmark files where the exported tree has their package (an older tree keeps its own).
  for f in pipeline/bench_test.go source/bench_test.go avro/bench_test.go; do
    if [ -d "$SRC/$(dirname "$f")" ]; then cp "$f" "$SRC/$f"; fi
  done
  GIT_DESC="$(git rev-parse --short "$rev") ($BENCH_REF, committed tree)"
else
  GIT_DESC="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- . ':!bench' ':!BENCHMARKS.md' ':!*/bench_test.go' 2>/dev/null || echo ' + uncommitted changes (work tree)')"
fi
BASELINE_BIN="$BIN"
BENCH_BASELINE_REF="${BENCH_BASELINE_REF-fe3c283}"
if [ -n "$BENCH_BASELINE_REF" ] && [ "$MATRIX" = 1 ]; then
  rev="$(git rev-parse --verify "$BENCH_BASELINE_REF^{commit}")" || ks_die "BENCH_BASELINE_REF=$BENCH_BASELINE_REF is not a commit"
  say "building the one-page baseline's keysetsync from $BENCH_BASELINE_REF ($rev)"
  rm -rf "$OUT/baseline-src"
  mkdir -p "$OUT/baseline-src"
  git archive "$rev" | tar -x -C "$OUT/baseline-src"
  BASELINE_BIN="$OUT/bin/keysetsync-baseline"
  (cd "$OUT/baseline-src" && go build -o "$BASELINE_BIN" ./cmd/keysetsync) || ks_die "baseline build failed"
  GIT_DESC="$GIT_DESC; one-page baseline from $(git rev-parse --short "$rev")"
fi
say "building keysetsync and the bench tools from $SRC into $OUT/bin"
(cd "$SRC" && go build -o "$BIN" ./cmd/keysetsync &&
  go build -o "$OUT/bin/" ./bench/apidrain ./bench/incremental ./bench/latency ./bench/tie ./bench/topics ./bench/manypipes) ||
  ks_die "build failed (with BENCH_REF, the bench tools must compile against that commit's API)"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "source: $GIT_DESC"
  echo "cpu: $(nproc) x $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "go: $(go version | cut -d' ' -f3-)"
  echo "java: $(java -version 2>&1 | head -n1)"
  echo "kafka: $(find "$LIBS" -maxdepth 1 -name 'kafka_2.13-*.jar' -printf '%f\n' | sed 's/kafka_2.13-//; s/.jar$//')"
  echo "broker: $BROKERS"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "config: sizes=[$SIZES] pages=[$PAGES] runs=$RUNS quick=$QUICK matrix=$MATRIX pp_props=[$PP_PROPS] pp_jvm=[$PP_JVM]"
  [ "$EOS" != 1 ] || echo "delivery: sizes=[$EOS_SIZES] page=$EOS_PAGE runs=$EOS_RUNS (exactly-once and at-least-once each, interleaved)"
  [ "$LAT" != 1 ] || echo "latency: delivery=[${LAT_DELIVERY:-binary default}] ${LAT_SECONDS}s interval=$LAT_INTERVAL rate=$LAT_RATE/s"
  [ "$TIE" != 1 ] || echo "tie: sizes=[$TIE_SIZES] runs=$TIE_RUNS shapes=$TIE_SHAPES"
  [ "$MANY" != 1 ] || echo "many pipelines: $MANY_PIPELINES x $MANY_RECORDS records, page $MANY_PAGE, run --interval $MANY_INTERVAL, $MANY_PASSES idle passes, runs=$MANY_RUNS"
  [ "$BACKFILL" != 1 ] || echo "backfill: $BF_RECORDS records, page $BF_PAGE, latency $BF_LATENCY, rate limit $BF_RATE_LIMIT/s; flat $BF_FLAT_RECORDS records, pages [$BF_FLAT_PAGES]; runs=$BF_RUNS verify=$BF_VERIFY"
  echo "env: keysetsync=[${BENCH_KEYSETSYNC_ENV:-}] apidrain=[${BENCH_APIDRAIN_ENV:-}]"
} >"$OUT/machine.txt"
sed 's/^/    /' "$OUT/machine.txt" >&2

# emit KIND SIZE PAGE RUN JSON: appends one result line.
emit() {
  "$PY" - "$@" >>"$RESULTS" <<'EOF'
import json, sys
kind, size, page, run, js = sys.argv[1:6]
d = json.loads(js)
d.update(kind=kind, size=int(size), page=int(page), run=int(run))
print(json.dumps(d))
EOF
}

# ------------------------------------------------------------------ playground

# start_playground SIZE PAGE [FLAG...]: starts `keysetsync playground` on a free loopback port,
# with the FLAGs (e.g. --latency 100ms); sets PG_URL, PG_PID and PG_LOG.
start_playground() {
  local size=$1 page=$2 log i addr=""
  PG_STARTS=$((PG_STARTS + 1))
  log="$OUT/logs/playground-$PG_STARTS-$1-$2.log"
  PG_LOG=$log
  : >"$log"
  "$BIN" playground --records "$size" --page-size "$page" --addr 127.0.0.1:0 --log-format json "${@:3}" >"$log" 2>&1 &
  PG_PID=$!
  PG_PIDS+=("$PG_PID")
  for ((i = 0; i < 600; i++)); do
    addr="$("$PY" -c '
import json, sys
for line in open(sys.argv[1]):
    try: d = json.loads(line)
    except ValueError: continue
    if d.get("msg") == "playground listening": print(d["addr"]); break
' "$log" 2>/dev/null)" || true
    [ -n "$addr" ] && break
    ks_alive "$PG_PID" || {
      tail -n 20 "$log" >&2
      ks_die "playground exited"
    }
    sleep 0.1
  done
  [ -n "$addr" ] || ks_die "playground did not log its address within 60s ($log)"
  case "$addr" in 127.*:*) ;; *) ks_die "playground listens on $addr, not loopback" ;; esac
  ks_wait_http "http://$addr/healthz" 60 "$PG_PID" >/dev/null 2>&1 || ks_die "playground on $addr does not answer"
  PG_URL="http://$addr/pagination/keyset"
}

stop_playground() {
  local pid=$1 p keep=()
  ks_kill "$pid" 10
  wait "$pid" 2>/dev/null || true
  for p in "${PG_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PG_PIDS=("${keep[@]}")
}

# ------------------------------------------------------------------ measurements

# cpu_ticks PID: user+system CPU clock ticks PID has used so far (empty if unknown).
cpu_ticks() {
  local st f
  [ -n "${1:-}" ] || return 0
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  read -r -a f <<<"${st##*) }"
  echo $((f[11] + f[12]))
}

# others PG_PID: the extra fields of a measurement: the load average before it, and the CPU
# the playground and the broker used during it (call once before, once after; prints k=v).
others_before() { OB_LOAD="$(cut -d' ' -f1 /proc/loadavg)" OB_PG="$(cpu_ticks "${1:-}")" OB_BR="$(cpu_ticks "$BROKER_PID")"; }
others_after() {
  printf '%s\n' "load1=$OB_LOAD" "broker_ticks=$OB_BR:$(cpu_ticks "$BROKER_PID")"
  [ -z "${1:-}" ] || printf '%s\n' "playground_ticks=$OB_PG:$(cpu_ticks "$1")"
}

# measure_api SIZE PAGE RUN URL PG_PID: apidrain; prints its JSON line.
measure_api() {
  local size=$1 page=$2 run=$3 url=$4 pg=$5 tag="$1-$2-$3" out extra
  local log="$OUT/logs/api-$tag.log" tf="$OUT/logs/api-$tag.time"
  others_before "$pg"
  out="$(/usr/bin/time -v -o "$tf" timeout -k 10 "$STEP_TIMEOUT" env "${AD_ENV[@]}" "$TOOLS/apidrain" --api-url "$url" --expect "$size" \
    --timeout "${STEP_TIMEOUT}s" 2>"$log")" || {
    cat "$log" >&2
    ks_die "apidrain failed"
  }
  mapfile -t extra < <(others_after "$pg")
  "$PY" bench/parse.py api "$out" "$tf" "${extra[@]}"
}

# measure_broker SIZE RECORD_SIZE RUN: ProducerPerformance into a fresh one-partition topic.
measure_broker() {
  local size=$1 recsize=$2 run=$3 topic="${PREFIX}pp-$1-$3" props n extra
  local log="$OUT/logs/broker-$1-$3.log" tf="$OUT/logs/broker-$1-$3.time"
  "$TOOLS/topics" --brokers "$BROKERS" create "$topic" 1
  read -r -a props <<<"acks=all $PP_PROPS"
  others_before ""
  # shellcheck disable=SC2086
  /usr/bin/time -v -o "$tf" timeout -k 10 "$STEP_TIMEOUT" java $PP_JVM -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$PWD/scripts/kafka/tools-log4j2.properties" -cp "$LIBS/*" \
    org.apache.kafka.tools.ProducerPerformance --bootstrap-server "$BROKERS" --topic "$topic" \
    --num-records "$size" --record-size "$recsize" --throughput -1 --warmup-records "$((size / 10))" \
    --command-property "${props[@]}" >"$log" 2>&1 || {
    tail -n 20 "$log" >&2
    ks_die "ProducerPerformance failed"
  }
  mapfile -t extra < <(others_after "")
  n="$("$TOOLS/topics" --brokers "$BROKERS" count "$topic")"
  [ "$n" = "$size" ] || ks_die "ProducerPerformance: topic $topic holds $n messages, want $size"
  "$TOOLS/topics" --brokers "$BROKERS" delete "$topic"
  "$PY" bench/parse.py pp "$log" "$tf" "$size" "$recsize" "${extra[@]}"
}

# measure_once SIZE PAGE RUN URL BATCH PG_PID [BIN [NAME [FLAG...]]]: `keysetsync once` into fresh
# topics, under /usr/bin/time -v (peak RSS, CPU). NAME (default e2e) names its topics and log;
# the FLAGs are added to its command line. Afterwards the topic must hold exactly SIZE records
# with SIZE distinct keys, read as a read_committed consumer reads it; with MO_VERIFY_URL set,
# `keysetsync verify` must also find every id of that API in the topic at its latest version.
measure_once() {
  local size=$1 page=$2 run=$3 url=$4 batch=$5 pg=$6 bin=${7:-$BIN} name=${8:-e2e} n keys extra
  local flags=("${@:9}")
  local tag="$name-$1-$2-$3-b$5"
  local topic="${PREFIX}$tag" ctopic="${PREFIX}$name-cursors-$1-$2-$3-b$5"
  local log="$OUT/logs/once-$tag.log" tf="$OUT/logs/once-$tag.time"
  others_before "$pg"
  /usr/bin/time -v -o "$tf" timeout -k 10 -s INT "$STEP_TIMEOUT" env "${KS_ENV[@]}" "$bin" once \
    --api-url "$url" --brokers "$BROKERS" --topic "$topic" --cursor-topic "$ctopic" --pipeline bench \
    --topic-partitions 1 --topic-replication-factor 1 --batch-records "$batch" --retry-timeout 0 \
    --log-format json "${flags[@]}" >/dev/null 2>"$log" || {
    tail -n 20 "$log" >&2
    ks_die "keysetsync once ${flags[*]} failed ($log)"
  }
  mapfile -t extra < <(others_after "$pg")
  # Offsets do not count records once a transaction's marker takes one: read the records.
  read -r n keys < <("$TOOLS/topics" --brokers "$BROKERS" records "$topic") || ks_die "could not read $topic"
  [ "$n" = "$size" ] && [ "$keys" = "$size" ] ||
    ks_die "keysetsync once ${flags[*]}: topic $topic holds $n committed records with $keys distinct keys, want $size"
  if [ -n "${MO_VERIFY_URL:-}" ]; then
    timeout -k 10 "$STEP_TIMEOUT" "$bin" verify --api-url "$MO_VERIFY_URL" --brokers "$BROKERS" --topic "$topic" \
      --cursor-topic "$ctopic" --pipeline bench --log-format json >"$OUT/logs/verify-$tag.out" 2>"$OUT/logs/verify-$tag.log" || {
      cat "$OUT/logs/verify-$tag.out" >&2
      ks_die "keysetsync verify of $topic against $MO_VERIFY_URL failed ($OUT/logs/verify-$tag.log)"
    }
    extra+=("verified=1")
  fi
  "$TOOLS/topics" --brokers "$BROKERS" delete "$topic" "$ctopic"
  "$PY" bench/parse.py once "$log" "$tf" "$size" "$batch" "${extra[@]}"
}

# ------------------------------------------------------------------ main matrix

contains() { [[ " $1 " == *" $2 "* ]]; }

[ "$MATRIX" = 1 ] || size_arr=()
for size in "${size_arr[@]}"; do
  declare -A URL=() PID=()
  for page in "${page_arr[@]}"; do
    start_playground "$size" "$page"
    URL[$page]=$PG_URL PID[$page]=$PG_PID
    say "playground: $size records, page size $page on ${PG_URL%/pagination/keyset}"
  done
  # Warm-up drain of each playground (not measured); it also gives the average value size.
  for page in "${page_arr[@]}"; do
    w="$(measure_api "$size" "$page" 0 "${URL[$page]}" "${PID[$page]}")"
    emit warmup "$size" "$page" 0 "$w"
  done
  recsize="$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(round(d["value_bytes"]/d["records"]))' "$w")"
  say "average Avro value size over $size records: $recsize bytes"
  for ((run = 1; run <= RUNS; run++)); do
    say "size $size, run $run/$RUNS: broker ceiling (ProducerPerformance, $size x $recsize B, acks=all $PP_PROPS)"
    r="$(measure_broker "$size" "$recsize" "$run")"
    emit broker "$size" 0 "$run" "$r"
    for page in "${page_arr[@]}"; do
      say "size $size, run $run/$RUNS, page $page: API ceiling (apidrain)"
      r="$(measure_api "$size" "$page" "$run" "${URL[$page]}" "${PID[$page]}")"
      emit api "$size" "$page" "$run" "$r"
      say "size $size, run $run/$RUNS, page $page: keysetsync once"
      r="$(measure_once "$size" "$page" "$run" "${URL[$page]}" 1000 "${PID[$page]}")"
      emit e2e "$size" "$page" "$run" "$r"
      if contains "$ONEPAGE_PAGES" "$page" && contains "$ONEPAGE_SIZES" "$size"; then
        say "size $size, run $run/$RUNS, page $page: keysetsync once --batch-records 1 (one page at a time)"
        r="$(measure_once "$size" "$page" "$run" "${URL[$page]}" 1 "${PID[$page]}" "$BASELINE_BIN")"
        emit onepage "$size" "$page" "$run" "$r"
      fi
    done
  done
  for page in "${page_arr[@]}"; do stop_playground "${PID[$page]}"; done
  unset URL PID
done

# ------------------------------------------------------------------ exactly-once vs at-least-once

# The same `keysetsync once` with each delivery mode, alternately, on one playground per size.
# The order flips every run (EOS ALO, ALO EOS, EOS ALO, ...): load that drifts during a run, and
# whatever one measurement leaves behind for the next (the broker deleting the previous topics),
# then falls on both modes alike.
if [ "$EOS" = 1 ]; then
  for size in $EOS_SIZES; do
    start_playground "$size" "$EOS_PAGE"
    say "delivery: playground of $size records, page size $EOS_PAGE on ${PG_URL%/pagination/keyset}"
    # An unmeasured drain first, so that the first measured mode does not pay for a cold playground.
    measure_api "$size" "$EOS_PAGE" 0 "$PG_URL" "$PG_PID" >/dev/null
    for ((run = 1; run <= EOS_RUNS; run++)); do
      order="eos alo"
      ((run % 2)) || order="alo eos"
      for mode in $order; do
        case $mode in
        eos) delivery=exactly-once ;;
        alo) delivery=at-least-once ;;
        esac
        say "delivery: $size records, page $EOS_PAGE, run $run/$EOS_RUNS: keysetsync once --delivery $delivery"
        r="$(measure_once "$size" "$EOS_PAGE" "$run" "$PG_URL" 1000 "$PG_PID" "$BIN" "$mode" --delivery "$delivery")"
        emit "$mode" "$size" "$EOS_PAGE" "$run" "$r"
      done
    done
    stop_playground "$PG_PID"
  done
fi

# ------------------------------------------------------------------ parallel backfill

# bf_pair SIZE PAGE RUN URL PG_PID KIND: `keysetsync once` with the default settings (KIND bf_<KIND>)
# and with --fetch-concurrency 1 (bf_<KIND>_seq) on one playground, the order flipping every run,
# so that load drifting during a run, and what one measurement leaves behind for the next, fall
# on both alike. The default run's topic is verified (MO_VERIFY_URL) when BF_VERIFY_URL is set.
bf_pair() {
  local size=$1 page=$2 run=$3 url=$4 pg=$5 kind=$6 order="par seq" mode r
  ((run % 2)) || order="seq par"
  for mode in $order; do
    if [ "$mode" = par ]; then
      say "backfill ($kind): $size records, page $page, run $run/$BF_RUNS: keysetsync once (default settings)"
      r="$(MO_VERIFY_URL="${BF_VERIFY_URL:-}" measure_once "$size" "$page" "$run" "$url" 1000 "$pg" "$BIN" "bf-$kind")"
      emit "bf_$kind" "$size" "$page" "$run" "$(bf_with "$r" latency_s="$BF_KIND_LATENCY_S")"
    else
      say "backfill ($kind): $size records, page $page, run $run/$BF_RUNS: keysetsync once --fetch-concurrency 1"
      r="$(measure_once "$size" "$page" "$run" "$url" 1000 "$pg" "$BIN" "bf-$kind-seq" --fetch-concurrency 1)"
      emit "bf_${kind}_seq" "$size" "$page" "$run" "$(bf_with "$r" latency_s="$BF_KIND_LATENCY_S")"
    fi
  done
}

# bf_with JSON K=V...: JSON with the numbers V added as K.
bf_with() {
  "$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); d.update((k, float(v)) for k, v in (a.split("=", 1) for a in sys.argv[2:])); print(json.dumps(d))' "$@"
}

# A twin playground for `keysetsync verify`: the same seed and records (so the same data), no
# latency and no rate limit, so that reading the API in full takes seconds.
bf_twin() {
  BF_VERIFY_URL=
  [ "$BF_VERIFY" = 1 ] || return 0
  start_playground "$1" 1000
  BF_VERIFY_URL=$PG_URL BF_TWIN_PID=$PG_PID
}

if [ "$BACKFILL" = 1 ]; then
  # The added latency in seconds, for the sequential limit page / latency in the report.
  BF_LATENCY_S="$("$PY" -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)(ms|s)", sys.argv[1])
if not m: sys.exit("BENCH_BF_LATENCY: give ms or s, e.g. 100ms")
print(float(m.group(1)) / (1000 if m.group(2) == "ms" else 1))' "$BF_LATENCY")" || ks_die "BENCH_BF_LATENCY=$BF_LATENCY"
  bf_twin "$BF_RECORDS"
  # 1. A latency-bound API: the sequential limit is page / latency.
  start_playground "$BF_RECORDS" "$BF_PAGE" --latency "$BF_LATENCY"
  say "backfill: playground of $BF_RECORDS records, page $BF_PAGE, --latency $BF_LATENCY on ${PG_URL%/pagination/keyset}"
  for ((run = 1; run <= BF_RUNS; run++)); do
    BF_KIND_LATENCY_S=$BF_LATENCY_S bf_pair "$BF_RECORDS" "$BF_PAGE" "$run" "$PG_URL" "$PG_PID" latency
  done
  stop_playground "$PG_PID"
  # 2. The same API rate-limited: a fresh playground per run, so that its requests and 429s
  # (its "playground stopped" line) are that run's alone.
  if [ "$BF_RATE_LIMIT" != 0 ]; then
    for ((run = 1; run <= BF_RUNS; run++)); do
      start_playground "$BF_RECORDS" "$BF_PAGE" --latency "$BF_LATENCY" --rate-limit "$BF_RATE_LIMIT"
      say "backfill (rate limit): $BF_RECORDS records, page $BF_PAGE, --latency $BF_LATENCY --rate-limit $BF_RATE_LIMIT, run $run/$BF_RUNS: keysetsync once (default settings)"
      r="$(MO_VERIFY_URL="${BF_VERIFY_URL:-}" measure_once "$BF_RECORDS" "$BF_PAGE" "$run" "$PG_URL" 1000 "$PG_PID" "$BIN" bf-ratelimit)"
      stop_playground "$PG_PID"
      r="$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(json.loads(sys.argv[2]), rate_limit=float(sys.argv[3]), latency_s=float(sys.argv[4])); print(json.dumps(d))' \
        "$r" "$("$PY" bench/parse.py playground "$PG_LOG")" "$BF_RATE_LIMIT" "$BF_LATENCY_S")"
      emit bf_ratelimit "$BF_RECORDS" "$BF_PAGE" "$run" "$r"
    done
  fi
  [ -z "${BF_TWIN_PID:-}" ] || stop_playground "$BF_TWIN_PID"
  # 3. An API that is not the bottleneck: the backfill must not engage, or not cost.
  if [ "$BF_FLAT_RECORDS" != 0 ]; then
    for page in $BF_FLAT_PAGES; do
      start_playground "$BF_FLAT_RECORDS" "$page"
      say "backfill (no added latency): playground of $BF_FLAT_RECORDS records, page $page on ${PG_URL%/pagination/keyset}"
      # An unmeasured drain first, so that the first measured mode does not pay for a cold playground.
      measure_api "$BF_FLAT_RECORDS" "$page" 0 "$PG_URL" "$PG_PID" >/dev/null
      for ((run = 1; run <= BF_RUNS; run++)); do
        BF_VERIFY_URL='' BF_KIND_LATENCY_S=0 bf_pair "$BF_FLAT_RECORDS" "$page" "$run" "$PG_URL" "$PG_PID" flat
      done
      stop_playground "$PG_PID"
    done
  fi
fi

# ------------------------------------------------------------------ incremental

if [ "$INCR" = 1 ]; then
  for size in $INCR_SIZES; do
    for page in $INCR_PAGES; do
      say "incremental: $size records, page $page, update $INCR_PERCENT% ($INCR_PER_SECOND per second), sync again"
      out="$(timeout -k 10 "$((STEP_TIMEOUT * 2))" "$TOOLS/incremental" --bin "$BIN" --brokers "$BROKERS" \
        --records "$size" --page-size "$page" --percent "$INCR_PERCENT" --per-second "$INCR_PER_SECOND" \
        --prefix "$PREFIX" --timeout "$((STEP_TIMEOUT * 2))s" "${KS_ENV_FLAGS[@]}" 2>"$OUT/logs/incremental-$size-$page.log")" || {
        cat "$OUT/logs/incremental-$size-$page.log" >&2
        ks_die "incremental failed"
      }
      emit incremental "$size" "$page" 1 "$out"
    done
  done
fi

# ------------------------------------------------------------------ wide tie

if [ "$TIE" = 1 ]; then
  say "wide tie: keysetsync once through ties of [$TIE_SIZES] records at one second (after-id API), $TIE_RUNS runs interleaved, shapes $TIE_SHAPES"
  # bench/tie prints its own result lines (kinds tie, spread and tie_summary).
  timeout -k 10 "$((STEP_TIMEOUT * 4))" "$TOOLS/tie" --bin "$BIN" --brokers "$BROKERS" \
    --sizes "${TIE_SIZES// /,}" --runs "$TIE_RUNS" --shapes "$TIE_SHAPES" --prefix "$PREFIX" \
    --timeout "$((STEP_TIMEOUT * 4))s" "${KS_ENV_FLAGS[@]}" >"$OUT/tie.jsonl" 2>"$OUT/logs/tie.log" || {
    cat "$OUT/logs/tie.log" >&2
    ks_die "tie failed"
  }
  cat "$OUT/tie.jsonl" >>"$RESULTS"
fi

# ------------------------------------------------------------------ many pipelines

if [ "$MANY" = 1 ]; then
  for ((run = 1; run <= MANY_RUNS; run++)); do
    say "many pipelines, run $run/$MANY_RUNS: $MANY_PIPELINES pipelines x $MANY_RECORDS records in one process (first sync, idle once, idle passes of run --interval $MANY_INTERVAL), and one pipeline over all their records"
    mkdir -p "$OUT/logs/many-$run" "$OUT/many-$run"
    # bench/manypipes prints its own result lines (kinds many_single, many_first, many_idle,
    # many_run and many_summary).
    timeout -k 10 "$((STEP_TIMEOUT * 4))" "$TOOLS/manypipes" --bin "$BIN" --brokers "$BROKERS" \
      --pipelines "$MANY_PIPELINES" --records "$MANY_RECORDS" --page-size "$MANY_PAGE" \
      --interval "$MANY_INTERVAL" --run-passes "$MANY_PASSES" --run "$run" --prefix "$PREFIX" \
      --profile "$OUT/many-$run" --log-dir "$OUT/logs/many-$run" --timeout "$((STEP_TIMEOUT * 4))s" \
      "${KS_ENV_FLAGS[@]}" >"$OUT/many-$run.jsonl" 2>"$OUT/logs/many-$run.log" || {
      cat "$OUT/logs/many-$run.log" >&2
      ks_die "many pipelines failed"
    }
    cat "$OUT/many-$run.jsonl" >>"$RESULTS"
    {
      echo "## CPU of the idle passes of $MANY_PIPELINES pipelines (run $run), top 25 by cumulative"
      go tool pprof -top -cum -nodecount 25 "$BIN" "$OUT/many-$run/cpu.prof" 2>/dev/null
      echo
      echo "## heap in use at the end of the idle passes, top 15"
      go tool pprof -top -sample_index=inuse_space -nodecount 15 "$BIN" "$OUT/many-$run/heap.prof" 2>/dev/null
    } >"$OUT/many-$run/profile.txt"
    say "many pipelines: profiles in $OUT/many-$run (go tool pprof -http=127.0.0.1:0 $BIN $OUT/many-$run/heap.prof)"
  done
fi

# ------------------------------------------------------------------ latency

if [ "$LAT" = 1 ]; then
  for delivery in ${LAT_DELIVERY:-default}; do
    dflag=()
    [ "$delivery" = default ] || dflag=(--delivery "$delivery")
    say "latency: keysetsync run --interval $LAT_INTERVAL --delivery $delivery, $LAT_RATE updates/s for ${LAT_SECONDS}s ($LAT_RECORDS records, page $LAT_PAGE)"
    out="$(timeout -k 10 "$((LAT_SECONDS + 300))" "$TOOLS/latency" --bin "$BIN" --brokers "$BROKERS" \
      --records "$LAT_RECORDS" --page-size "$LAT_PAGE" --interval "$LAT_INTERVAL" --rate "$LAT_RATE" \
      --duration "${LAT_SECONDS}s" --prefix "$PREFIX" --timeout "$((LAT_SECONDS + 240))s" "${dflag[@]}" \
      --log "$OUT/logs/latency-keysetsync-$delivery.log" "${KS_ENV_FLAGS[@]}" 2>"$OUT/logs/latency-$delivery.log")" || {
      cat "$OUT/logs/latency-$delivery.log" >&2
      ks_die "latency ($delivery) failed"
    }
    emit latency "$LAT_RECORDS" "$LAT_PAGE" 1 "$out"
  done
fi

# ------------------------------------------------------------------ profile

if [ "$PROFILE" = 1 ]; then
  say "profile: one pass of $PROFILE_RECORDS records, page $PROFILE_PAGE (BenchmarkSyncPass, real broker, playground process)"
  start_playground "$PROFILE_RECORDS" "$PROFILE_PAGE"
  (cd "$SRC" && go test -c -o "$OUT/bin/pipeline.test" ./pipeline/)
  (cd "$OUT" && KEYSETSYNC_BENCH_API_URL="$PG_URL" KEYSETSYNC_BENCH_BROKERS="$BROKERS" \
    timeout -k 10 "$STEP_TIMEOUT" "$OUT/bin/pipeline.test" -test.run '^$' -test.bench '^BenchmarkSyncPass$' \
    -test.benchtime 1x -test.benchmem -test.cpuprofile "$OUT/cpu.prof" >"$OUT/logs/profile-bench.log" 2>&1) || {
    cat "$OUT/logs/profile-bench.log" >&2
    ks_die "profiling run failed"
  }
  stop_playground "$PG_PID"
  {
    grep -E '^Benchmark' "$OUT/logs/profile-bench.log" || true
    echo
    echo "## share of CPU samples whose stack contains ... (inclusive; categories overlap)"
    for cat in \
      "goavro=github.com/linkedin/goavro" \
      "avro.Codec.Append (incl. building the map)=avro\.\(\*Codec\)\.Append" \
      "encoding/json (all)=^encoding/json\." \
      "source.DecodeUser=source\.DecodeUser" \
      "Source.fetchOnce (HTTP + envelope)=source\.\(\*Source\)\.fetchOnce" \
      "net/http=^net/http\." \
      "time (parse/format)=^time\.(Parse|parse|Time\.Format|Time\.AppendFormat)" \
      "source.fingerprint=source\.fingerprint" \
      "Pipeline.message (build messages)=pipeline\.\(\*Pipeline\)\.message" \
      "kafka-go=segmentio/kafka-go" \
      "runtime.mallocgc=runtime\.mallocgc" \
      "GC background workers=runtime\.gcBgMarkWorker" \
      "syscalls=^syscall\.|^internal/runtime/syscall"; do
      name="${cat%%=*}" re="${cat#*=}"
      pct="$(go tool pprof -top -focus="$re" "$OUT/bin/pipeline.test" "$OUT/cpu.prof" 2>/dev/null |
        sed -n 's/.*Showing nodes accounting for [^,]*, \([0-9.]*%\) of \(.*\) total.*/\1 of \2/p' | head -n1)"
      printf '%-45s %s\n' "$name" "${pct:-0%}"
    done
    echo
    echo "## top 30 functions by flat CPU"
    go tool pprof -top -nodecount 30 "$OUT/bin/pipeline.test" "$OUT/cpu.prof" 2>/dev/null
    echo
    echo "## top 30 by cumulative CPU"
    go tool pprof -top -cum -nodecount 30 "$OUT/bin/pipeline.test" "$OUT/cpu.prof" 2>/dev/null
  } >"$OUT/profile.txt"
  say "profile summary in $OUT/profile.txt (go tool pprof -http=127.0.0.1:0 $OUT/bin/pipeline.test $OUT/cpu.prof)"
fi

# ------------------------------------------------------------------ cursor load

# One Load of the cursor store against cursor topics of growing size: the followed store (one
# ListOffsets when nothing is new) side by side with the whole-topic scan every Load did before.
# The topics are written by the benchmark (uncompacted, the broker's segment defaults) and
# deleted after it; their names start with cursorbench-, not with $PREFIX.
if [ "$CURSOR" = 1 ]; then
  say "cursor load: cursor topics of [$CURSOR_SIZES] records, followed store against whole-topic scan, $CURSOR_RUNS runs (BenchmarkCursorLoad)"
  (cd "$SRC" && go test -c -o "$OUT/bin/kafka.test" ./kafka/)
  # A run measures every size, one after the other; runs repeat that (not -test.count, which
  # repeats each size back to back), so load that drifts over minutes falls on every size alike.
  for ((run = 1; run <= CURSOR_RUNS; run++)); do
    say "cursor load: run $run/$CURSOR_RUNS"
    (cd "$OUT" && KAFKA_BROKERS="$BROKERS" KEYSETSYNC_CURSOR_BENCH_SIZES="$CURSOR_SIZES" \
      timeout -k 10 "$((STEP_TIMEOUT * 2))" "$OUT/bin/kafka.test" -test.run '^$' -test.bench '^BenchmarkCursorLoad$' \
      -test.benchtime 2s >"$OUT/logs/cursorload-bench-$run.log" 2>&1) || {
      cat "$OUT/logs/cursorload-bench-$run.log" >&2
      ks_die "cursor load benchmark failed"
    }
  done
  cat "$OUT"/logs/cursorload-bench-*.log >"$OUT/logs/cursorload-bench.log"
  "$PY" bench/cursorload.py "$OUT/logs/cursorload-bench.log" >"$OUT/cursorload.md"
fi

# ------------------------------------------------------------------ report

echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
"$PY" bench/report.py "$RESULTS" "$OUT/machine.txt" >"$OUT/report.md"
[ -f "$OUT/profile.txt" ] && {
  echo
  echo '### CPU profile (one pass)'
  echo
  echo '```'
  sed -n '1,/^## top 30 functions/p' "$OUT/profile.txt" | sed '$d'
  echo '```'
} >>"$OUT/report.md"
[ -f "$OUT/cursorload.md" ] && {
  echo
  cat "$OUT/cursorload.md"
} >>"$OUT/report.md"
cat "$OUT/report.md"
say "done in $((SECONDS - T0))s; results in $OUT"
