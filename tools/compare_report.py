#!/usr/bin/env python3
"""Turns a tools/compare.sh results directory into a markdown report (stdout), and a
latency distribution chart (latency.png, if matplotlib is importable).

Reads runs.tsv (one line per client run: broker, client, workload, run, broker CPU
seconds, raw output), the strand-bench JSON, rdkafka_performance output and Kafka
perf-tool output each line points at, params.json, fio and iperf3 JSON, loads.tsv and
peak-rss-kib.txt. One table per workload with every broker in the results as a column
(Strand first, then Kafka, Kafka durable, the others), medians over runs, and the ratios
Strand/Kafka and Strand/best peer; then latency, peak RSS, every run, shards, targets.

Usage: compare_report.py RESULTS_DIR
"""

import json
import re
import statistics
import sys
from pathlib import Path

BROKER_ORDER = ["strand", "strand-deferred", "kafka", "kafka-durable", "tansu", "noida"]
BROKER_NAMES = {"strand": "Strand", "strand-deferred": "Strand deferred sync",
                "kafka": "Kafka", "kafka-durable": "Kafka durable",
                "tansu": "Tansu", "noida": "noida-db"}
CLIENTS = ["strand-bench", "rdkafka_performance", "kafka-perf-test"]
THROUGHPUT_WORKLOADS = ["produce-100B", "produce-1KiB", "consume-100B"]
SIZES = {"produce-100B": 100, "produce-1KiB": 1024, "consume-100B": 100,
         "ack-latency": 100, "e2e-latency": 100}
LAT_KEYS = ("p50", "p99", "p99_9", "max")
LAT_NAMES = {"p50": "p50", "p95": "p95", "p99": "p99", "p99_9": "p99.9", "max": "max"}

PRODUCE_RE = re.compile(
    r"(\d+) messages produced \((\d+) bytes\), (\d+) delivered .*? in (\d+)ms: "
    r"(\d+) msgs/s and ([\d.]+) MB/s")
CONSUME_RE = re.compile(
    r"(\d+) messages \((\d+) bytes\) consumed in (\d+)ms: (\d+) msgs/s \(([\d.]+) MB/s\)")
# ProducerPerformance's summary line (the progress lines have no percentiles).
KAFKA_PRODUCE_RE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")
KAFKA_CONSUME_HEADER = "start.time, end.time, data.consumed.in.MB"


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def rdkafka_latencies(raw, warmup):
    """Sorted per-message latencies (ms) of an rdkafka_performance -l -A run, or []."""
    lat_file = Path(str(raw) + ".us")
    if not lat_file.exists():
        return []
    values = [float(v) / 1000.0 for v in lat_file.read_text().split() if v.strip()]
    return sorted(values[warmup:])


