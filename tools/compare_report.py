#!/usr/bin/env python3
"""Turns a tools/compare.sh results directory into a markdown report (stdout).

Reads runs.tsv (one line per client run: broker, client, workload, run, broker CPU
seconds, raw output), the strand-bench JSON and rdkafka_performance output each line
points at, fio and iperf3 JSON, and peak-rss-kib.txt. Quotes medians over runs, ratios
Strand/Tansu, and checks the targets of docs/benchmarks.md.
"""

import json
import re
import statistics
import sys
from pathlib import Path

# rdkafka_performance starts its clock before it has connected, so the first messages of
# a latency run wait for the connection: the first 0.5 s (5,000 messages at 10,000/s) are
# left out of its percentiles as warm-up. strand-bench connects before its schedule starts.
RDKAFKA_WARMUP_MESSAGES = 5000

SIZES = {"produce-100B": 100, "produce-1KiB": 1024, "consume-100B": 100,
         "latency-10k": 100, "e2e-10k": 100}

PRODUCE_RE = re.compile(
    r"(\d+) messages produced \((\d+) bytes\), (\d+) delivered .*? in (\d+)ms: "
    r"(\d+) msgs/s and ([\d.]+) MB/s")
CONSUME_RE = re.compile(
    r"(\d+) messages \((\d+) bytes\) consumed in (\d+)ms: (\d+) msgs/s \(([\d.]+) MB/s\)")


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def parse_run(client, workload, raw):
    """{'msgs_s', 'mb_s', 'messages', 'lat': {p50,p99,p99_9,max} in ms} or None."""
    raw = Path(raw)
    if client == "strand-bench":
        if not raw.exists():
            return None
        doc = json.loads(raw.read_text())["runs"][0]
        if doc["errors"]:
            return None
        side = doc["consume"] if workload.startswith("consume") else doc["produce"]
        lat_doc = doc["e2e_latency"] if workload.startswith("e2e") else doc["ack_latency"]
        out = {"msgs_s": side["messages_per_s"], "mb_s": side["mb_per_s"],
               "messages": side["messages"]}
        if lat_doc:
            out["lat"] = {k: lat_doc[k + "_ms"] for k in ("p50", "p99", "p99_9", "max")}
        return out
    log = Path(str(raw) + ".log")
    if not log.exists():
        return None
    text = log.read_text(errors="replace")
    if workload.startswith("consume"):
        found = CONSUME_RE.findall(text)
        if not found:
            return None
        msgs, _bytes, _ms, rate, mb = found[-1]
        out = {"msgs_s": float(rate), "mb_s": float(mb), "messages": int(msgs)}
    else:
        found = PRODUCE_RE.findall(text)
        if not found:
            return None
        _msgs, _bytes, delivered, _ms, rate, mb = found[-1]
        out = {"msgs_s": float(rate), "mb_s": float(mb), "messages": int(delivered)}
    lat_file = Path(str(raw) + ".us")
    if workload.startswith("latency") and lat_file.exists():
        values = [float(v) / 1000.0 for v in lat_file.read_text().split() if v.strip()]
        values = sorted(values[RDKAFKA_WARMUP_MESSAGES:])
        if values:
            out["lat"] = {"p50": percentile(values, 50), "p99": percentile(values, 99),
                          "p99_9": percentile(values, 99.9), "max": values[-1]}
    return out


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main(results):
    results = Path(results)
    rows = []
    for line in (results / "runs.tsv").read_text().splitlines():
        broker, client, workload, run, cpu_s, raw = line.split("\t")
        parsed = parse_run(client, workload, raw)
        rows.append((broker, client, workload, int(run), float(cpu_s), parsed))

    def agg(broker, client, workload):
        picked = [r for r in rows if r[:3] == (broker, client, workload)]
        ok = [r for r in picked if r[5] is not None]
        if not ok:
            return None
        size = SIZES[workload]
        cpu_gb = [r[4] / (r[5]["messages"] * size / 1e9) for r in ok if r[5]["messages"]]
        out = {
            "runs": len(ok), "failed": len(picked) - len(ok),
            "msgs_s": median([r[5]["msgs_s"] for r in ok]),
            "mb_s": median([r[5]["mb_s"] for r in ok]),
            "cpu_gb": median(cpu_gb),
        }
        lats = [r[5]["lat"] for r in ok if "lat" in r[5]]
        if lats:
            out["lat"] = {k: median([l[k] for l in lats]) for k in ("p50", "p99", "p99_9", "max")}
        return out

    print(f"# Strand vs Tansu — {results.name}\n")
    print("## Machine\n")
    print("```")
    print((results / "machine.txt").read_text().strip())
    print("```\n")
    seq = json.loads((results / "fio-seqwrite.json").read_text())["jobs"][0]["write"]
    sync = json.loads((results / "fio-fdatasync.json").read_text())["jobs"][0]["sync"]
    sync_pct = sync["lat_ns"]["percentile"]
    fdatasync_ms = {
        "p50": sync_pct["50.000000"] / 1e6, "p99": sync_pct["99.000000"] / 1e6,
        "p99_9": sync_pct["99.900000"] / 1e6, "max": sync["lat_ns"]["max"] / 1e6,
    }
    # fdatasync measured right before each latency run (the disk is shared).
    near = []
    for f in sorted(results.glob("strand/fio-fdatasync-*.json")):
        job = json.loads(f.read_text())["jobs"][0]["sync"]["lat_ns"]
        near.append((job["percentile"]["50.000000"] / 1e6, job["percentile"]["99.000000"] / 1e6))
    near_p50 = median([p for p, _ in near])
    near_p99 = median([p for _, p in near])
    iperf = json.loads((results / "iperf3.json").read_text())
    gbit = iperf["end"]["sum_received"]["bits_per_second"] / 1e9
    print("| limit | value |\n|---|---|")
    print(f"| fio sequential write, direct I/O, 1 MiB blocks, iodepth 4 | {seq['bw_bytes'] / 1e6:,.0f} MB/s |")
    print(f"| fio 4 KiB direct write + fdatasync, latency p50 / p99 / p99.9 / max | "
          f"{fdatasync_ms['p50']:.3f} / {fdatasync_ms['p99']:.3f} / {fdatasync_ms['p99_9']:.3f} / "
          f"{fdatasync_ms['max']:.3f} ms |")
    if near:
        print(f"| same fdatasync test, 3 s right before each Strand latency run (median p50 / p99) | "
              f"{near_p50:.3f} / {near_p99:.3f} ms |")
    print(f"| iperf3 loopback TCP, one stream | {gbit:,.1f} Gbit/s ({gbit * 1e3 / 8:,.0f} MB/s) |\n")

    print("## Throughput (median of runs; Strand durable with 2 shards, Tansu in memory)\n")
    print("| workload | client | Strand msg/s | Strand MB/s | Tansu msg/s | Tansu MB/s | "
          "Strand/Tansu | Strand CPU s/GB | Tansu CPU s/GB | CPU ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for workload in ("produce-100B", "produce-1KiB", "consume-100B"):
        for client in ("strand-bench", "rdkafka_performance"):
            s = agg("strand", client, workload)
            t = agg("tansu", client, workload)
            summary[(workload, client)] = (s, t)
            sv = lambda d, k: d[k] if d else None
            print(f"| {workload} | {client} | {fmt(sv(s, 'msgs_s'))} | {fmt(sv(s, 'mb_s'), 1)} | "
                  f"{fmt(sv(t, 'msgs_s'))} | {fmt(sv(t, 'mb_s'), 1)} | "
                  f"{fmt(ratio(sv(s, 'msgs_s'), sv(t, 'msgs_s')), 2)}x | "
                  f"{fmt(sv(s, 'cpu_gb'), 2)} | {fmt(sv(t, 'cpu_gb'), 2)} | "
                  f"{fmt(ratio(sv(s, 'cpu_gb'), sv(t, 'cpu_gb')), 2)} |")
    print()

    print("## Latency at 10,000 msg/s (ms, median of runs; 100 B, acks=all, linger 0)\n")
    print("| measure | client | Strand p50 | p99 | p99.9 | max | Tansu p50 | p99 | p99.9 | max |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lat = {}
    for workload, client, name in (("latency-10k", "strand-bench", "ack (intended send → ack)"),
                                   ("latency-10k", "rdkafka_performance", "ack (produce() → delivery report)"),
                                   ("e2e-10k", "strand-bench", "end to end (intended send → consumed)")):
        s = agg("strand", client, workload)
        t = agg("tansu", client, workload)
        lat[(workload, client)] = (s, t)
        cell = lambda d, k: fmt(d["lat"][k], 3) if d and "lat" in d else "–"
        print(f"| {name} | {client} | " + " | ".join(cell(s, k) for k in ("p50", "p99", "p99_9", "max"))
              + " | " + " | ".join(cell(t, k) for k in ("p50", "p99", "p99_9", "max")) + " |")
    print()

    print("## Peak RSS\n")
    print("| broker session | peak RSS |\n|---|---:|")
    rss_file = results / "peak-rss-kib.txt"
    if rss_file.exists():
        for line in rss_file.read_text().splitlines():
            name, kib = line.split()[0], line.split()[1]
            if kib.isdigit():
                print(f"| {name} | {int(kib) / 1024:,.0f} MiB |")
            else:
                print(f"| {name} | {' '.join(line.split()[1:])} |")
    print()

    print("## Strand: 1 shard vs 2 shards (strand-bench, produce 1,000,000 × 100 B, one producer per shard)\n")
    print("| shards | msg/s | msg/s per shard | CPU s/GB |\n|---:|---:|---:|---:|")
    per_shard = {}
    for shards in (1, 2):
        a = agg(f"strand-{shards}shard", "strand-bench", "produce-100B")
        if a:
            per_shard[shards] = a["msgs_s"] / shards
        print(f"| {shards} | {fmt(a and a['msgs_s'])} | {fmt(per_shard.get(shards))} | "
              f"{fmt(a and a['cpu_gb'], 2)} |")
    print()

    print("## Targets\n")
    print("| target | measured | met |\n|---|---|---|")

    def target(name, measured, ok):
        print(f"| {name} | {measured} | {'yes' if ok else ('no' if ok is not None else '–')} |")

    for client in ("strand-bench", "rdkafka_performance"):
        s, t = summary[("produce-100B", client)]
        r = ratio(s and s["msgs_s"], t and t["msgs_s"])
        target(f"produce 100 B msg/s ≥ 1.5× Tansu ({client})", f"{fmt(r, 2)}×", r and r >= 1.5)
    for client in ("strand-bench", "rdkafka_performance"):
        s, t = summary[("produce-1KiB", client)]
        r = ratio(s and s["mb_s"], t and t["mb_s"])
        target(f"produce 1 KiB MB/s ≥ 2× Tansu ({client})", f"{fmt(r, 2)}×", r and r >= 2.0)
    for workload in ("produce-100B", "produce-1KiB"):
        for client in ("strand-bench", "rdkafka_performance"):
            s, t = summary[(workload, client)]
            r = ratio(s and s["cpu_gb"], t and t["cpu_gb"])
            target(f"broker CPU per GB ≤ 1/3 of Tansu's ({workload}, {client})",
                   f"{fmt(r, 2)}× ({fmt(s and s['cpu_gb'], 2)} vs {fmt(t and t['cpu_gb'], 2)} s/GB)",
                   r is not None and r <= 1 / 3)
    limit = 2 * (near_p99 if near else fdatasync_ms["p99"])
    for client in ("strand-bench", "rdkafka_performance"):
        s, _ = lat[("latency-10k", client)]
        p99 = s["lat"]["p99"] if s and "lat" in s else None
        target(f"ack p99 at 10k msg/s ≤ 2 × fdatasync p99 (measured before the runs) = {limit:.3f} ms ({client})",
               f"{fmt(p99, 3)} ms", p99 is not None and p99 <= limit)
    s, _ = lat[("e2e-10k", "strand-bench")]
    p99 = s["lat"]["p99"] if s and "lat" in s else None
    target("end-to-end p99 ≤ 3 ms (strand-bench)", f"{fmt(p99, 3)} ms", p99 is not None and p99 <= 3.0)
    if 1 in per_shard and 2 in per_shard:
        r = per_shard[2] / per_shard[1]
        target("throughput per shard flat from 1 to 2 shards (≥ 0.9×)", f"{r:.2f}×", r >= 0.9)
    print()
    errors = results / "errors.txt"
    if errors.exists():
        print("## Errors\n\n```")
        print(errors.read_text().strip())
        print("```")
    failed = [r for r in rows if r[5] is None]
    if failed:
        print(f"\n{len(failed)} runs produced no result: " +
              ", ".join(f"{r[0]}/{r[1]}/{r[2]}#{r[3]}" for r in failed))


if __name__ == "__main__":
    main(sys.argv[1])
