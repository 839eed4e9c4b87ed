#!/usr/bin/python3
"""Independent end-to-end check of a keysetsync topic.

Reads a whole topic (every partition, from the beginning up to the high
watermarks taken at start) with librdkafka (python3-confluent-kafka), decodes
every value with the Apache Avro reference implementation (python3-avro), keeps
the latest value per key (a null value is a tombstone: the id was deleted) and
compares that with the source API's snapshot (JSON lines, one user per line).
None of the project's own code is used, so this checks the Go producer against
clients we did not write.

Runs under Debian's /usr/bin/python3, which has the two packages:
    apt-get install python3-avro python3-confluent-kafka

Examples:
    scripts/check_topic.py --brokers 127.0.0.1:9092 --topic users \\
        --schema schema.avsc --snapshot-url http://127.0.0.1:5001/snapshot
    scripts/check_topic.py --topic users --schema schema.avsc --print 3

The topic is read as a read_committed consumer (isolation.level=read_committed):
records of aborted transactions are skipped, and an open transaction holds the
read at its first offset (the partition's last stable offset). A record
version that appears more than once (same key, keysetsync.updated_at header
and value bytes) is counted as a duplicate; --max-duplicates N fails the check
beyond N (0 for an exactly-once pipeline).

Exit status: 0 when every snapshot record is in the topic with equal fields and
everything decoded; 1 when a record is missing or stale, a message did not
decode, a key does not match its record's id, a key is in more than one
partition, --expect-count does not match, there are more duplicates than
--max-duplicates, or the topic/snapshot could not be read; 2 on bad arguments.
Records only in the topic ("extra") are reported but do not fail the check.
"""

import argparse
import datetime as dt
import io
import json
import sys
import time
import urllib.request
import uuid

try:
    import avro.io
    import avro.schema
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        f"check_topic: {e}: run with /usr/bin/python3 and install the Debian "
        "packages python3-avro python3-confluent-kafka"
    )

UTC = dt.timezone.utc
# Fields compared with the snapshot (besides id). Times are Avro timestamp-millis.
STRING_FIELDS = ("name", "email", "address", "company", "job")
TIME_FIELDS = ("createdAt", "updatedAt")
MAX_EXAMPLES = 10
UPDATED_AT_HEADER = "keysetsync.updated_at"


def log(msg):
    print(f"check_topic: {msg}", file=sys.stderr, flush=True)


def parse_time(v):
    """Snapshot time ("2024-01-02T03:04:05Z", RFC 3339) or Avro value -> aware UTC datetime."""
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(v, (int, float)):  # raw timestamp-millis if the logical type was not applied
        return dt.datetime.fromtimestamp(v / 1000.0, tz=UTC)
    if isinstance(v, str):
        s = v.strip()
        if not s:  # "" from the API means no time, like null
            return None
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        t = dt.datetime.fromisoformat(s)
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
    raise ValueError(f"unsupported time value {v!r}")


def fmt_time(t):
    if t is None:
        return None
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond // 1000:03d}" if t.microsecond else "") + "Z"


def jsonable(rec):
    return {k: (fmt_time(v) if isinstance(v, dt.datetime) else v) for k, v in rec.items()}


class Decoder:
    def __init__(self, schema_path):
        with open(schema_path, encoding="utf-8") as f:
            text = f.read()
        try:
            self.schema = avro.schema.parse(text)
        except Exception as e:
            raise SystemExit(f"check_topic: {schema_path}: not a valid Avro schema: {e}")
        self.reader = avro.io.DatumReader(self.schema)

    def decode(self, value):
        buf = io.BytesIO(value)
        rec = self.reader.read(avro.io.BinaryDecoder(buf))
        if buf.tell() != len(value):
            raise ValueError(
                f"{len(value) - buf.tell()} trailing byte(s) after the record "
                f"(wrong schema, or framed/non-plain Avro?)"
            )
        return rec


