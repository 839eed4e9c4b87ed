#!/usr/bin/env bash
# End-to-end acceptance check against a running broker (scripts/kafka.sh start):
#   1. start `keysetsync playground` with E2E_RECORDS users,
#   2. `keysetsync once` into fresh topics,
#   3. scripts/check_topic.py: every snapshot record is in the topic, decoded by
#      the reference Avro implementation, with equal fields (exactly E2E_RECORDS ids),
#   4. `keysetsync once` again: it must send nothing (its summary log line says
#      records_produced=0 and the topic's message count is unchanged),
#   5. the cursor topic is compacted.
#
#   scripts/e2e.sh                        # builds bin/keysetsync first
#   E2E_RECORDS=5000 scripts/e2e.sh       # smaller, quicker
#   E2E_BUILD=0 scripts/e2e.sh            # use the existing bin/keysetsync
set -euo pipefail

# What the second `once` must log: a summary line matching SUMMARY_LINE_RE that
# contains NOTHING_SENT_RE. Adjust here if the log wording changes.
SUMMARY_LINE_RE='msg="pass finished"'
NOTHING_SENT_RE='(^| )records_produced=0( |$)'

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

BROKERS="${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}"
ADDR="${E2E_ADDR:-127.0.0.1:5055}"
RECORDS="${E2E_RECORDS:-100000}"
ONCE_TIMEOUT="${E2E_ONCE_TIMEOUT:-900}"
BIN="bin/keysetsync"
RUN_ID="$RANDOM$RANDOM"
TOPIC="ci-users-$RUN_ID"
CURSOR_TOPIC="ci-cursors-$RUN_ID"
PIPELINE="ci"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keysetsync-e2e.XXXXXX")"

playground_pid=""
cleanup() {
  local rc=$?
  if [ -n "$playground_pid" ]; then
    ks_kill "$playground_pid" 10
    wait "$playground_pid" 2>/dev/null || true
  fi
  if [ "$rc" != 0 ]; then
    ks_warn "e2e FAILED (exit $rc); logs kept in $WORK"
    echo "e2e: 0 passed, 1 failed"
  else
    rm -rf "$WORK"
    echo "e2e: 1 passed, 0 failed"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { ks_log "e2e: $*"; }

if [ "${E2E_BUILD:-1}" = 1 ]; then ks_build; fi
[ -x "$BIN" ] || ks_die "$BIN not found (run: go build -o bin/keysetsync ./cmd/keysetsync)"
/usr/bin/python3 -c 'import avro.io, confluent_kafka' 2>/dev/null ||
  ks_die "/usr/bin/python3 lacks avro/confluent_kafka: apt-get install python3-avro python3-confluent-kafka"
scripts/kafka.sh status >/dev/null 2>&1 || [ -n "${KAFKA_BROKERS:-}" ] ||
  ks_die "no broker on $BROKERS: run scripts/kafka.sh start first"

step "playground on $ADDR with $RECORDS records (log: $WORK/playground.log)"
"$BIN" playground --addr "$ADDR" --records "$RECORDS" >"$WORK/playground.log" 2>&1 &
playground_pid=$!
if ! ks_wait_http "http://$ADDR/snapshot" 120 "$playground_pid"; then
  tail -n 30 "$WORK/playground.log" >&2
  ks_die "playground did not come up"
fi

# run_once LOGFILE: one `keysetsync once` pass, its log kept in LOGFILE.
run_once() {
  local logf=$1 t0=$SECONDS rc=0
  timeout -s INT "$ONCE_TIMEOUT" "$BIN" once \
    --api-url "http://$ADDR/pagination/keyset" --brokers "$BROKERS" \
    --topic "$TOPIC" --cursor-topic "$CURSOR_TOPIC" --pipeline "$PIPELINE" \
    >"$logf" 2>&1 || rc=$?
  grep -E "$SUMMARY_LINE_RE" "$logf" >&2 || tail -n 5 "$logf" >&2
  if [ "$rc" != 0 ]; then
    ks_warn "keysetsync once exited $rc after $((SECONDS - t0))s; last lines of $logf:"
    tail -n 40 "$logf" >&2
    return 1
  fi
  step "once finished in $((SECONDS - t0))s"
}

step "keysetsync once -> topic $TOPIC, cursor topic $CURSOR_TOPIC"
run_once "$WORK/once1.log" || ks_die "first once failed"

"$BIN" schema >"$WORK/schema.avsc" || ks_die "keysetsync schema failed"

step "check_topic.py (independent consumer + Avro reference decoder) against the snapshot"
scripts/check_topic.py --brokers "$BROKERS" --topic "$TOPIC" --schema "$WORK/schema.avsc" \
  --snapshot-url "http://$ADDR/snapshot" --expect-count "$RECORDS" \
  --summary-json "$WORK/check1.json" || ks_die "topic check failed after the first once"

step "keysetsync once again: must send nothing"
run_once "$WORK/once2.log" || ks_die "second once failed"
if ! grep -E "$SUMMARY_LINE_RE" "$WORK/once2.log" | grep -Eq "$NOTHING_SENT_RE"; then
  tail -n 20 "$WORK/once2.log" >&2
  ks_die "second once: no summary line matching /$SUMMARY_LINE_RE/ with /$NOTHING_SENT_RE/"
fi
scripts/check_topic.py --brokers "$BROKERS" --topic "$TOPIC" --schema "$WORK/schema.avsc" \
  --snapshot-url "http://$ADDR/snapshot" --expect-count "$RECORDS" \
  --summary-json "$WORK/check2.json" || ks_die "topic check failed after the second once"
count() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages"])' "$1"; }
m1="$(count "$WORK/check1.json")"
m2="$(count "$WORK/check2.json")"
[ "$m1" = "$m2" ] || ks_die "second once wrote $((m2 - m1)) message(s) ($m1 -> $m2)"
step "second once sent nothing (topic still holds $m2 messages)"

if [ "${E2E_CHECK_CURSOR_COMPACT:-1}" = 1 ]; then
  desc="$(scripts/kafka.sh topics --bootstrap-server "$BROKERS" --describe --topic "$CURSOR_TOPIC")" ||
    ks_die "could not describe $CURSOR_TOPIC"
  grep -q 'cleanup.policy=compact' <<<"$desc" || {
    echo "$desc" >&2
    ks_die "cursor topic $CURSOR_TOPIC is not compacted"
  }
  step "cursor topic $CURSOR_TOPIC is compacted"
fi

step "the committed cursor (read with kcat) equals the API's greatest updatedAt"
cursor_json="$(kcat -C -b "$BROKERS" -t "$CURSOR_TOPIC" -o beginning -e -q -f '%k\t%s\n' | awk -F'\t' -v k="$PIPELINE" '$1 == k { v = $2 } END { print v }')"
[ -n "$cursor_json" ] || ks_die "no cursor for pipeline $PIPELINE in $CURSOR_TOPIC"
cursor_at="$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["last_updated_at"])' "$cursor_json")"
max_at="$(curl -fsS "http://$ADDR/snapshot" | /usr/bin/python3 -c 'import json,sys; print(max(json.loads(l)["updatedAt"] for l in sys.stdin))')"
[ "$cursor_at" = "$max_at" ] || ks_die "cursor last_updated_at $cursor_at != greatest updatedAt $max_at"
step "cursor last_updated_at = $cursor_at = greatest updatedAt"

step "keysetsync verify"
"$BIN" verify --api-url "http://$ADDR/pagination/keyset" --brokers "$BROKERS" --topic "$TOPIC" ||
  ks_die "keysetsync verify found differences"

step "PASSED: $RECORDS records synced, verified, idempotent rerun"