def parse_run(client, workload, raw, params):
    """{'msgs_s', 'mb_s', 'messages', 'lat': {p50,p99,p99_9,max} in ms, ...} or None."""
    raw = Path(raw)
    size = SIZES[workload]
    if client == "strand-bench":
        if not raw.exists():
            return None
        doc = json.loads(raw.read_text())["runs"][0]
        if doc["errors"]:
            return None
        side = doc["consume"] if workload.startswith("consume") else doc["produce"]
        lat_doc = doc["e2e_latency"] if workload.startswith("e2e") else doc["ack_latency"]
        if not side:
            return None
        out = {"msgs_s": side["messages_per_s"], "mb_s": side["mb_per_s"],
               "messages": side["messages"]}
        if lat_doc and workload.endswith("latency"):
            out["lat"] = {k: lat_doc[k + "_ms"] for k in LAT_KEYS}
            out["curve"] = lat_doc.get("distribution") or [
                [q, lat_doc[k + "_ms"]] for q, k in
                ((50, "p50"), (90, "p90"), (99, "p99"), (99.9, "p99_9"), (99.99, "p99_99"),
                 (100, "max"))]
        return out
    log = Path(str(raw) + ".log")
    if not log.exists():
        return None
    text = log.read_text(errors="replace")
    if client == "kafka-perf-test":
        if workload.startswith("consume"):
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if line.startswith(KAFKA_CONSUME_HEADER) and i + 1 < len(lines):
                    names = [c.strip() for c in line.split(",")]
                    values = [c.strip() for c in lines[i + 1].split(",")]
                    if len(values) != len(names):
                        return None
                    row = dict(zip(names, values))
                    msgs = int(row["data.consumed.in.nMsg"])
                    # fetch.* leave out the consumer group join (rebalance.time.ms), as
                    # the other clients, which assign partitions, have none.
                    rate = float(row["fetch.nMsg.sec"])
                    return {"msgs_s": rate, "mb_s": rate * size / 1e6, "messages": msgs,
                            "join_ms": float(row["rebalance.time.ms"]),
                            "overall_msgs_s": float(row["nMsg.sec"])}
            return None
        found = KAFKA_PRODUCE_RE.findall(text)
        if not found:
            return None
        sent, rate, _mib, _avg, mx, p50, p95, p99, p999 = found[-1]
        out = {"msgs_s": float(rate), "mb_s": float(rate) * size / 1e6, "messages": int(sent)}
        if workload.endswith("latency"):
            out["lat"] = {"p50": float(p50), "p95": float(p95), "p99": float(p99),
                          "p99_9": float(p999), "max": float(mx)}
        return out
    # rdkafka_performance
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
    if workload.endswith("latency"):
        values = rdkafka_latencies(raw, rdkafka_warmup(params))
        if values:
            out["lat"] = {"p50": percentile(values, 50), "p99": percentile(values, 99),
                          "p99_9": percentile(values, 99.9), "max": values[-1]}
            out["values"] = values
    return out


def rdkafka_warmup(params):
    # rdkafka_performance starts its clock before it has connected, so the first messages
    # of a latency run wait for the connection: the first 0.5 s of messages are left out
    # of its percentiles (at most a tenth of the run). strand-bench connects before its
    # schedule starts; ProducerPerformance's latencies are from send() to the callback.
    return int(min(params["latency_rate"] * 0.5, params["latency_count"] / 10))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fmt_lat(v, whole_ms=False):
    if v is None:
        return "–"
    if whole_ms:
        # ProducerPerformance reports percentiles in whole milliseconds (truncated).
        return "< 1" if v < 1 else f"{v:,.0f}"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r, who=None):
    if r is None:
        return "–"
    return f"{r:.2f}×" + (f" ({BROKER_NAMES.get(who, who)})" if who else "")


def count_words(n):
    return f"{n:,}"


class Results:
    def __init__(self, path):
        self.path = Path(path)
        self.params = json.loads((self.path / "params.json").read_text())
        self.rows = []
        for line in (self.path / "runs.tsv").read_text().splitlines():
            broker, client, workload, run, cpu_s, raw = line.split("\t")
            parsed = parse_run(client, workload, raw, self.params)
            self.rows.append((broker, client, workload, int(run), float(cpu_s), parsed))
        present = {r[0] for r in self.rows}
        self.brokers = [b for b in BROKER_ORDER if b in present]
        # Strand's other modes are shown, not counted as peers.
        self.peers = [b for b in self.brokers if not b.startswith("strand")]

    def runs_of(self, broker, client, workload):
        return [r for r in self.rows if r[:3] == (broker, client, workload)]

    def agg(self, broker, client, workload):
        picked = self.runs_of(broker, client, workload)
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
            "all_msgs_s": [r[5]["msgs_s"] for r in ok],
        }
        if any("join_ms" in r[5] for r in ok):
            out["join_ms"] = median([r[5].get("join_ms") for r in ok])
            out["overall_msgs_s"] = median([r[5].get("overall_msgs_s") for r in ok])
        lats = [r[5]["lat"] for r in ok if "lat" in r[5]]
        if lats:
            keys = set.intersection(*(set(l) for l in lats))
            out["lat"] = {k: median([l[k] for l in lats]) for k in keys}
        return out


def compare_row(values, higher_is_better):
    """(Strand/Kafka, (Strand/best peer, best peer)) for {broker: value}."""
    s = values.get("strand")
    k = ratio(s, values.get("kafka"))
    peers = {b: v for b, v in values.items() if not b.startswith("strand") and v is not None}
    if not peers:
        return k, (None, None)
    best = (max if higher_is_better else min)(peers, key=peers.get)
    return k, (ratio(s, peers[best]), best)