def fetch_snapshot(url, timeout):
    t0 = time.monotonic()
    rows = {}
    dupes = 0
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        for n, line in enumerate(resp, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise SystemExit(f"check_topic: snapshot line {n} is not JSON: {e}: {line[:200]!r}")
            if "id" not in obj or obj["id"] is None:
                raise SystemExit(f"check_topic: snapshot line {n} has no id: {line[:200]!r}")
            key = str(obj["id"])
            if key in rows:
                dupes += 1
            rows[key] = obj
    log(f"snapshot: {len(rows)} records from {url} in {time.monotonic() - t0:.1f}s")
    if dupes:
        log(f"WARNING: snapshot repeats {dupes} id(s); the last occurrence is used")
    return rows


def read_topic(args, decoder):
    """Returns (latest, stats, problems) where latest maps id -> decoded record or None."""
    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            # Required by librdkafka, never joined or committed (we assign partitions).
            "group.id": f"check-topic-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "client.id": "keysetsync-check-topic",
            "fetch.max.bytes": 52428800,
        }
    )
    stats = {"messages": 0, "tombstones": 0, "bytes": 0}
    problems = {"decode": [], "key": [], "split": [], "duplicate": []}
    counts = {"decode": 0, "key": 0, "split": 0, "duplicate": 0}
    latest = {}
    versions = {}  # (key, updated_at header, value) -> first offset
    key_partition = {}
    printed = 0

    def problem(kind, text):
        counts[kind] += 1
        if len(problems[kind]) < MAX_EXAMPLES:
            problems[kind].append(text)

    try:
        md = consumer.list_topics(args.topic, timeout=args.timeout)
        tmd = md.topics.get(args.topic)
        if tmd is None or tmd.error is not None:
            err = tmd.error if tmd is not None else "not in metadata"
            raise SystemExit(f"check_topic: topic {args.topic!r} on {args.brokers}: {err}")
        parts = sorted(tmd.partitions)
        if not parts:
            raise SystemExit(f"check_topic: topic {args.topic!r} has no partitions")
        ends = {}
        assign = []
        for p in parts:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(args.topic, p), timeout=args.timeout, cached=False
            )
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(args.topic, p, low))
        log(
            f"topic {args.topic}: {len(parts)} partition(s), end offsets "
            + ", ".join(f"{p}:{ends.get(p, 0)}" for p in parts)
        )
        if assign:
            consumer.assign(assign)
        remaining = dict(ends)
        deadline = time.monotonic() + args.timeout
        last_progress = time.monotonic()

        def done(p):
            remaining.pop(p, None)
            consumer.pause([TopicPartition(args.topic, p)])

        while remaining:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"check_topic: timed out after {args.timeout}s with partitions "
                    f"{sorted(remaining)} unfinished ({stats['messages']} messages read)"
                )
            msgs = consumer.consume(num_messages=1000, timeout=1.0)
            if msgs:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > 30:
                log(f"no messages for 30s; still waiting for partitions {sorted(remaining)}")
                last_progress = time.monotonic()
            for m in msgs:
                p = m.partition()
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if p in remaining and m.offset() >= remaining[p]:
                            done(p)
                        continue
                    if err.fatal():
                        raise SystemExit(f"check_topic: fatal consumer error: {err}")
                    log(f"consumer error (retrying): {err}")
                    continue
                if p not in remaining or m.offset() >= remaining[p]:
                    continue  # past the end offsets taken at start
                stats["messages"] += 1
                where = f"partition {p} offset {m.offset()}"
                kb = m.key()
                val = m.value()
                if kb is None:
                    problem("key", f"{where}: null key")
                    key = None
                else:
                    try:
                        key = kb.decode("utf-8")
                    except UnicodeDecodeError:
                        problem("key", f"{where}: key is not UTF-8: {kb[:40]!r}")
                        key = None
                if val is None:
                    stats["tombstones"] += 1
                    rec = None
                else:
                    stats["bytes"] += len(val)
                    try:
                        rec = decoder.decode(val)
                    except Exception as e:  # any decoding failure is a finding
                        problem("decode", f"{where} key {key!r}: {type(e).__name__}: {e}")
                        rec = None
                        key = None  # don't let an undecodable value count as a tombstone
                    else:
                        if key is not None and rec.get("id") != key:
                            problem("key", f"{where}: key {key!r} != record id {rec.get('id')!r}")
                        if args.print and printed < args.print:
                            printed += 1
                            print(
                                json.dumps(
                                    {"partition": p, "offset": m.offset(), "key": key, "value": jsonable(rec)},
                                    ensure_ascii=False,
                                ),
                                flush=True,
                            )
                updated_at = None
                for hk, hv in m.headers() or []:
                    if hk == UPDATED_AT_HEADER:
                        updated_at = hv
                version = (kb, updated_at, val)
                if version in versions:
                    problem("duplicate", f"{where}: key {key!r} updated_at {updated_at!r}: "
                            f"the same version is at {versions[version]}")
                else:
                    versions[version] = where
                if key is not None:
                    prev = key_partition.setdefault(key, p)
                    if prev != p:
                        problem("split", f"key {key!r} is in partitions {prev} and {p}")
                    latest[key] = rec
                if m.offset() >= remaining.get(p, 0) - 1:
                    done(p)
            if args.print and not args.snapshot_url and printed >= args.print:
                break
    except KafkaException as e:
        raise SystemExit(f"check_topic: kafka error: {e}")
    finally:
        consumer.close()
    return latest, stats, problems, counts


