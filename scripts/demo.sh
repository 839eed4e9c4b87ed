#!/usr/bin/env bash
# The README's demo: a local Kafka broker, the playground API with live updates,
# one `keysetsync once` pass, a peek at the messages, an independent check, then
# `keysetsync run` for a few seconds so you can watch updates flow, and a final check.
#
#   scripts/demo.sh
#   DEMO_RUN_SECONDS=30 scripts/demo.sh   # watch `run` longer
#   DEMO_RESET=0 scripts/demo.sh          # keep the topics of a previous demo
#
# It uses keysetsync's defaults (topic users, cursor topic keysetsync-cursors,
# API http://127.0.0.1:5001/pagination/keyset, brokers 127.0.0.1:9092). The
# playground's data starts anew each time, so by default the demo first deletes
# those two topics on the local broker (left over from an earlier demo).
# The broker is left running; stop it with scripts/kafka.sh stop.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ADDR=127.0.0.1:5001
BROKERS=127.0.0.1:9092
TOPIC=users
CURSOR_TOPIC=keysetsync-cursors
BIN=bin/keysetsync
RUN_SECONDS="${DEMO_RUN_SECONDS:-10}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/keysetsync-demo.XXXXXX")"

say() { printf '\n\033[1m### %s\033[0m\n' "$*" >&2; }
show() {
  printf '$ %s\n' "$*" >&2
  "$@"
}

playground_pid=""
cleanup() {
  local rc=$?
  if [ -n "$playground_pid" ]; then
    ks_kill "$playground_pid" 10
    wait "$playground_pid" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  [ "$rc" = 0 ] || ks_warn "demo failed (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "Setup: tools, build, local Kafka broker"
ks_ensure_tools
ks_build
scripts/kafka.sh start

topic_exists() { kcat -L -b "$BROKERS" -t "$1" -m 5 2>/dev/null | grep -Eq "topic \"$1\" with [1-9][0-9]* partitions:\$"; }
if [ "${DEMO_RESET:-1}" = 1 ]; then
  for t in "$TOPIC" "$CURSOR_TOPIC"; do
    if topic_exists "$t"; then
      ks_log "deleting topic $t from an earlier demo (DEMO_RESET=0 keeps it)"
      scripts/kafka.sh topics --delete --if-exists --topic "$t"
      for _ in $(seq 1 60); do
        topic_exists "$t" || break
        sleep 0.5
      done
    fi
  done
fi

say "Playground API: 2000 users, 20 per updatedAt tie, 5 updates per second"
printf '$ %s\n' "$BIN playground --addr $ADDR --records 2000 --tie-width 20 --updates-per-second 5 &" >&2
"$BIN" playground --addr "$ADDR" --records 2000 --tie-width 20 --updates-per-second 5 \
  >"$WORK/playground.log" 2>&1 &
playground_pid=$!
ks_wait_http "http://$ADDR/snapshot" 60 "$playground_pid" || {
  tail -n 20 "$WORK/playground.log" >&2
  ks_die "the playground did not come up"
}
page_url="http://$ADDR/pagination/keyset?updated_since=1970-01-01T00:00:00Z"
printf '$ %s\n' "curl -s '$page_url'   # first page: 'data' (up to 50 users) and 'scroll_param'" >&2
curl -sf "$page_url" -o "$WORK/page.json"
/usr/bin/python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))
print(json.dumps({"data": p["data"][:1] + (["... %d more" % (len(p["data"]) - 1)] if len(p["data"]) > 1 else []),
                  "scroll_param": p.get("scroll_param")}, indent=2, ensure_ascii=False))
' "$WORK/page.json"

say "One sync pass: keysetsync once (default flags)"
show "$BIN" once

say "Three messages of topic $TOPIC, read by kcat and decoded by the Avro reference implementation"
"$BIN" schema >"$WORK/schema.avsc"
# kcat frames each message as "partition offset keylen\n" key <4-byte big-endian value length> value,
# which is binary safe; the decoder below reads that.
DECODER='
import io, json, struct, sys, avro.io, avro.schema
schema = avro.schema.parse(open(sys.argv[1]).read())
reader = avro.io.DatumReader(schema)
inp = sys.stdin.buffer
while True:
    head = inp.readline()
    if not head:
        break
    part, off, klen = head.split()
    key = inp.read(int(klen)).decode() if int(klen) >= 0 else None
    (vlen,) = struct.unpack(">i", inp.read(4))
    val = reader.read(avro.io.BinaryDecoder(io.BytesIO(inp.read(vlen)))) if vlen >= 0 else None
    out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in (val or {}).items()}
    print(f"partition {part.decode()} offset {off.decode()} key {key}:")
    print("  " + json.dumps(out, ensure_ascii=False, indent=2).replace("\n", "\n  "))
'
printf '$ %s\n' "kcat -C -b $BROKERS -t $TOPIC -o beginning -c 3 -e -f '%p %o %K\\n%k%R%s' | python3 <decoder> schema.avsc" >&2
kcat -C -b "$BROKERS" -t "$TOPIC" -o beginning -c 3 -e -q -f '%p %o %K\n%k%R%s' |
  /usr/bin/python3 -c "$DECODER" "$WORK/schema.avsc"

say "Independent check: the whole topic against the API's snapshot"
# Records updated after the pass are reported as 'lagging', not as failures.
show scripts/check_topic.py --brokers "$BROKERS" --topic "$TOPIC" --schema "$WORK/schema.avsc" \
  --snapshot-url "http://$ADDR/snapshot" --lag-tolerance 60

say "Continuous sync: keysetsync run --interval 2s for ${RUN_SECONDS}s (updates keep coming)"
rc=0
printf '$ %s\n' "timeout -s INT $RUN_SECONDS $BIN run --interval 2s" >&2
timeout --preserve-status -s INT "$RUN_SECONDS" "$BIN" run --interval 2s || rc=$?
[ "$rc" = 0 ] || ks_die "keysetsync run exited $rc"

say "Check again: only records updated in the last seconds may lag"
show scripts/check_topic.py --brokers "$BROKERS" --topic "$TOPIC" --schema "$WORK/schema.avsc" \
  --snapshot-url "http://$ADDR/snapshot" --lag-tolerance 10

say "Done. The broker keeps running (scripts/kafka.sh stop to stop it); topic '$TOPIC' holds the data."