def table_header(res, first_cols):
    cols = first_cols + [BROKER_NAMES.get(b, b) for b in res.brokers] + \
        ["Strand/Kafka", "Strand/best peer"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(first_cols) + "---:|" * (len(res.brokers) + 2))


def throughput_section(res):
    p = res.params
    titles = {
        "produce-100B": f"Produce {count_words(p['produce_100b'])} × 100 B "
                        "(acks=all, linger 5 ms, 1 MB batches, 2 partitions)",
        "produce-1KiB": f"Produce {count_words(p['produce_1kib'])} × 1 KiB "
                        "(acks=all, linger 5 ms, 1 MB batches, 2 partitions)",
        "consume-100B": f"Consume {count_words(p['consume_100b'])} × 100 B "
                        "(from the beginning, 2 partitions)",
    }
    summary = {}
    notes = []
    for workload in THROUGHPUT_WORKLOADS:
        print(f"### {titles[workload]}\n")
        table_header(res, ["client", "measure"])
        for client in CLIENTS:
            aggs = {b: res.agg(b, client, workload) for b in res.brokers}
            if not any(aggs.values()):
                continue
            summary[(workload, client)] = aggs
            for key, name, digits, higher in (("msgs_s", "msg/s", 0, True),
                                              ("mb_s", "MB/s", 1, True),
                                              ("cpu_gb", "broker CPU s/GB", 2, False)):
                values = {b: (a[key] if a else None) for b, a in aggs.items()}
                k, (best, who) = compare_row(values, higher)
                cells = [fmt(values[b], digits) for b in res.brokers]
                print(f"| {client} | {name} | " + " | ".join(cells) +
                      f" | {fmt_ratio(k)} | {fmt_ratio(best, who)} |")
            joins = {b: a.get("join_ms") for b, a in aggs.items() if a and "join_ms" in a}
            if joins:
                notes.append(
                    f"{workload}, {client}: msg/s is ConsumerPerformance's fetch rate, without "
                    "the consumer-group join (median join: " +
                    ", ".join(f"{BROKER_NAMES.get(b, b)} {fmt(v)} ms" for b, v in joins.items()) +
                    "; overall rate with the join: " +
                    ", ".join(f"{BROKER_NAMES.get(b, b)} {fmt(a.get('overall_msgs_s'))}"
                              for b, a in aggs.items() if a and "overall_msgs_s" in a) + ").")
        print()
    if notes:
        for note in notes:
            print(f"- {note}")
        print()
    return summary


def latency_section(res):
    p = res.params
    rate = count_words(p["latency_rate"])
    print(f"### Ack latency at {rate} msg/s (ms; {count_words(p['latency_count'])} × 100 B, "
          "acks=all, linger 0, 1 partition)\n")
    table_header(res, ["client", "percentile"])
    lat = {}
    for client in CLIENTS:
        aggs = {b: res.agg(b, client, "ack-latency") for b in res.brokers}
        if not any(a and "lat" in a for a in aggs.values()):
            continue
        lat[("ack-latency", client)] = aggs
        keys = ("p50", "p95", "p99", "p99_9", "max") if client == "kafka-perf-test" else LAT_KEYS
        for key in keys:
            values = {b: (a["lat"].get(key) if a and "lat" in a else None) for b, a in aggs.items()}
            k, (best, who) = compare_row(values, False)
            whole = client == "kafka-perf-test" and key != "max"
            print(f"| {client} | {LAT_NAMES[key]} | " +
                  " | ".join(fmt_lat(values[b], whole) for b in res.brokers) +
                  f" | {fmt_ratio(k)} | {fmt_ratio(best, who)} |")
    print()
    print(f"### End-to-end latency at {rate} msg/s (ms; intended send → consumed, strand-bench)\n")
    table_header(res, ["client", "percentile"])
    aggs = {b: res.agg(b, "strand-bench", "e2e-latency") for b in res.brokers}
    lat[("e2e-latency", "strand-bench")] = aggs
    for key in LAT_KEYS:
        values = {b: (a["lat"].get(key) if a and "lat" in a else None) for b, a in aggs.items()}
        k, (best, who) = compare_row(values, False)
        print(f"| strand-bench | {LAT_NAMES[key]} | " +
              " | ".join(fmt_lat(values[b]) for b in res.brokers) +
              f" | {fmt_ratio(k)} | {fmt_ratio(best, who)} |")
    print()
    print("Every client has at most 5 produce requests in flight per connection. "
          "strand-bench measures from each message's *intended* send time on an open-loop "
          "schedule; rdkafka_performance from `produce()` to the delivery report (its first "
          f"{rdkafka_warmup(p):,} messages left out: its clock starts before it connects); "
          "ProducerPerformance from `send()` to the callback, in whole milliseconds (truncated: "
          "`< 1` is 0 ms, and ratios with it are left out).\n")
    return lat


