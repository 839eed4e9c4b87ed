#!/usr/bin/env python3
"""Renders BenchmarkCursorLoad's output (go test -bench, several -count) as a Markdown table:
per cursor-topic size, the median time of one Load of the followed store and of the old
whole-topic scan, their ratio, and the followed store's first Load (its read of the topic).

    python3 bench/cursorload.py bench-output.txt
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^BenchmarkCursorLoad/records=(\d+)/(followed|scan)-\d+\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) first_load_ms)?")


def main():
    ns = defaultdict(list)  # (size, variant) -> ns/op of each run
    first = defaultdict(list)  # size -> first_load_ms of each run
    for line in open(sys.argv[1]):
        m = LINE.match(line)
        if not m:
            continue
        size, variant = int(m.group(1)), m.group(2)
        ns[(size, variant)].append(float(m.group(3)))
        if m.group(4):
            first[size].append(float(m.group(4)))
    sizes = sorted({s for s, _ in ns})
    if not sizes:
        sys.exit("no BenchmarkCursorLoad results in " + sys.argv[1])
    runs = max(len(v) for v in ns.values())
    print(f"### Cursor load against the cursor topic's size (BenchmarkCursorLoad, medians of {runs} runs)")
    print()
    print("| cursor records | Load, followed store | Load, whole-topic scan (before) | scan / followed | followed store's first Load (reads the topic) |")
    print("|---:|---:|---:|---:|---:|")
    base = None
    for s in sizes:
        f = statistics.median(ns[(s, "followed")]) if ns[(s, "followed")] else None
        sc = statistics.median(ns[(s, "scan")]) if ns[(s, "scan")] else None
        fl = statistics.median(first[s]) if first[s] else None
        base = base or f
        ratio = f"{sc / f:,.0f}x" if f and sc else "-"
        print(f"| {s:,} | {ms(f)} | {ms(sc)} | {ratio} | {'-' if fl is None else f'{fl:,.0f} ms'} |")
    last = ns[(sizes[-1], "followed")]
    if base and last and len(sizes) > 1:
        print()
        print(f"A followed Load at {sizes[-1]:,} records takes {statistics.median(last) / base:.2f}x its time at {sizes[0]:,}.")


def ms(x):
    if x is None:
        return "-"
    return f"{x / 1e6:,.3f} ms" if x < 1e8 else f"{x / 1e9:,.2f} s"


if __name__ == "__main__":
    main()
