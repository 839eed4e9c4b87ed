#!/usr/bin/env python3
"""Renders bench/run.sh results (results.jsonl) as Markdown: medians, ratios, targets.

    python3 bench/report.py results.jsonl [machine.txt]

Rates are medians over the runs of each measurement (each metric's own median). MB = 10^6
bytes of Avro values (keys and headers not counted). Rates of the broker, the API drain and
keysetsync are over each tool's own measured phase: ProducerPerformance's send-to-last-ack,
apidrain's first request to last page, keysetsync's pass duration (its "pass finished" log
line; excludes process start, topic creation and cursor load, which "wall s" includes).
"""
import json
import statistics
import sys
from collections import defaultdict

TARGET_RATIO = 0.80  # e2e >= 80% of min(broker, api) at page size 1000
TARGET_ONEPAGE = 5.0  # page size 50: e2e >= 5x one page at a time
TARGET_RSS_MIB = 64.0
TARGET_LAT_SLACK_MS = 200.0
TARGET_TIE_RATIO = 1.10  # peak RSS, after-id tie of the largest width / the smallest
TARGET_EOS_RATIO = 0.80  # records/s of exactly-once >= 80% of at-least-once's, side by side
# Many pipelines in one process (issue 12).
TARGET_MANY_RSS_MIB = 512.0
TARGET_MANY_IDLE_MS = 2.0  # CPU per idle pass of one pipeline
TARGET_MANY_RATIO = 1.5  # first-sync CPU per record / one pipeline's, same run
# Parallel backfill (issue 11).
TARGET_BF_X_LIMIT = 6.0  # default settings >= 6x the sequential limit page / latency
TARGET_BF_FLAT = 0.95  # no added latency: default settings >= 0.95 of --fetch-concurrency 1's rate


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_int(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt(x, nd=2):
    return "-" if x is None else f"{x:,.{nd}f}"


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    machine = open(sys.argv[2]).read().strip() if len(sys.argv) > 2 else ""
    by = defaultdict(list)
    for r in rows:
        by[(r["kind"], r["size"], r["page"])].append(r)

    # Average value size per size, from the warm-up drains (every run uses the same seed).
    vsize = {}
    for (kind, size, page), rs in by.items():
        if kind == "warmup":
            vsize[size] = rs[0]["value_bytes"] / rs[0]["records"]

    def m(kind, size, page, key):
        return med(r.get(key) for r in by.get((kind, size, page), []))

    def paired(size, page):
        """Median over runs of e2e / min(broker, api) of the same run: robust to load drifting
        between runs (each run measures the three back to back)."""
        rs = []
        for e in by.get(("e2e", size, page), []):
            a = [r for r in by.get(("api", size, page), []) if r["run"] == e["run"]]
            b = [r for r in by.get(("broker", size, 0), []) if r["run"] == e["run"]]
            if a and b:
                rs.append(e["records_per_s"] / min(a[0]["records_per_s"], b[0]["records_per_s"]))
        return med(rs)

    def mbps(kind, size, page):
        rate = m(kind, size, page, "records_per_s")
        return None if rate is None or size not in vsize else rate * vsize[size] / 1e6

    out = []
    w = out.append
    runs = max((r["run"] for r in rows if r["kind"] == "e2e"), default=0)
    w("## Results\n")
    if machine:
        w("```\n" + machine + "\n```\n")
    sizes = sorted({r["size"] for r in rows if r["kind"] in ("e2e", "api", "broker")})
    pages = sorted({r["page"] for r in rows if r["kind"] == "e2e"})
    if sizes:
        w(f"### Throughput (medians of {runs} run{'s' if runs != 1 else ''})\n")
        w("Average Avro value size: " + ", ".join(f"{fmt(vsize.get(s), 1)} B at {s:,} records" for s in sizes) + ".\n")
        w("| records | page | broker ceiling rec/s | MB/s | s | (steady) | API ceiling rec/s | MB/s | s "
          "| keysetsync rec/s | MB/s | pass s | wall s | keysetsync / min(broker, API) | same, per run | slower ceiling |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for s in sizes:
            b = m("broker", s, 0, "records_per_s")
            for p in pages:
                a = m("api", s, p, "records_per_s")
                e = m("e2e", s, p, "records_per_s")
                lo = min(x for x in (a, b) if x is not None) if (a or b) else None
                ratio = e / lo if e and lo else None
                which = "-" if a is None or b is None else ("API" if a < b else "broker")
                w(f"| {s:,} | {p} | {fmt_int(b)} | {fmt(mbps('broker', s, 0), 1)} | {fmt(m('broker', s, 0, 'seconds'))} "
                  f"| {fmt_int(m('broker', s, 0, 'steady_records_per_s'))} "
                  f"| {fmt_int(a)} | {fmt(mbps('api', s, p), 1)} | {fmt(m('api', s, p, 'seconds'))} "
                  f"| {fmt_int(e)} | {fmt(mbps('e2e', s, p), 1)} | {fmt(m('e2e', s, p, 'seconds'))} | {fmt(m('e2e', s, p, 'wall_s'))} "
                  f"| **{fmt(ratio)}** | {fmt(paired(s, p))} | {which} |")
        w("")
        w("keysetsync / min(broker, API) is the ratio of the medians; \"same, per run\" is the median of the "
          "ratios computed within each run (the three measured back to back), which is less sensitive to "
          "load that changes between runs. The targets use the lower of the two.\n")
        w("### keysetsync once: resources (medians)\n")
        w("| records | page | batch records | pages | rec/s | pass s | wall s | peak RSS MiB | CPU s (user+sys) per M records | rec/s min-max over runs |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for kind in ("e2e", "onepage"):
            for s in sizes:
                for p in pages:
                    rs = by.get((kind, s, p))
                    if not rs:
                        continue
                    rates = [r["records_per_s"] for r in rs]
                    w(f"| {s:,} | {p} | {rs[0]['batch_records']}{' (one page per batch)' if kind == 'onepage' else ''} "
                      f"| {fmt_int(m(kind, s, p, 'pages'))} | {fmt_int(m(kind, s, p, 'records_per_s'))} "
                      f"| {fmt(m(kind, s, p, 'seconds'))} | {fmt(m(kind, s, p, 'wall_s'))} | {fmt(m(kind, s, p, 'rss_mib'), 1)} "
                      f"| {fmt(m(kind, s, p, 'cpu_s_per_m'), 1)} | {fmt_int(min(rates))} - {fmt_int(max(rates))} |")
        w("")

        w("### CPU budget (medians, CPU seconds per million records)\n")
        w("Who burns the CPU during each measurement: the measured process itself (user+sys), the "
          "playground process and the broker (from /proc, over the same interval), and the average number "
          "of cores busy with the three together (total CPU / wall). load1 is the 1-minute load average "
          "just before the measurement: above 0 it includes other work on the machine.\n")
        w("| what | records | page | process | playground | broker | total | cores busy | load1 |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        names = {"broker": "broker ceiling (ProducerPerformance)", "api": "API ceiling (apidrain)",
                 "e2e": "keysetsync once", "onepage": "keysetsync once, one page at a time"}
        for s_ in sizes:
            for kind in ("broker", "api", "e2e", "onepage"):
                for p in ([0] if kind == "broker" else pages):
                    rs = by.get((kind, s_, p))
                    if not rs:
                        continue
                    per_m = lambda r, k: None if r.get(k) is None else r[k] / r["records"] * 1e6
                    own = med(per_m(r, "cpu_s_per_m") and r["cpu_s_per_m"] for r in rs)
                    pg = med(per_m(r, "playground_cpu_s") for r in rs)
                    br = med(per_m(r, "broker_cpu_s") for r in rs)
                    tot = med(((r["user_s"] + r["sys_s"]) + (r.get("playground_cpu_s") or 0) + (r.get("broker_cpu_s") or 0)) / r["records"] * 1e6 for r in rs)
                    cores = med(((r["user_s"] + r["sys_s"]) + (r.get("playground_cpu_s") or 0) + (r.get("broker_cpu_s") or 0)) / r["wall_s"] for r in rs)
                    w(f"| {names[kind]} | {s_:,} | {p or '-'} | {fmt(own, 1)} | {fmt(pg, 1)} | {fmt(br, 1)} | {fmt(tot, 1)} "
                      f"| {fmt(cores, 2)} | {fmt(med(r.get('load1') for r in rs), 2)} |")
        w("")

    def eos_paired(size, page):
        """Median over runs of EOS / ALO of the same run (the two measured back to back)."""
        alo = {r["run"]: r["records_per_s"] for r in by.get(("alo", size, page), [])}
        return med(r["records_per_s"] / alo[r["run"]] for r in by.get(("eos", size, page), []) if r["run"] in alo)

    eos_keys = sorted({(r["size"], r["page"]) for r in rows if r["kind"] in ("eos", "alo")})
    if eos_keys:
        eruns = max(r["run"] for r in rows if r["kind"] in ("eos", "alo"))
        w(f"### Exactly-once against at-least-once: `keysetsync once` (medians of {eruns} interleaved run{'s' if eruns != 1 else ''})\n")
        w("The same binary, playground and broker; `--delivery exactly-once` (each batch and its cursor one "
          "transaction) and `--delivery at-least-once` (kafka-go's writer) alternate, the order flipping every run. "
          "Every run's topic then held exactly the records, each key once, read committed. EOS / ALO: the ratio "
          "of the medians, and the median of the ratios within each run.\n")
        w("| records | page | exactly-once rec/s | min-max | at-least-once rec/s | min-max | EOS / ALO | same, per run "
          "| transactions (batches) | CPU s per M records EOS / ALO | peak RSS MiB EOS / ALO | wall s EOS / ALO |")
        w("|---:|---:|---:|---|---:|---|---:|---:|---:|---|---|---|")
        for s_, p in eos_keys:
            e, a = m("eos", s_, p, "records_per_s"), m("alo", s_, p, "records_per_s")
            rng = lambda k: " - ".join(fmt_int(f(r["records_per_s"] for r in by.get((k, s_, p), []))) for f in (min, max)) if by.get((k, s_, p)) else "-"
            w(f"| {s_:,} | {p} | {fmt_int(e)} | {rng('eos')} | {fmt_int(a)} | {rng('alo')} | **{fmt(e / a if e and a else None)}** "
              f"| {fmt(eos_paired(s_, p))} | {fmt_int(m('eos', s_, p, 'batches'))} "
              f"| {fmt(m('eos', s_, p, 'cpu_s_per_m'), 1)} / {fmt(m('alo', s_, p, 'cpu_s_per_m'), 1)} "
              f"| {fmt(m('eos', s_, p, 'rss_mib'), 1)} / {fmt(m('alo', s_, p, 'rss_mib'), 1)} "
              f"| {fmt(m('eos', s_, p, 'wall_s'))} / {fmt(m('alo', s_, p, 'wall_s'))} |")
        w("")
        w("| mode | run | records | rec/s | pass s | load1 before |")
        w("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            if r["kind"] in ("eos", "alo"):
                w(f"| {'exactly-once' if r['kind'] == 'eos' else 'at-least-once'} | {r['run']} | {r['size']:,} "
                  f"| {fmt_int(r['records_per_s'])} | {fmt(r['seconds'])} | {fmt(r.get('load1'), 2)} |")
        w("")

    incr = [r for r in rows if r["kind"] == "incremental"]
    if incr:
        w("### Incremental sync (full sync, update some records, sync again)\n")
        w("| records | page | updated | per second | pages fetched | fewest possible | records fetched | skipped | produced | pass s | wall s | full sync: pages, pass s |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in incr:
            i, f = r["incremental"], r["full"]
            w(f"| {r['records']:,} | {r['page_size']} | {r['updated']:,} | {r['per_second']} | {i['pages']:,} | {r['min_pages']:,} "
              f"| {i['fetched']:,} | {i['skipped']:,} | {i['produced']:,} | {fmt(i['pass_s'], 3)} | {fmt(i['wall_s'])} "
              f"| {f['pages']:,}, {fmt(f['pass_s'])} |")
        w("")

    ties = [r for r in rows if r["kind"] == "tie_summary"]
    for t in ties:
        w(f"### Wide tie: `keysetsync once` through one tie, after-id API (medians of {t['runs']} interleaved runs)\n")
        w("`tie`: every record but the last has the same `updatedAt` second; the last follows one second later. "
          "`spread`, the control: the same records and pages, one per second. Peak RSS: the child's `ru_maxrss` "
          "(or its VmHWM polled from /proc, whichever is larger). Go heap: the largest heap at the end of a GC, "
          "live heap: the largest marked live (GODEBUG=gctrace=1, whole MB). Every run passed its checks: "
          "distinct ids in the topic = records, every committed cursor <= 64 KiB and the last one past the tie.\n")
        w("| shape | records | at one second | peak RSS MiB | min-max | Go heap MB | live heap MB | pass s | wall s | rec/s | pages | resent | largest cursor B |")
        w("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for shape in ("tie", "spread"):
            for n in t["sizes"]:
                st = t["median"].get(shape, {}).get(str(n))
                if not st:
                    continue
                rs = by.get((shape, n, t["page"]), [])
                w(f"| {shape} | {n + 1:,} | {n if shape == 'tie' else 1:,} | {fmt(st['peak_rss_mib'], 1)} | {fmt(st['min_rss_mib'], 1)} - {fmt(st['max_rss_mib'], 1)} "
                  f"| {fmt(st.get('heap_max_mb'), 1)} | {fmt(st.get('heap_live_mb'), 1)} | {fmt(st['seconds'])} | {fmt(st['wall_s'])} "
                  f"| {fmt_int(st['records_per_s'])} | {fmt_int(med(r['pages'] for r in rs))} | {fmt_int(med(r['resent'] for r in rs))} "
                  f"| {fmt_int(max((r['cursor_max_bytes'] for r in rs), default=None))} |")
        w("")

    many = [r for r in rows if r["kind"] == "many_summary"]
    if many:
        w("### Many pipelines in one process (bench/manypipes)\n")
        w("N pipelines in one config file, each its own topic, one shared cursor topic, all reading one "
          "playground of R records (in the measuring process). `single`: ONE pipeline over a playground of "
          "N x R records, the same total work, sequential (`--fetch-concurrency 1`, as the N pipelines' 2-page "
          "passes are), right before and right after the first sync: the mean of the two is the baseline of the ratio. `first`: `once` of the N pipelines "
          "from scratch. `idle once`: the same again with nothing new (open + one empty pass each). `idle run`: "
          "`run --interval`, the CPU of the process over the idle passes after every pipeline's first, per pass. "
          "CPU: user + system of the keysetsync process; peak RSS: its ru_maxrss. Every Kafka client holds and "
          "refreshes the metadata of every topic of the cluster (and refreshes it after each topic it creates), so "
          "the cluster's topic count weighs on the results: "
          + ", ".join(f"run {r['run']}: {fmt_int(r.get('cluster_topics_at_start'))} topics at start" for r in many) + ".\n")
        w("| run | step | pipelines | records | wall s | CPU s | peak RSS MiB | CPU us/record | CPU ms/pipeline pass |")
        w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        names = {"many_single": "single (before)", "many_first": "first sync", "many_single_after": "single (after)", "many_idle": "idle once", "many_run": "idle run"}
        for r in rows:
            if r["kind"] not in names:
                continue
            per_pass = r.get("cpu_per_pass_ms") or r.get("cpu_per_pipeline_ms")
            w(f"| {r['run']} | {names[r['kind']]} | {r['pipelines']:,} | {r['records']:,} | {fmt(r['wall_s'])} | {fmt(r['cpu_s'])} "
              f"| {fmt(r['peak_rss_mib'], 1)} | {fmt(r.get('cpu_per_record_us'), 1)} | {fmt(per_pass, 2)} |")
        w("")

    def bf_paired(kind, size, page):
        """Median over runs of default / --fetch-concurrency 1 of the same run (back to back)."""
        seq = {r["run"]: r["records_per_s"] for r in by.get((kind + "_seq", size, page), [])}
        return med(r["records_per_s"] / seq[r["run"]] for r in by.get((kind, size, page), []) if r["run"] in seq)

    bf_keys = sorted({(r["kind"], r["size"], r["page"]) for r in rows if r["kind"] in ("bf_latency", "bf_flat")},
                     key=lambda k: (k[0] != "bf_latency", k[1], k[2]))
    bf_rl = [r for r in rows if r["kind"] == "bf_ratelimit"]
    if bf_keys or bf_rl:
        bruns = max(r["run"] for r in rows if r["kind"].startswith("bf_"))
        w(f"### Parallel backfill: `keysetsync once` with the default settings against `--fetch-concurrency 1` "
          f"(medians of {bruns} interleaved run{'s' if bruns != 1 else ''})\n")
        w("One playground per row, the two modes alternating on it (the order flips every run). The sequential "
          "limit of a keyset walk is page size / added latency. rec/s: records over keysetsync's pass duration; "
          "peak RSS: `/usr/bin/time -v` of the keysetsync process. Every run's topic held exactly the records, "
          "each key once, read committed; `verified`: `keysetsync verify` of the default run's topic against a "
          "twin playground (same seed, no latency) found nothing missing or stale.\n")
        w("| API | records | page | default rec/s | min-max | x sequential limit | --fetch-concurrency 1 rec/s | "
          "default / 1 | same, per run | backfill engaged | pages default / 1 | records fetched default / 1 "
          "| peak RSS MiB default / 1 | verified |")
        w("|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|---|---|---|")
        for kind, s_, p in bf_keys:
            rs = by.get((kind, s_, p), [])
            d, q = m(kind, s_, p, "records_per_s"), m(kind + "_seq", s_, p, "records_per_s")
            lat_s = med(r.get("latency_s") for r in rs)
            limit = p / lat_s if lat_s else None
            api = f"latency {lat_s * 1000:.0f} ms" if lat_s else "no added latency"
            rng = " - ".join(fmt_int(f(r["records_per_s"] for r in rs)) for f in (min, max)) if rs else "-"
            eng = sum(1 for r in rs if r.get("backfill"))
            ver = sum(1 for r in rs if r.get("verified"))
            w(f"| {api} | {s_:,} | {p} | {fmt_int(d)} | {rng} | {fmt(d / limit if d and limit else None, 1)} | {fmt_int(q)} "
              f"| **{fmt(d / q if d and q else None)}** | {fmt(bf_paired(kind, s_, p))} | {eng} of {len(rs)} runs "
              f"| {fmt_int(m(kind, s_, p, 'pages'))} / {fmt_int(m(kind + '_seq', s_, p, 'pages'))} "
              f"| {fmt_int(m(kind, s_, p, 'fetched'))} / {fmt_int(m(kind + '_seq', s_, p, 'fetched'))} "
              f"| {fmt(m(kind, s_, p, 'rss_mib'), 1)} / {fmt(m(kind + '_seq', s_, p, 'rss_mib'), 1)} | {f'{ver} of {len(rs)}' if ver else '-'} |")
        w("")
        if bf_rl:
            w("Rate-limited API (the playground answers 429 with Retry-After over its token bucket; its own counts "
              "of requests and 429s, one fresh playground per run; keysetsync's throttle log lines):\n")
            w("| run | records | page | latency ms | limit req/s | rec/s | ceiling rec/s (limit x page) | requests | 429s | 429 share "
              "| req/s over the pass | concurrency lowered | retry pauses | peak RSS MiB | verified |")
            w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            for r in bf_rl:
                req, n429 = r["pg_requests"], r["pg_status_429"]
                w(f"| {r['run']} | {r['size']:,} | {r['page']} | {r['latency_s'] * 1000:.0f} | {r['rate_limit']:g} | {fmt_int(r['records_per_s'])} "
                  f"| {fmt_int(r['rate_limit'] * r['page'])} | {req:,} | {n429:,} | {n429 / req:.1%} | {fmt(req / r['seconds'], 1)} "
                  f"| {r.get('throttle_lowered', 0)} | {r.get('retry_pauses', 0)} | {fmt(r['rss_mib'], 1)} | {'yes' if r.get('verified') else '-'} |")
            w("")
        w("| mode | API | run | rec/s | pass s | pages | backfill | load1 before |")
        w("|---|---|---:|---:|---:|---:|---|---:|")
        for r in rows:
            if r["kind"].startswith("bf_"):
                mode = "--fetch-concurrency 1" if r["kind"].endswith("_seq") else "default"
                api = {"bf_latency": "latency", "bf_flat": "no latency", "bf_ratelimit": "rate limit"}[r["kind"].removesuffix("_seq")]
                w(f"| {mode} | {api} | {r['run']} | {fmt_int(r['records_per_s'])} | {fmt(r['seconds'])} | {r['pages']:,} "
                  f"| {'yes' if r.get('backfill') else 'no'} | {fmt(r.get('load1'), 2)} |")
        w("")

    lat = [r for r in rows if r["kind"] == "latency"]
    if lat:
        w("### Continuous mode: update in the API -> message readable in Kafka\n")
        w("The reader reads committed data (isolation.level=read_committed): with exactly-once, an update is "
          "readable once its batch's transaction has committed.\n")
        w("| delivery | interval | updates | rate /s | received | p50 ms | p90 ms | p99 ms | max ms | median pass ms | target p99 ms |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in lat:
            w(f"| {r.get('delivery', 'default')} | {r['interval_ms']} ms | {r['updates']} | {r['rate']} | {r['received']} | {fmt(r['p50_ms'], 0)} | {fmt(r['p90_ms'], 0)} "
              f"| {fmt(r['p99_ms'], 0)} | {fmt(r['max_ms'], 0)} | {fmt(r['median_pass_ms'], 0)} | {r['target_p99_ms']} |")
        w("")

    # Targets of the performance and exactly-once issues.
    w("### Targets\n")
    w("| target | measured | met |")
    w("|---|---|---|")

    def verdict(ok):
        return "n/a" if ok is None else ("**yes**" if ok else "**NO**")

    for s in sizes:
        if 1000 in pages:
            a, b, e = m("api", s, 1000, "records_per_s"), m("broker", s, 0, "records_per_s"), m("e2e", s, 1000, "records_per_s")
            ratio = e / min(a, b) if a and b and e else None
            pr = paired(s, 1000)
            worst = min(x for x in (ratio, pr) if x is not None) if (ratio or pr) else None
            w(f"| {s:,} records, page 1000: keysetsync >= {TARGET_RATIO:.0%} of min(broker, API) "
              f"| {fmt(ratio)} of medians ({fmt_int(e)} vs {fmt_int(min(a, b) if a and b else None)} rec/s), {fmt(pr)} per run "
              f"| {verdict(None if worst is None else worst >= TARGET_RATIO)} |")
    for s in sizes:
        for p in pages:
            one = m("onepage", s, p, "records_per_s")
            e = m("e2e", s, p, "records_per_s")
            if one:
                x = e / one if e else None
                w(f"| {s:,} records, page {p}: keysetsync >= {TARGET_ONEPAGE:.0f}x one page at a time "
                  f"| {fmt(x)}x ({fmt_int(e)} vs {fmt_int(one)} rec/s) | {verdict(None if x is None else x >= TARGET_ONEPAGE)} |")
                a = m("api", s, p, "records_per_s")
                if a:
                    w(f"| (information) API ceiling / one page at a time: about the most pipelining alone can give there "
                      f"| {fmt(a / one)}x ({fmt_int(a)} vs {fmt_int(one)} rec/s) | - |")
    rss = {s: max((m("e2e", s, p, "rss_mib") or 0) for p in pages) for s in sizes}
    for s in sizes:
        w(f"| {s:,} records: peak RSS <= {TARGET_RSS_MIB:.0f} MiB (worst page size) | {fmt(rss[s], 1)} MiB | {verdict(rss[s] <= TARGET_RSS_MIB)} |")
    if len(sizes) >= 2:
        lo, hi = rss[sizes[0]], rss[sizes[-1]]
        w(f"| (information) peak RSS growth from {sizes[0]:,} to {sizes[-1]:,} records | {fmt(lo, 1)} -> {fmt(hi, 1)} MiB "
          f"({hi - lo:+.1f} MiB) | - |")
    for t in ties:
        lo, hi = t["sizes"][0], t["sizes"][-1]
        extra = ""
        if t.get("spread_ratio") is not None:
            extra = (f"; without a tie (control) {fmt(t['spread_ratio'])}x; "
                     f"tie / no tie at {hi:,}: {fmt(t['tie_over_spread'])}x")
        w(f"| after-id tie of {hi:,} records: peak RSS <= {TARGET_TIE_RATIO:.2f}x a tie of {lo:,} "
          f"| {fmt(t['median']['tie'][str(hi)]['peak_rss_mib'], 1)} vs {fmt(t['median']['tie'][str(lo)]['peak_rss_mib'], 1)} MiB: "
          f"{fmt(t['ratio'])}x of medians, {fmt(t['ratio_per_run'])}x per run{extra} "
          f"| {verdict(max(t['ratio'], t['ratio_per_run']) <= TARGET_TIE_RATIO)} |")
    for s_, p in eos_keys:
        e, a = m("eos", s_, p, "records_per_s"), m("alo", s_, p, "records_per_s")
        ratio, pr = (e / a if e and a else None), eos_paired(s_, p)
        worst = min((x for x in (ratio, pr) if x is not None), default=None)
        w(f"| {s_:,} records, page {p}: exactly-once >= {TARGET_EOS_RATIO:.0%} of at-least-once's records/s "
          f"| {fmt(ratio)} of medians ({fmt_int(e)} vs {fmt_int(a)} rec/s), {fmt(pr)} per run "
          f"| {verdict(None if worst is None else worst >= TARGET_EOS_RATIO)} |")
    for r in many:
        n = r["pipelines"]
        w(f"| {n:,} pipelines (run {r['run']}): peak RSS <= {TARGET_MANY_RSS_MIB:.0f} MiB | {fmt(r['peak_rss_mib'], 1)} MiB "
          f"| {verdict(r['peak_rss_mib'] <= TARGET_MANY_RSS_MIB)} |")
        w(f"| {n:,} pipelines (run {r['run']}): idle pass <= {TARGET_MANY_IDLE_MS:.0f} ms CPU per pipeline "
          f"| {fmt(r['idle_cpu_per_pass_ms'])} ms | {verdict(r['idle_cpu_per_pass_ms'] <= TARGET_MANY_IDLE_MS)} |")
        ratio = r.get("first_ratio")
        w(f"| {n:,} pipelines (run {r['run']}): first-sync CPU per record <= {TARGET_MANY_RATIO}x one pipeline's "
          f"| {fmt(ratio)}x ({fmt(r['first_cpu_per_record_us'], 1)} vs {fmt(r.get('single_cpu_per_record_us'), 1)} us) "
          f"| {verdict(None if ratio is None else ratio <= TARGET_MANY_RATIO)} |")
    for kind, s_, p in bf_keys:
        d, q = m(kind, s_, p, "records_per_s"), m(kind + "_seq", s_, p, "records_per_s")
        rss = max((r["rss_mib"] for r in by.get((kind, s_, p), [])), default=None)
        if kind == "bf_latency":
            lat_s = med(r.get("latency_s") for r in by.get((kind, s_, p), []))
            limit = p / lat_s
            w(f"| backfill, {s_:,} records, page {p}, latency {lat_s * 1000:.0f} ms: default settings >= {TARGET_BF_X_LIMIT:.0f}x "
              f"the sequential limit ({fmt_int(limit)} rec/s) | {fmt(d / limit if d else None, 2)}x ({fmt_int(d)} rec/s; "
              f"--fetch-concurrency 1: {fmt_int(q)} rec/s, {fmt(q / limit if q else None, 2)}x) "
              f"| {verdict(None if d is None else d / limit >= TARGET_BF_X_LIMIT)} |")
        else:
            pr = bf_paired(kind, s_, p)
            ratio = d / q if d and q else None
            worst = min((x for x in (ratio, pr) if x is not None), default=None)
            w(f"| backfill, {s_:,} records, page {p}, no added latency: default >= {TARGET_BF_FLAT} of --fetch-concurrency 1 "
              f"| {fmt(ratio)} of medians ({fmt_int(d)} vs {fmt_int(q)} rec/s), {fmt(pr)} per run "
              f"| {verdict(None if worst is None else worst >= TARGET_BF_FLAT)} |")
        w(f"| backfill, {s_:,} records, page {p} ({'latency' if kind == 'bf_latency' else 'no added latency'}): peak RSS <= {TARGET_RSS_MIB:.0f} MiB "
          f"(largest run, default settings) | {fmt(rss, 1)} MiB | {verdict(None if rss is None else rss <= TARGET_RSS_MIB)} |")
    if bf_rl:
        lost = [r for r in bf_rl if not r.get("verified")]
        share = max(r["pg_status_429"] / r["pg_requests"] for r in bf_rl)
        w(f"| backfill against a rate limit: no loss (records, distinct keys, `keysetsync verify`) | "
          f"{len(bf_rl) - len(lost)} of {len(bf_rl)} runs verified | {verdict(not lost)} |")
        w(f"| (information) backfill against a rate limit: 429s / requests, worst run | {share:.1%} | - |")
    for r in lat:
        t = r["target_p99_ms"]
        w(f"| continuous p99 <= interval + {TARGET_LAT_SLACK_MS:.0f} ms ({r.get('delivery', 'default')}) | {fmt(r['p99_ms'], 0)} ms (target {t} ms) "
          f"| {verdict(None if r['p99_ms'] is None else r['p99_ms'] <= t)} |")
    w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