def rss_section(res):
    print("### Peak RSS (VmHWM of the broker process before it was stopped)\n")
    rss_file = res.path / "peak-rss-kib.txt"
    if not rss_file.exists():
        print("(none recorded)\n")
        return {}
    per = {}
    died = []
    for line in rss_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            per.setdefault(parts[0], []).append((parts[1], int(parts[2]) / 1024))
        elif parts:
            died.append(line)
    print("| broker | sessions | peak RSS, largest | peak RSS, median |\n|---|---:|---:|---:|")
    order = [b for b in BROKER_ORDER if b in per] + [b for b in per if b not in BROKER_ORDER]
    out = {}
    for b in order:
        mib = [v for _, v in per[b]]
        out[b] = max(mib)
        print(f"| {BROKER_NAMES.get(b, b)} | {len(mib)} | {max(mib):,.0f} MiB | "
              f"{statistics.median(mib):,.0f} MiB |")
    for line in died:
        print(f"| {line} | | | |")
    print()
    return out


def every_run_section(res):
    print("### Every run (msg/s; the tables above quote the median)\n")
    runs = sorted({r[3] for r in res.rows if r[0] in res.brokers})
    print("| workload | client | broker | " + " | ".join(f"run {n}" for n in runs) +
          " | spread (max/min) |")
    print("|---|---|---|" + "---:|" * (len(runs) + 1))
    for workload in THROUGHPUT_WORKLOADS:
        for client in CLIENTS:
            for b in res.brokers:
                picked = {r[3]: r[5] for r in res.runs_of(b, client, workload)}
                if not picked:
                    continue
                vals = [picked.get(n)["msgs_s"] if picked.get(n) else None for n in runs]
                ok = [v for v in vals if v]
                spread = f"{max(ok) / min(ok):.2f}" if len(ok) > 1 else "–"
                print(f"| {workload} | {client} | {BROKER_NAMES.get(b, b)} | " +
                      " | ".join(fmt(v) if v else "failed" for v in vals) + f" | {spread} |")
    print()


