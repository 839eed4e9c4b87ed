#!/usr/bin/env python3
"""Turns the raw output of one bench/run.sh measurement into one JSON line on stdout.

    parse.py once LOG TIMEFILE SIZE BATCH [k=v ...]   keysetsync once: JSON log + /usr/bin/time -v
    parse.py pp LOG TIMEFILE SIZE RECSIZE [k=v ...]    ProducerPerformance output + /usr/bin/time -v
    parse.py api JSON TIMEFILE [k=v ...]               apidrain's JSON line + /usr/bin/time -v
    parse.py playground LOG                            `keysetsync playground`'s final stats line

Extra k=v pairs are added as numbers; X_ticks=a:b (CPU clock ticks of another process before and
after, see run.sh cpu_ticks) becomes X_cpu_s, the seconds of CPU that process used meanwhile.
"""
import json
import os
import re
import sys


def timev(path):
    """Wall, user, sys seconds and max RSS (MiB) from a /usr/bin/time -v file."""
    t = open(path).read()

    def field(name):
        m = re.search(r"^\s*" + re.escape(name) + r": (.*)$", t, re.M)
        if not m:
            sys.exit("no %r in %s" % (name, path))
        return m.group(1).strip()

    wall = 0.0
    for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    return dict(wall_s=wall, user_s=float(field("User time (seconds)")), sys_s=float(field("System time (seconds)")),
                rss_mib=int(field("Maximum resident set size (kbytes)")) / 1024)


def extras(d, args):
    tck = os.sysconf("SC_CLK_TCK")
    for a in args:
        k, v = a.split("=", 1)
        if k.endswith("_ticks"):
            lo, hi = v.split(":")
            d[k[: -len("_ticks")] + "_cpu_s"] = (int(hi) - int(lo)) / tck if lo and hi else None
        else:
            d[k] = float(v)
    return d


def once(log, tf, size, batch, *rest):
    size, batch = int(size), int(batch)
    p = None
    backfill, lowered, paused = False, 0, 0
    for line in open(log):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        msg = d.get("msg", "")
        if msg == "pass finished":
            p = d
        # The parallel backfill's and its throttle's log lines (pipeline/backfill.go, throttle).
        backfill = backfill or msg.startswith("backfill started")
        lowered += msg.startswith("api overloaded")
        paused += msg.startswith("api asked to retry later")
    if p is None or not p.get("ok"):
        sys.exit("no successful pass in " + log)
    n, dur = p["records_produced"], p["duration"] / 1e9
    if n != size:
        sys.exit("records_produced=%d, want %d" % (n, size))
    d = dict(records=n, pages=p["pages"], batches=p["batches"], batch_records=batch, seconds=dur, records_per_s=n / dur,
             fetched=p.get("records_fetched"), backfill=backfill, throttle_lowered=lowered, retry_pauses=paused)
    d.update(timev(tf))
    d["cpu_s_per_m"] = (d["user_s"] + d["sys_s"]) / n * 1e6
    return extras(d, rest)


def pp(log, tf, size, recsize, *rest):
    size, recsize = int(size), int(recsize)
    pat = (r"\s*(\d+) %srecords sent, ([\d.]+) records/sec .*?([\d.]+) ms avg latency, ([\d.]+) ms max latency, "
           r"(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th")
    total = steady = None
    for line in open(log):
        total = re.match(pat % "", line) or total
        steady = re.match(pat % "steady state ", line) or steady
    if not total:
        sys.exit("no final summary line in " + log)
    n, rate = int(total.group(1)), float(total.group(2))
    if n != size:
        sys.exit("ProducerPerformance sent %d records, want %d" % (n, size))
    d = dict(records=n, records_per_s=rate, seconds=n / rate, value_bytes=n * recsize,
             avg_latency_ms=float(total.group(3)), p99_latency_ms=int(total.group(7)),
             steady_records_per_s=float(steady.group(2)) if steady else None)
    d.update(timev(tf))
    d["cpu_s_per_m"] = (d["user_s"] + d["sys_s"]) / n * 1e6
    return extras(d, rest)


def api(js, tf, *rest):
    d = json.loads(js)
    t = timev(tf)
    d.update(wall_s=t["wall_s"], user_s=t["user_s"], sys_s=t["sys_s"], rss_mib=t["rss_mib"],
             cpu_s_per_m=(t["user_s"] + t["sys_s"]) / d["records"] * 1e6)
    return extras(d, rest)


def playground(log):
    """The counters of the playground's last stats line ("playground stopped" once it ended)."""
    st = None
    for line in open(log):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("msg") in ("playground stats", "playground stopped"):
            st = d
    if st is None:
        sys.exit("no stats line in " + log)
    return {"pg_" + k: st[k] for k in ("requests", "pages", "records_served", "status_429", "status_5xx")}


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    print(json.dumps({"once": once, "pp": pp, "api": api, "playground": playground}[cmd](*args)))