def compare(latest, snapshot, lag_tolerance, now):
    missing, stale, lagging, extra = [], [], [], []
    for key, want in snapshot.items():
        got = latest.get(key)
        want_updated = parse_time(want.get("updatedAt"))
        recent = (
            lag_tolerance > 0
            and want_updated is not None
            and want_updated >= now - dt.timedelta(seconds=lag_tolerance)
        )
        if got is None:
            reason = "deleted (tombstone)" if key in latest else "not in topic"
            (lagging if recent else missing).append((key, reason))
            continue
        diffs = []
        for f in STRING_FIELDS:
            a, b = want.get(f), got.get(f)
            if a != b:
                diffs.append(f"{f}: snapshot={a!r} topic={b!r}")
        for f in TIME_FIELDS:
            a, b = parse_time(want.get(f)), parse_time(got.get(f))
            if a != b:
                diffs.append(f"{f}: snapshot={fmt_time(a)} topic={fmt_time(b)}")
        if diffs:
            got_updated = parse_time(got.get("updatedAt"))
            behind = got_updated is not None and want_updated is not None and got_updated < want_updated
            (lagging if (recent and behind) else stale).append((key, "; ".join(diffs)))
    for key, rec in latest.items():
        if rec is not None and key not in snapshot:
            extra.append((key, f"updatedAt={fmt_time(parse_time(rec.get('updatedAt')))}"))
    return missing, stale, lagging, extra


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--brokers", default="127.0.0.1:9092", help="bootstrap servers (default %(default)s)")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--schema", required=True, help="Avro schema JSON file (from `keysetsync schema`)")
    ap.add_argument("--snapshot-url", help="source snapshot: JSON lines, one user per line")
    ap.add_argument("--expect-count", type=int, help="fail unless the topic holds exactly N live ids "
                    "(and the snapshot N records)")
    ap.add_argument("--lag-tolerance", type=float, default=0, metavar="SECONDS",
                    help="don't fail on records that are missing or older in the topic when the "
                    "snapshot's updatedAt is within the last SECONDS (the source changed after the "
                    "last sync); reported as 'lagging'. Default 0: strict")
    ap.add_argument("--max-duplicates", type=int, metavar="N",
                    help="fail when more than N messages repeat a record version (key, "
                    "keysetsync.updated_at header and value); default: report only")
    ap.add_argument("--print", type=int, default=0, metavar="N",
                    help="print the first N decoded messages as JSON lines; without --snapshot-url "
                    "stop after them")
    ap.add_argument("--timeout", type=float, default=120, help="seconds for metadata and for reading "
                    "the topic (default %(default)s)")
    ap.add_argument("--summary-json", metavar="FILE", help="also write the counts as JSON to FILE")
    args = ap.parse_args()

    decoder = Decoder(args.schema)
    t0 = time.monotonic()
    latest, stats, problems, counts = read_topic(args, decoder)
    read_secs = time.monotonic() - t0
    if args.print and not args.snapshot_url and args.expect_count is None:
        return 0 if not any(counts.values()) else 1

    live = sum(1 for v in latest.values() if v is not None)
    summary = {
        "topic": args.topic,
        "messages": stats["messages"],
        "tombstones": stats["tombstones"],
        "ids": len(latest),
        "live": live,
        "decode_errors": counts["decode"],
        "key_errors": counts["key"],
        "split_keys": counts["split"],
        "duplicates": counts["duplicate"],
    }
    missing = stale = lagging = extra = []
    if args.snapshot_url:
        now = dt.datetime.now(tz=UTC)
        snapshot = fetch_snapshot(args.snapshot_url, args.timeout)
        missing, stale, lagging, extra = compare(latest, snapshot, args.lag_tolerance, now)
        summary.update(
            snapshot=len(snapshot), missing=len(missing), stale=len(stale), lagging=len(lagging), extra=len(extra)
        )
    failures = []
    if counts["decode"]:
        failures.append("decode errors")
    if counts["key"]:
        failures.append("key errors")
    if counts["split"]:
        failures.append("keys in several partitions")
    if args.max_duplicates is not None and counts["duplicate"] > args.max_duplicates:
        failures.append(f"{counts['duplicate']} duplicate record versions (at most {args.max_duplicates})")
    if missing:
        failures.append("missing records")
    if stale:
        failures.append("stale records")
    if args.expect_count is not None:
        if live != args.expect_count:
            failures.append(f"live ids {live} != expected {args.expect_count}")
        if args.snapshot_url and summary["snapshot"] != args.expect_count:
            failures.append(f"snapshot has {summary['snapshot']} records, expected {args.expect_count}")
    summary["ok"] = not failures

    def examples(title, items):
        if items:
            print(f"  {title} (showing {min(len(items), MAX_EXAMPLES)} of {len(items)}):")
            for it in items[:MAX_EXAMPLES]:
                print(f"    {it}" if isinstance(it, str) else f"    id={it[0]!r}: {it[1]}")

    line = " ".join(f"{k}={v}" for k, v in summary.items() if k not in ("ok",))
    verdict = "OK" if not failures else "FAIL (" + ", ".join(failures) + ")"
    print(f"check_topic: {line} read_secs={read_secs:.1f} -> {verdict}", flush=True)
    for kind, title in (("decode", "decode errors"), ("key", "key errors"), ("split", "keys in several partitions"),
                        ("duplicate", "duplicate record versions")):
        if counts[kind]:
            examples(title, problems[kind])
    examples("missing", missing)
    examples("stale", stale)
    examples("lagging (tolerated)", lagging)
    examples("extra (in topic, not in snapshot; not a failure)", extra)
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    return 0 if not failures else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