def chart(res, lat_out):
    """latency.png: latency by percentile, Strand vs Kafka (and Kafka durable), for the
    run with the median p99 of each broker. Returns the file name or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FuncFormatter
    except ImportError:
        return None
    import math

    def nines(q):
        return -math.log10(max(1.0 - q / 100.0, 1e-6))

    def median_run(broker, client, workload):
        ok = [r[5] for r in res.runs_of(broker, client, workload) if r[5] and "lat" in r[5]]
        if not ok:
            return None
        ok.sort(key=lambda d: d["lat"]["p99"])
        return ok[(len(ok) - 1) // 2]

    panels = [("ack-latency", "strand-bench", "ack latency, strand-bench (open loop)"),
              ("e2e-latency", "strand-bench", "end-to-end latency, strand-bench"),
              ("ack-latency", "rdkafka_performance", "ack latency, rdkafka_performance")]
    shown = [b for b in ("strand", "kafka", "kafka-durable") if b in res.brokers]
    if "strand" not in shown or len(shown) < 2:
        return None
    colors = {"strand": "#1f77b4", "kafka": "#d62728", "kafka-durable": "#ff7f0e"}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4))
    any_line = False
    for ax, (workload, client, title) in zip(axes, panels):
        x_max = 1.0
        for b in shown:
            run = median_run(b, client, workload)
            if not run:
                continue
            if "curve" in run:
                pts = [(q, ms) for q, ms in run["curve"] if q > 0]
            elif "values" in run:
                vals = run["values"]
                top = min(6.0, math.log10(len(vals)))
                pts = [(100 * (1 - 10 ** (-top * i / 120)), percentile(vals, 100 * (1 - 10 ** (-top * i / 120))))
                       for i in range(1, 120)] + [(100.0, vals[-1])]
            else:
                continue
            # The last point is the maximum (100%): draw it at the largest percentile the
            # sample resolves, not at the axis' end.
            xs = [nines(q) for q, _ in pts if q < 100]
            xs += [xs[-1] if xs else 0.0] * (len(pts) - len(xs))
            ys = [max(ms, 1e-3) for _, ms in pts]
            x_max = max(x_max, max(xs))
            ax.plot(xs, ys, label=BROKER_NAMES[b], color=colors[b], linewidth=1.8)
            any_line = True
        ax.set_yscale("log")
        ticks = list(range(0, int(math.ceil(x_max)) + 1))
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda x, _: "0%" if x == 0 else f"{100 - 100 * 10.0 ** (-x):g}%"))
        ax.set_xlabel("percentile")
        ax.set_ylabel("ms (log scale)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", color="#ddd", linewidth=0.6)
        ax.legend(fontsize=9)
    if not any_line:
        plt.close(fig)
        return None
    p = res.params
    fig.suptitle(f"Latency by percentile at {p['latency_rate']:,} msg/s, 100 B, acks=all "
                 "(run with the median p99 of each broker)", fontsize=11)
    fig.tight_layout()
    name = "latency.png"
    fig.savefig(res.path / name, dpi=110)
    plt.close(fig)
    return name


def machine_section(res):
    results = res.path
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
        print(f"| same fdatasync test right before each Strand latency run (median p50 / p99) | "
              f"{near_p50:.3f} / {near_p99:.3f} ms |")
    print(f"| iperf3 loopback TCP, one stream | {gbit:,.1f} Gbit/s ({gbit * 1e3 / 8:,.0f} MB/s) |\n")
    loads = results / "loads.tsv"
    if loads.exists():
        print("Load average (1 min) when each broker session started and ended:\n")
        print("| run | " + " | ".join(BROKER_NAMES.get(b, b) for b in res.brokers) + " |")
        print("|---:|" + "---|" * len(res.brokers))
        table = {}
        for line in loads.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                table[(parts[0], parts[1])] = parts[2] + (f" → {parts[3]}" if len(parts) > 3 else "")
        for n in sorted({k[1] for k in table}, key=int):
            print(f"| {n} | " + " | ".join(table.get((b, n), "–") for b in res.brokers) + " |")
        print()
    skipped = results / "skipped.txt"
    if skipped.exists():
        print("Skipped:\n\n```\n" + skipped.read_text().strip() + "\n```\n")
    return fdatasync_ms, (near_p99 if near else None)


def main(path):
    res = Results(path)
    p = res.params
    print(f"# Strand vs {', '.join(BROKER_NAMES.get(b, b) for b in res.peers) or '(no peer)'}"
          f" — {res.path.name}\n")
    print(f"{p['runs']} run(s) of each workload{' (QUICK smoke run)' if p.get('quick') else ''}; "
          "tables quote medians. Strand: 2 shards, acks after fdatasync. Kafka 4.1.1: default "
          "configuration, acks from the page cache. Kafka durable: log.flush.interval.messages=1, "
          "every batch fsynced before the ack. Tansu: in memory. noida-db: in memory, a JSON "
          "snapshot written after the ack, never fsynced. *Strand/best peer* divides by the "
          "best other broker in the row (highest throughput, lowest CPU or latency), named in "
          "brackets.\n")
    fdatasync_ms, near_p99 = machine_section(res)
    print("## Throughput\n")
    summary = throughput_section(res)
    print("## Latency\n")
    lat = latency_section(res)
    png = chart(res, lat)
    if png:
        print(f"![latency by percentile]({png})\n")
    print("## Memory\n")
    rss_section(res)
    every_run_section(res)

    print("## Strand: 1 shard vs 2 shards (strand-bench, produce "
          f"{count_words(p['scale_count'])} × 100 B, one producer per shard)\n")
    print("| shards | msg/s | msg/s per shard | CPU s/GB |\n|---:|---:|---:|---:|")
    per_shard = {}
    for shards in (1, 2):
        a = res.agg(f"strand-{shards}shard", "strand-bench", "produce-100B")
        if a:
            per_shard[shards] = a["msgs_s"] / shards
        print(f"| {shards} | {fmt(a and a['msgs_s'])} | {fmt(per_shard.get(shards))} | "
              f"{fmt(a and a['cpu_gb'], 2)} |")
    print()

    compare_txt = res.path / "compare-e2e.txt"
    if compare_txt.exists() and compare_txt.read_text().strip():
        print("## Side by side (one strand-bench e2e run against both brokers at once)\n")
        print("```\n" + compare_txt.read_text().strip() + "\n```\n")

    print("## Targets\n")
    print("| target | measured | met |\n|---|---|---|")

    def target(name, measured, ok):
        print(f"| {name} | {measured} | {'yes' if ok else ('no' if ok is not None else '–')} |")

    def pair(workload, client, peer):
        aggs = summary.get((workload, client), {})
        return aggs.get("strand"), aggs.get(peer)

    if "tansu" in res.brokers:
        for client in ("strand-bench", "rdkafka_performance"):
            s, t = pair("produce-100B", client, "tansu")
            r = ratio(s and s["msgs_s"], t and t["msgs_s"])
            target(f"produce 100 B msg/s ≥ 1.5× Tansu ({client})", fmt_ratio(r), r and r >= 1.5)
        for client in ("strand-bench", "rdkafka_performance"):
            s, t = pair("produce-1KiB", client, "tansu")
            r = ratio(s and s["mb_s"], t and t["mb_s"])
            target(f"produce 1 KiB MB/s ≥ 2× Tansu ({client})", fmt_ratio(r), r and r >= 2.0)
        for workload in ("produce-100B", "produce-1KiB"):
            for client in ("strand-bench", "rdkafka_performance"):
                s, t = pair(workload, client, "tansu")
                r = ratio(s and s["cpu_gb"], t and t["cpu_gb"])
                target(f"broker CPU per GB ≤ 1/3 of Tansu's ({workload}, {client})",
                       f"{fmt_ratio(r)} ({fmt(s and s['cpu_gb'], 2)} vs {fmt(t and t['cpu_gb'], 2)} s/GB)",
                       r is not None and r <= 1 / 3)
    limit = 2 * (near_p99 if near_p99 is not None else fdatasync_ms["p99"])
    for client in ("strand-bench", "rdkafka_performance"):
        s = lat.get(("ack-latency", client), {}).get("strand")
        p99 = s["lat"]["p99"] if s and "lat" in s else None
        target(f"ack p99 ≤ 2 × fdatasync p99 (measured before the runs) = {limit:.3f} ms ({client})",
               f"{fmt(p99, 3)} ms", p99 is not None and p99 <= limit)
    s = lat.get(("e2e-latency", "strand-bench"), {}).get("strand")
    p99 = s["lat"]["p99"] if s and "lat" in s else None
    target("end-to-end p99 ≤ 3 ms (strand-bench)", f"{fmt(p99, 3)} ms", p99 is not None and p99 <= 3.0)
    if 1 in per_shard and 2 in per_shard:
        r = per_shard[2] / per_shard[1]
        target("throughput per shard flat from 1 to 2 shards (≥ 0.9×)", f"{r:.2f}×", r >= 0.9)
    print()
    errors = res.path / "errors.txt"
    if errors.exists():
        print("## Errors\n\n```")
        print(errors.read_text().strip())
        print("```")
    failed = [r for r in res.rows if r[5] is None]
    if failed:
        print(f"\n{len(failed)} runs produced no result: " +
              ", ".join(f"{r[0]}/{r[1]}/{r[2]}#{r[3]}" for r in failed))


if __name__ == "__main__":
    main(sys.argv[1])
