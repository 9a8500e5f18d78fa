#!/usr/bin/env python3
"""acks=all produce throughput and latency of Strand alone and as a 3-node cluster, on this
machine, in one run, with the same client and the same settings.

Three setups, each on freshly started brokers with empty data directories:

  single  one node, no --peers (single-node mode)
  rf1     three nodes (--node-id/--rpc-listen/--peers), topics with replication factor 1
  rf3     the same three nodes, topics with replication factor 3 (every batch fdatasync'd
          on a majority of the replicas before the ack: Raft per partition)

Every setup runs the workloads of tools/compare.sh with its load generator, strand-bench
(target/release/strand-bench):

  warm-up       produce -s 100 -c WARMUP --acks -1 --linger-ms 5               (not measured)
  produce-100B  produce -s 100 -c N100 --acks -1 --linger-ms 5 --batch-bytes 1000000
  produce-1KiB  produce -s 1024 -c N1K --acks -1 --linger-ms 5 --batch-bytes 1000000
  ack-latency   produce -s 100 -r RATE -c COUNT --acks -1 --linger-ms 0  (1-partition topic)

Runs are interleaved (repetition 1 of every setup, then repetition 2, ...), the order of the
setups rotated from one repetition to the next, so a busy spell of the shared machine lands
on every setup alike; the report gives medians over the repetitions and the ratios of the
medians. The topics are created by this script (CreateTopics v2 with the setup's
replication factor; strand-bench would create them with replication factor 1), and the
script waits for every partition to have a leader and a full ISR on every node's Metadata
before the client starts.

Around every client run the script samples each node's CPU seconds (utime + stime from
/proc/PID/stat), the client's (rusage), the machine's busy share (/proc/stat), the CPU
every other process used meanwhile (kernel threads and interrupts, which partly work for
the run, apart from other processes, which are other work on the machine), and each
node's Prometheus counters (--metrics-listen): the broker's own produce-request time and
its flush jobs (direct-I/O write + fdatasync) and their size. Right before each latency run
fio measures 4 KiB write + fdatasync latency for 3 s (if fio is installed), as compare.sh
does, because the disk is shared.

CPU placement: a broker pins shard k to entry k of the CPUs it may use, so three 1-shard
nodes started plainly would all pin their only shard to CPU 0. By default (--placement
spread) node i is started under `taskset -c` with CPU (i - 1) mod nproc, i.e. nodes 1 and 3
on CPU 0, node 2 on CPU 1 on a 2-core machine; the single node gets CPU 0. --placement
inherit leaves the affinity alone (every node pins to the first allowed CPU). The client is
never pinned. On this kind of machine (2 cores) three brokers plus the client are
oversubscribed: the report says so.

Ports: a free block below 32768 (or --base-port): node i serves clients on BASE + 20 (i-1)
(+ k for shard k), peers on that + 10 (+ k), metrics on that + 19. Data directories live in
a temporary directory (--scratch, default $TMPDIR) removed at the end; every process the
script started is stopped when it exits (also on SIGINT/SIGTERM). Results: RESULTS
(default .bench/cluster/<time>/): report.md (what is printed), results.json, every
strand-bench JSON and output, every node's log, leaders.json (placement of each topic's
partitions) and metrics.json (per-run broker counters).

Usage:
  tools/cluster_bench.py [--runs 3] [--shards 1] [--quick] [--setups single,rf1,rf3]
                         [--produce-100b 5000000] [--produce-1kib 1000000]
                         [--latency-rate 10000] [--latency-count 100000] [--warmup 1000000]
                         [--partitions 3] [--placement spread|inherit] [--bin-dir DIR]
                         [--results DIR] [--scratch DIR] [--base-port P] [--run-timeout 300]

Builds nothing: takes strand and strand-bench from --bin-dir (default target/release of
this checkout; build them with `cargo build --release`). Needs python3 (standard library
only), taskset (util-linux) for --placement spread, and optionally fio.
"""

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SETUPS = {
    "single": {"nodes": 1, "cluster": False, "rf": 1, "name": "1 node"},
    "rf1": {"nodes": 3, "cluster": True, "rf": 1, "name": "3 nodes, rf=1"},
    "rf3": {"nodes": 3, "cluster": True, "rf": 3, "name": "3 nodes, rf=3"},
}
WORKLOADS = ["produce-100B", "produce-1KiB", "ack-latency"]
NODE_STRIDE = 20
RPC_OFFSET = 10
METRICS_OFFSET = 19
PORT_RANGE = (20000, 32000)
NODE_ID_STRIDE = 1024  # Kafka broker id of node N shard k: N * 1024 + k
FORM_TIMEOUT_S = 60
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30

NOT_CONTROLLER = 41
REQUEST_TIMED_OUT = 7
TOPIC_ALREADY_EXISTS = 36


# ---------------------------------------------------------------- Kafka protocol, raw

def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _recv(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the broker")
        out += chunk
    return bytes(out)


def _read_string(buf, at):
    n = struct.unpack_from(">h", buf, at)[0]
    at += 2
    if n < 0:
        return None, at
    return buf[at:at + n].decode(), at + n


def call(port, api_key, version, body, timeout=10):
    """One request (header v1) to 127.0.0.1:port on a new connection: the response body."""
    msg = struct.pack(">hhi", api_key, version, 7) + _string("cluster-bench") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", _recv(sock, 4))[0]
        response = _recv(sock, size)
    if struct.unpack(">i", response[:4])[0] != 7:
        raise ConnectionError("correlation id mismatch")
    return response[4:]


def metadata(port, timeout=5):
    """Metadata v1, all topics: (brokers {id: port}, controller_id,
    topics {name: (error, {partition: (error, leader, replicas, isr)})})."""
    response = call(port, 3, 1, struct.pack(">i", -1), timeout)
    count = struct.unpack_from(">i", response, 0)[0]
    at = 4
    brokers = {}
    for _ in range(count):
        node_id = struct.unpack_from(">i", response, at)[0]
        _host, at = _read_string(response, at + 4)
        broker_port = struct.unpack_from(">i", response, at)[0]
        _rack, at = _read_string(response, at + 4)
        brokers[node_id] = broker_port
    controller_id, count = struct.unpack_from(">ii", response, at)
    at += 8
    topics = {}
    for _ in range(count):
        error_code = struct.unpack_from(">h", response, at)[0]
        name, at = _read_string(response, at + 2)
        at += 1  # is_internal
        partitions = {}
        n_partitions = struct.unpack_from(">i", response, at)[0]
        at += 4
        for _ in range(n_partitions):
            p_error, index, leader = struct.unpack_from(">hii", response, at)
            at += 10
            lists = []
            for _ in range(2):  # replicas, isr
                n = struct.unpack_from(">i", response, at)[0]
                lists.append(list(struct.unpack_from(f">{n}i", response, at + 4)))
                at += 4 + 4 * n
            partitions[index] = (p_error, leader, lists[0], lists[1])
        topics[name] = (error_code, partitions)
    return brokers, controller_id, topics


def create_topic(port, name, partitions, replication_factor, timeout_ms=15_000):
    """CreateTopics v2 for one topic: (error code, message)."""
    body = (struct.pack(">i", 1) + _string(name)
            + struct.pack(">ihii", partitions, replication_factor, 0, 0)
            + struct.pack(">ib", timeout_ms, 0))
    response = call(port, 19, 2, body, timeout=timeout_ms / 1000 + 15)
    got, at = _read_string(response, 8)
    if got != name:
        raise ConnectionError(f"CreateTopics answered for {got!r}, not {name!r}")
    error_code = struct.unpack_from(">h", response, at)[0]
    message, _ = _read_string(response, at + 2)
    return error_code, message


# ---------------------------------------------------------------- processes

class Procs:
    """Every process this script started, stopped on exit (by pid, never by name)."""

    def __init__(self):
        self.live = []

    def add(self, proc):
        self.live.append(proc)
        return proc

    def stop(self, proc, timeout=STOP_TIMEOUT_S):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.live:
            self.live.remove(proc)
        return proc.returncode

    def stop_all(self):
        for proc in list(self.live):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.live.clear()


PROCS = Procs()


def on_signal(signum, _frame):
    raise SystemExit(f"stopped by signal {signum}")


def cpu_seconds(pid):
    """utime + stime of a process so far (all its threads), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks():
    """(busy, total, steal, irq + softirq) jiffies of all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    steal = values[7] if len(values) > 7 else 0
    return total - idle, total, steal, values[5] + values[6]


def processes_cpu():
    """{pid: (CPU seconds so far, is a kernel thread, name)} of every process. ksoftirqd is left
    out: the kernel books its time as softirq in /proc/stat too, which machine_ticks
    already counts."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm, rest = text.split("(", 1)[1].rsplit(")", 1)
        if comm.startswith("ksoftirqd/"):
            continue
        fields = rest.split()
        pid = int(entry.name)
        out[pid] = ((int(fields[11]) + int(fields[12])) / hz, pid == 2 or fields[1] == "2", comm)
    return out


def free_base_port(span):
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(500):
        base = rng.randrange(PORT_RANGE[0], PORT_RANGE[1] - span)
        sockets = []
        try:
            for k in range(span):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports below 32768")


def scrape(port):
    """The node's Prometheus counters this script uses, summed over its shards:
    {produce_count, produce_sum_s, flush_count, flush_sum_s, flush_bytes}."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.settimeout(5)
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = bytearray()
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    wanted = {
        "strand_produce_latency_seconds_count": "produce_count",
        "strand_produce_latency_seconds_sum": "produce_sum_s",
        "strand_flush_latency_seconds_count": "flush_count",
        "strand_flush_latency_seconds_sum": "flush_sum_s",
        "strand_flush_bytes_sum": "flush_bytes",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        if name in wanted:
            out[wanted[name]] += float(value)
    return out


# ---------------------------------------------------------------- one setup

class Node:
    def __init__(self, bench, setup, node_id, data_dir, log_path):
        self.bench = bench
        self.node_id = node_id
        self.port = bench.base_port + NODE_STRIDE * (node_id - 1)
        self.rpc_port = self.port + RPC_OFFSET
        self.metrics_port = self.port + METRICS_OFFSET
        self.data_dir = data_dir
        self.log_path = log_path
        self.setup = setup
        self.proc = None
        self.cpu = None

    def command(self, peers):
        cmd = [str(self.bench.strand), "serve", "--data-dir", str(self.data_dir),
               "--listen", f"127.0.0.1:{self.port}", "--shards", str(self.bench.args.shards),
               "--log-level", self.bench.args.log_level,
               "--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        if self.setup["cluster"]:
            cmd += ["--node-id", str(self.node_id), "--rpc-listen", f"127.0.0.1:{self.rpc_port}",
                    "--peers", peers]
        if self.bench.args.placement == "spread":
            self.cpu = self.bench.cpus[(self.node_id - 1) % len(self.bench.cpus)]
            cmd = ["taskset", "-c", str(self.cpu)] + cmd
        return cmd

    def start(self, peers):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = PROCS.add(subprocess.Popen(
            self.command(peers), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
        log.close()

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Bench:
    def __init__(self, args):
        self.args = args
        bin_dir = Path(args.bin_dir) if args.bin_dir else ROOT / "target" / "release"
        self.strand = bin_dir / "strand"
        self.sbench = bin_dir / "strand-bench"
        for b in (self.strand, self.sbench):
            if not os.access(b, os.X_OK):
                raise SystemExit(f"{b} is not an executable: run `cargo build --release` first")
        self.cpus = sorted(os.sched_getaffinity(0))
        span = NODE_STRIDE * 3
        self.base_port = args.base_port or free_base_port(span)
        if self.base_port + span > 32768:
            raise SystemExit("--base-port: the ports must stay below 32768")
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.results = Path(args.results) if args.results else ROOT / ".bench" / "cluster" / stamp
        self.results.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="strand-cluster-bench-", dir=args.scratch))
        self.records = []  # one dict per client run
        self.leaders = []
        self.problems = []
        self.report_lines = []

    def say(self, text=""):
        print(text, flush=True)
        with open(self.results / "progress.log", "a") as f:
            f.write(text + "\n")

    def problem(self, text):
        self.problems.append(text)
        self.say(f"PROBLEM: {text}")

    # -------------------------------------------------------------- cluster life

    def make_nodes(self, key, rep):
        setup = SETUPS[key]
        base = self.scratch / f"{key}-{rep}"
        return [Node(self, setup, i, base / f"node{i}", self.results / f"{key}-{rep}-node{i}.log")
                for i in range(1, setup["nodes"] + 1)]

    def start_setup(self, key, nodes):
        """Starts the nodes; returns once every node lists every node's shards as brokers
        and names a controller."""
        setup = SETUPS[key]
        peers = ",".join(f"{n.node_id}@127.0.0.1:{n.rpc_port}" for n in nodes)
        for n in nodes:
            n.start(peers)
        deadline = time.time() + READY_TIMEOUT_S
        for n in nodes:
            while "ready" not in n.log():
                if not n.alive():
                    raise RuntimeError(f"node {n.node_id} exited with {n.proc.returncode}; "
                                       f"see {n.log_path}")
                if time.time() > deadline:
                    raise RuntimeError(f"node {n.node_id} not ready after {READY_TIMEOUT_S}s")
                time.sleep(0.1)
        # Every node lists every node's shards as brokers and names a controller.
        want = {self.broker_id(setup, n.node_id, k) for n in nodes
                for k in range(self.args.shards)}
        deadline = time.time() + FORM_TIMEOUT_S
        while True:
            why = None
            for n in nodes:
                try:
                    brokers, controller, _ = metadata(n.port)
                except (OSError, struct.error) as e:
                    why = f"node {n.node_id}: {e}"
                    break
                if set(brokers) != want or controller < 0:
                    why = f"node {n.node_id}: brokers {sorted(brokers)}, controller {controller}"
                    break
            if why is None:
                break
            if time.time() > deadline:
                raise RuntimeError(f"cluster not formed after {FORM_TIMEOUT_S}s: {why}")
            time.sleep(0.2)

    def broker_id(self, setup, node_id, shard):
        return node_id * NODE_ID_STRIDE + shard if setup["cluster"] else shard

    def stop_setup(self, key, rep, nodes):
        for n in nodes:
            if not n.alive():
                self.problem(f"{key} run {rep}: node {n.node_id} died (exit {n.proc.returncode}); "
                             f"log {n.log_path}")
        for n in nodes:
            if n.proc is not None:
                code = PROCS.stop(n.proc)
                if code not in (0, None, -signal.SIGTERM):
                    self.problem(f"{key} run {rep}: node {n.node_id} exited with {code} on SIGTERM")
        for n in nodes:
            log = n.log()
            for needle in ("panicked", " ERROR "):
                if needle in log:
                    self.problem(f"{key} run {rep}: node {n.node_id} logged {needle.strip()!r} "
                                 f"(see {n.log_path})")
        shutil.rmtree(self.scratch / f"{key}-{rep}", ignore_errors=True)

    def create_topics(self, key, rep, nodes, topics):
        setup = SETUPS[key]
        port = nodes[0].port
        for name, partitions in topics:
            deadline = time.time() + FORM_TIMEOUT_S
            while True:
                try:
                    code, message = create_topic(port, name, partitions, setup["rf"])
                except (OSError, struct.error) as e:
                    code, message = -1, str(e)
                if code in (0, TOPIC_ALREADY_EXISTS):
                    break
                if code not in (NOT_CONTROLLER, REQUEST_TIMED_OUT, -1) or time.time() > deadline:
                    raise RuntimeError(f"CreateTopics {name} (rf {setup['rf']}): error {code} "
                                       f"{message}")
                time.sleep(0.5)
        # Every node's Metadata: each partition has a leader and as ISR all its replicas.
        deadline = time.time() + FORM_TIMEOUT_S
        while True:
            why = None
            view = None
            for n in nodes:
                try:
                    _, _, md = metadata(n.port)
                except (OSError, struct.error) as e:
                    why = f"node {n.node_id}: {e}"
                    break
                for name, partitions in topics:
                    error, parts = md.get(name, (-1, {}))
                    if error != 0 or len(parts) != partitions:
                        why = f"node {n.node_id}: topic {name} error {error}, {len(parts)} partitions"
                        break
                    for index, (p_error, leader, replicas, isr) in parts.items():
                        if (p_error != 0 or leader < 0 or len(replicas) != setup["rf"]
                                or sorted(isr) != sorted(replicas)):
                            why = (f"node {n.node_id}: {name}/{index} error {p_error} leader {leader} "
                                   f"replicas {replicas} isr {isr}")
                            break
                    if why:
                        break
                if why:
                    break
                if view is None:
                    view = md
            if why is None:
                break
            if time.time() > deadline:
                raise RuntimeError(f"topics not ready after {FORM_TIMEOUT_S}s: {why}")
            time.sleep(0.2)
        return {name: {str(i): {"leader": p[1], "replicas": p[2]}
                       for i, p in sorted(view[name][1].items())}
                for name, _ in topics}

    def topic_leaders(self, nodes, topic):
        """Leader broker id of each partition of `topic`, as node 1 sees it now."""
        try:
            _, _, md = metadata(nodes[0].port)
        except (OSError, struct.error):
            return None
        return {str(i): p[1] for i, p in sorted(md.get(topic, (0, {}))[1].items())}

    # -------------------------------------------------------------- client runs

    def sb(self, nodes, args, out_base, timeout):
        cmd = [str(self.sbench), *args, "-b", f"127.0.0.1:{nodes[0].port}", "-q"]
        with open(f"{out_base}.log", "wb") as log:
            proc = PROCS.add(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            self.client_pid = proc.pid
            window_start = time.monotonic()
            timed_out = False
            deadline = time.time() + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.time() > deadline and not timed_out:
                    timed_out = True
                    proc.kill()
                time.sleep(0.05)
            self.client_window = (window_start, time.monotonic())
            proc.returncode = os.waitstatus_to_exitcode(status)
            PROCS.live.remove(proc)
        return proc.returncode, timed_out, usage.ru_utime + usage.ru_stime, cmd

    def run(self, key, rep, nodes, workload, args):
        """One measured client run with the samples around it."""
        out_base = self.results / f"{key}-{rep}-{workload}"
        json_path = Path(f"{out_base}.json")
        before_cpu = {n.node_id: cpu_seconds(n.proc.pid) for n in nodes}
        before_m = {n.node_id: scrape(n.metrics_port) for n in nodes}
        tracer = self.start_trace(key, rep, workload) if self.args.trace else None
        before_p = processes_cpu()
        before_t = machine_ticks()
        started = time.time()
        code, timed_out, client_cpu, cmd = self.sb(
            nodes, [*args, "--json", str(json_path)], out_base, self.args.run_timeout)
        wall = time.time() - started
        after_t = machine_ticks()
        after_p = processes_cpu()
        trace = self.end_trace(tracer, nodes, self.client_window) if tracer else None
        after_cpu = {n.node_id: cpu_seconds(n.proc.pid) for n in nodes}
        after_m = {n.node_id: scrape(n.metrics_port) for n in nodes}
        rec = {"setup": key, "run": rep, "workload": workload, "command": cmd,
               "exit": code, "timed_out": timed_out, "wall_s": wall, "client_cpu_s": client_cpu,
               "node_cpu_s": {}, "node_metrics": {}, "ok": False, "trace": trace}
        for n in nodes:
            b, a = before_cpu[n.node_id], after_cpu[n.node_id]
            rec["node_cpu_s"][n.node_id] = None if a is None or b is None else a - b
            mb, ma = before_m[n.node_id], after_m[n.node_id]
            if mb is not None and ma is not None:
                rec["node_metrics"][n.node_id] = {k: ma[k] - mb[k] for k in ma}
        busy = after_t[0] - before_t[0]
        total = after_t[1] - before_t[1]
        rec["machine_busy"] = busy / total if total else None
        # CPU used meanwhile by other processes (other work on the machine; perf with
        # --trace) and by the kernel's threads and interrupts (journal commits, block I/O
        # completion, loopback TCP: partly on behalf of this run). A process that ended
        # during the run is missed.
        ours = {n.proc.pid for n in nodes} | {self.client_pid, os.getpid()}
        others = kernel = 0.0
        by_name = {}
        for pid, (cpu, kthread, comm) in after_p.items():
            if pid in ours:
                continue
            used = cpu - before_p.get(pid, (0.0,))[0]
            if kthread:
                kernel += used
            else:
                others += used
                by_name[comm] = by_name.get(comm, 0.0) + used
        irq_s = (after_t[3] - before_t[3]) / os.sysconf("SC_CLK_TCK")
        rec["others_cores"] = others / wall if wall else None
        rec["kernel_cores"] = (kernel + irq_s) / wall if wall else None
        # Which other processes, by name: the three busiest above 0.02 cores.
        rec["others_top"] = [[comm, used / wall] for comm, used in
                             sorted(by_name.items(), key=lambda kv: -kv[1])[:3]
                             if wall and used / wall >= 0.02]
        rec["machine_steal"] = (after_t[2] - before_t[2]) / total if total else None
        rec["load1"] = os.getloadavg()[0]
        doc = None
        if json_path.exists():
            try:
                doc = json.loads(json_path.read_text())["runs"][0]
            except (ValueError, KeyError, IndexError):
                doc = None
        if doc is not None:
            rec["errors"] = doc.get("errors") or []
            p = doc.get("produce") or {}
            rec["msgs_s"] = p.get("messages_per_s")
            rec["mb_s"] = p.get("mb_per_s")
            rec["messages"] = p.get("messages")
            rec["bytes"] = (p.get("messages") or 0) * (1024 if workload == "produce-1KiB" else 100)
            lat = doc.get("ack_latency") or {}
            rec["lat"] = {k: lat.get(f"{k}_ms") for k in ("p50", "p99", "p99_9", "max")}
            rec["ok"] = code == 0 and not rec["errors"] and not timed_out
        if not rec["ok"]:
            tail = Path(f"{out_base}.log").read_text(errors="replace").splitlines()[-5:]
            self.problem(f"{key} run {rep} {workload}: exit {code}"
                         f"{' (timed out)' if timed_out else ''}; {' | '.join(tail)}")
        dead = [n.node_id for n in nodes if not n.alive()]
        if dead:
            self.problem(f"{key} run {rep} {workload}: node(s) {dead} died during the run")
        self.records.append(rec)
        lat = rec.get("lat") or {}
        if workload == "ack-latency":
            shown = (f"p50 {fmt_ms(lat.get('p50'))} p99 {fmt_ms(lat.get('p99'))} "
                     f"p99.9 {fmt_ms(lat.get('p99_9'))} ms")
        else:
            shown = f"{fmt_num(rec.get('msgs_s'))} msg/s {fmt_num(rec.get('mb_s'), 1)} MB/s"
        others = rec["others_cores"]
        self.say(f"  {workload:13} {shown}  (machine busy {pct(rec['machine_busy'])}, other "
                 f"processes {'–' if others is None else f'{others:.2f}'} cores, nodes CPU {sum(v or 0 for v in rec['node_cpu_s'].values()):.1f} s, "
                 f"client CPU {client_cpu:.1f} s, {wall:.1f} s)"
                 + "".join(f"\n    other: {comm} {cores:.2f} cores" for comm, cores in rec["others_top"]))
        return rec

    # -------------------------------------------------------------- --trace

    def start_trace(self, key, rep, workload):
        """perf record, system-wide, of the scheduler's switches and wake-ups and of ext4's
        fsync entries, for the length of one client run."""
        path = self.scratch / f"perf-{key}-{rep}-{workload}.data"
        proc = PROCS.add(subprocess.Popen(
            ["perf", "record", "-a", "-q", "-k", "CLOCK_MONOTONIC", "-o", str(path),
             "-e", "sched:sched_switch",
             "-e", "sched:sched_waking", "-e", "ext4:ext4_sync_file_enter"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        time.sleep(1.0)  # perf has its events enabled by then
        return proc, path

    def end_trace(self, tracer, nodes, window):
        """{"syncs": {node: {file kind: count}}, "wait": {who: {...}}} from the trace:
        fdatasync/fsync calls on each node's files, and for each node and the client the
        time its threads were runnable but not running (waiting for a CPU)."""
        proc, path = tracer
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        PROCS.live.remove(proc)
        files = {}  # inode -> (node id, kind)
        for n in nodes:
            for f in n.data_dir.rglob("*"):
                try:
                    ino = f.stat().st_ino
                except OSError:
                    continue
                name = f.name
                kind = ("raft.state" if name == "raft.state" else "segment" if name.endswith(".log")
                        else "index" if name.endswith((".index", ".timeindex")) else "other")
                files[ino] = (n.node_id, kind)
        owners = {n.proc.pid: f"node{n.node_id}" for n in nodes}
        owners[self.client_pid] = "client"
        try:
            out = subprocess.run(["perf", "script", "-i", str(path), "-F", "pid,tid,time,event,trace"],
                                 capture_output=True, text=True, timeout=600).stdout
        except (OSError, subprocess.SubprocessError) as e:
            return {"error": str(e)}
        finally:
            path.unlink(missing_ok=True)
        tgid = {}
        events = []
        for line in out.splitlines():
            parts = line.split(None, 3)
            if len(parts) < 4 or "/" not in parts[0]:
                continue
            pid, tid = (int(x) for x in parts[0].split("/"))
            tgid[tid] = pid
            t = float(parts[1].rstrip(":"))
            if window[0] <= t <= window[1]:
                events.append((tid, t, parts[2].rstrip(":"), parts[3]))

        def field(text, name):
            at = text.find(name + "=")
            if at < 0:
                return None
            return text[at + len(name) + 1:].split(None, 1)[0]

        syncs = {}
        runnable_since = {}
        wait = {}
        for tid, t, event, text in events:
            if event == "ext4:ext4_sync_file_enter":
                # "dev 254,0 ino 1234 parent 1233 datasync 1"
                words = text.split()
                try:
                    ino = int(words[words.index("ino") + 1])
                except (ValueError, IndexError):
                    continue
                if ino in files:
                    node, kind = files[ino]
                    per = syncs.setdefault(f"node{node}", {})
                    per[kind] = per.get(kind, 0) + 1
            elif event == "sched:sched_waking":
                woken = field(text, "pid")
                if woken is not None:
                    runnable_since.setdefault(int(woken), t)
            elif event == "sched:sched_switch":
                prev, state, nxt = field(text, "prev_pid"), field(text, "prev_state"), \
                    field(text, "next_pid")
                if prev is not None and state is not None:
                    if state.startswith("R"):
                        runnable_since[int(prev)] = t  # preempted: runnable from now
                    else:
                        runnable_since.pop(int(prev), None)  # asleep
                if nxt is not None:
                    nxt = int(nxt)
                    since = runnable_since.pop(nxt, None)
                    who = owners.get(tgid.get(nxt))
                    if since is not None and who is not None:
                        # The thread: a shard's executor, an io_uring worker (io-wq runs
                        # the fdatasyncs), or another.
                        comm = text.split("next_comm=", 1)[1].rsplit(" next_pid=", 1)[0]
                        kind = ("shard" if comm.startswith("shard-") else
                                "io-wq" if comm.startswith("iou-") else "other")
                        w = wait.setdefault(f"{who}:{kind}", {"waits": 0, "wait_s": 0.0,
                                                             "max_ms": 0.0, "over_1ms": 0})
                        d = t - since
                        w["waits"] += 1
                        w["wait_s"] += d
                        w["max_ms"] = max(w["max_ms"], d * 1000)
                        w["over_1ms"] += d > 0.001
        return {"syncs": syncs, "wait": wait, "window_s": window[1] - window[0]}

    def fio_fdatasync(self, key, rep):
        if not shutil.which("fio") or self.args.no_fio:
            return None
        path = self.scratch / "fio-sync"
        out = self.results / f"{key}-{rep}-fio-fdatasync.json"
        try:
            subprocess.run(["fio", "--name=fdatasync", f"--filename={path}", "--rw=write",
                            "--bs=4k", "--size=64M", "--direct=1", "--ioengine=sync",
                            "--fdatasync=1", "--runtime=3", "--time_based",
                            "--output-format=json"], stdout=open(out, "w"),
                           stderr=subprocess.DEVNULL, timeout=60, check=True)
            job = json.loads(out.read_text())["jobs"][0]
            pcts = job["sync"]["lat_ns"]["percentile"]
            return {"p50": pcts["50.000000"] / 1e6, "p99": pcts["99.000000"] / 1e6}
        except (subprocess.SubprocessError, OSError, ValueError, KeyError):
            return None
        finally:
            path.unlink(missing_ok=True)

    def settle(self):
        """Between setups nothing of ours runs: waits (at most --settle seconds) until the
        other work on the machine has used under a quarter of its CPUs for 3 seconds in a
        row. Returns the busy share of the last second and whether it settled."""
        deadline = time.time() + self.args.settle
        quiet = 0
        while True:
            before = machine_ticks()
            time.sleep(1)
            after = machine_ticks()
            total = after[1] - before[1]
            busy = (after[0] - before[0]) / total if total else 0.0
            quiet = quiet + 1 if busy < 0.25 else 0
            if quiet >= 3:
                return busy, True
            if time.time() >= deadline:
                return busy, False

    def session(self, key, rep):
        a = self.args
        setup = SETUPS[key]
        busy, settled = self.settle()
        self.say(f"\n== run {rep}/{a.runs}: {setup['name']} (load {os.getloadavg()[0]:.2f}, "
                 f"machine busy {pct(busy)} before"
                 + ("" if settled else f", not quiet after waiting {a.settle:.0f} s") + ")")
        nodes = self.make_nodes(key, rep)
        try:
            self.start_setup(key, nodes)
        except RuntimeError as e:
            self.problem(f"{key} run {rep}: did not start: {e}")
            self.stop_setup(key, rep, nodes)
            return
        try:
            p = a.partitions
            topics = [("warmup", p), ("p100", p), ("p1k", p), ("lat", 1)]
            placement = self.create_topics(key, rep, nodes, topics)
            self.leaders.append({"setup": key, "run": rep, "topics": placement})
            lead = {t: sorted({v["leader"] // NODE_ID_STRIDE if setup["cluster"] else 0
                               for v in parts.values()}) for t, parts in placement.items()}
            self.say(f"  leaders' nodes: p100 {lead['p100']}, p1k {lead['p1k']}, lat {lead['lat']}")
            code, timed_out, _, _ = self.sb(
                nodes, ["produce", "-t", "warmup", "-s", "100", "-c", str(a.warmup), "--acks", "-1",
                        "--linger-ms", "5"], self.results / f"{key}-{rep}-warmup", a.run_timeout)
            if code != 0:
                self.problem(f"{key} run {rep}: warm-up failed (exit {code}"
                             f"{', timed out' if timed_out else ''})")
            self.run(key, rep, nodes, "produce-100B",
                     ["produce", "-t", "p100", "-s", "100", "-c", str(a.produce_100b), "--acks", "-1",
                      "--linger-ms", "5", "--batch-bytes", "1000000"])
            self.run(key, rep, nodes, "produce-1KiB",
                     ["produce", "-t", "p1k", "-s", "1024", "-c", str(a.produce_1kib), "--acks", "-1",
                      "--linger-ms", "5", "--batch-bytes", "1000000"])
            sync = self.fio_fdatasync(key, rep)
            rec = self.run(key, rep, nodes, "ack-latency",
                           ["produce", "-t", "lat", "-s", "100", "-r", str(a.latency_rate), "-c",
                            str(a.latency_count), "--acks", "-1", "--linger-ms", "0"])
            rec["fio_fdatasync_ms"] = sync
            # A leader that moved during the runs would be worth knowing.
            for t in ("p100", "p1k", "lat"):
                now = self.topic_leaders(nodes, t)
                was = {i: v["leader"] for i, v in placement[t].items()}
                if now is not None and now != was:
                    self.problem(f"{key} run {rep}: leaders of {t} moved from {was} to {now}")
        except RuntimeError as e:
            self.problem(f"{key} run {rep}: {e}")
        finally:
            self.stop_setup(key, rep, nodes)

    def go(self):
        a = self.args
        keys = a.setups
        machine = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "nproc": os.cpu_count(), "allowed_cpus": self.cpus,
            "cpu": next((ln.split(":", 1)[1].strip() for ln in
                         Path("/proc/cpuinfo").read_text().splitlines()
                         if ln.startswith("model name")), "?"),
            "kernel": os.uname().release, "load_before": os.getloadavg(),
            "scratch": str(self.scratch),
        }
        try:
            df = subprocess.run(["df", "-T", str(self.scratch)], capture_output=True, text=True)
            machine["filesystem"] = " ".join(df.stdout.splitlines()[1].split()[:2])
        except (OSError, IndexError):
            pass
        self.machine = machine
        self.say(f"strand-cluster-bench: {a.runs} run(s) of {', '.join(keys)}; "
                 f"{a.shards} shard(s) per node; placement {a.placement}; ports from "
                 f"{self.base_port}; data in {self.scratch}; results in {self.results}")
        self.say(oversubscription(a, keys, len(self.cpus)))
        for rep in range(1, a.runs + 1):
            shift = (rep - 1) % len(keys)
            for key in keys[shift:] + keys[:shift]:
                self.session(key, rep)
        machine["load_after"] = os.getloadavg()
        report = make_report(self)
        (self.results / "report.md").write_text(report)
        (self.results / "results.json").write_text(json.dumps(
            {"params": vars(a), "machine": machine, "runs": self.records,
             "problems": self.problems}, indent=1, default=str) + "\n")
        (self.results / "leaders.json").write_text(json.dumps(self.leaders, indent=1) + "\n")
        print()
        print(report)
        print(f"results: {self.results}")
        return 1 if self.problems else 0


# ---------------------------------------------------------------- report

def fmt_num(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def fmt_ms(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def pct(v):
    return "–" if v is None else f"{100 * v:.0f}%"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return None if a is None or not b else a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def oversubscription(args, keys, cpus):
    most = max(SETUPS[k]["nodes"] for k in keys) * args.shards
    if most + 1 > cpus:
        return (f"NOTE: {most} broker shard(s) ({args.shards} per node) and the client share "
                f"{cpus} CPU(s): the cluster setups are CPU-oversubscribed, so their numbers "
                f"include waiting for a core, not only Raft and the disk.")
    return f"{most} broker shard(s) and the client on {cpus} CPUs."


def make_report(bench):
    a = bench.args
    keys = a.setups
    recs = [r for r in bench.records if r["ok"]]

    def of(key, workload):
        return [r for r in recs if r["setup"] == key and r["workload"] == workload]

    lines = []
    m = bench.machine
    lines.append(f"# Strand alone vs 3-node cluster, acks=all ({m['date']})")
    lines.append("")
    lines.append(f"Machine: {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, data on "
                 f"{m.get('filesystem', '?')}; load {m['load_before'][0]:.2f} before, "
                 f"{m['load_after'][0]:.2f} after. {a.runs} run(s) per setup, interleaved; "
                 f"medians. {a.shards} shard(s) per node, CPU placement {a.placement}"
                 + (" (node i on CPU (i-1) mod nproc)" if a.placement == "spread" else "")
                 + f"; partitions {a.partitions} (latency topic 1).")
    lines.append("")
    lines.append(oversubscription(a, keys, len(bench.cpus)))
    lines.append("")
    cols = [SETUPS[k]["name"] for k in keys]
    ratio_pairs = [(x, y) for x, y in (("rf1", "single"), ("rf3", "single"), ("rf3", "rf1"))
                   if x in keys and y in keys]
    header = "| workload | measure | " + " | ".join(cols) + " | " + " | ".join(
        f"{SETUPS[x]['name']} / {SETUPS[y]['name']}" for x, y in ratio_pairs) + " |"
    lines.append(header)
    lines.append("|" + "---|" * 2 + "---:|" * (len(cols) + len(ratio_pairs)))
    rows = [
        ("produce-100B", f"produce {a.produce_100b:,} × 100 B", "msg/s", lambda r: r.get("msgs_s"), 0),
        ("produce-100B", "", "MB/s", lambda r: r.get("mb_s"), 1),
        ("produce-1KiB", f"produce {a.produce_1kib:,} × 1 KiB", "msg/s", lambda r: r.get("msgs_s"), 0),
        ("produce-1KiB", "", "MB/s", lambda r: r.get("mb_s"), 1),
        ("ack-latency", f"ack latency, {a.latency_rate:,.0f} msg/s × {a.latency_count:,}, ms",
         "p50", lambda r: (r.get("lat") or {}).get("p50"), None),
        ("ack-latency", "", "p99", lambda r: (r.get("lat") or {}).get("p99"), None),
        ("ack-latency", "", "p99.9", lambda r: (r.get("lat") or {}).get("p99_9"), None),
        ("ack-latency", "", "max", lambda r: (r.get("lat") or {}).get("max"), None),
    ]
    medians = {}
    for workload, title, measure, get, digits in rows:
        vals = {k: med([get(r) for r in of(k, workload)]) for k in keys}
        medians[(workload, measure)] = vals
        cells = [fmt_ms(v) if digits is None else fmt_num(v, digits) for v in vals.values()]
        rats = [fmt_ratio(ratio(vals[x], vals[y])) for x, y in ratio_pairs]
        lines.append(f"| {title} | {measure} | " + " | ".join(cells) + " | " + " | ".join(rats) + " |")
    lines.append("")

    # Where the time and the CPU go.
    lines.append("Broker-side figures (medians over runs; from each node's /metrics and "
                 "/proc/PID/stat, summed over nodes):")
    lines.append("")
    lines.append("| workload | measure | " + " | ".join(cols) + " |")
    lines.append("|---|---|" + "---:|" * len(cols))

    def node_sum(r, field):
        vals = [mm.get(field) for mm in r["node_metrics"].values()]
        return sum(v for v in vals if v is not None) if vals else None

    def mean_produce_ms(r):
        c = node_sum(r, "produce_count")
        return None if not c else 1000 * node_sum(r, "produce_sum_s") / c

    def mean_flush_ms(r):
        c = node_sum(r, "flush_count")
        return None if not c else 1000 * node_sum(r, "flush_sum_s") / c

    def flush_kib(r):
        c = node_sum(r, "flush_count")
        return None if not c else node_sum(r, "flush_bytes") / c / 1024

    def flushes_per_s(r):
        c = node_sum(r, "flush_count")
        return None if c is None or not r["wall_s"] else c / r["wall_s"]

    def cpu_per_gb(r):
        gb = (r.get("bytes") or 0) / 1e9
        return None if not gb else sum(v or 0 for v in r["node_cpu_s"].values()) / gb

    def client_cpu_per_gb(r):
        gb = (r.get("bytes") or 0) / 1e9
        return None if not gb else r["client_cpu_s"] / gb

    def node_cores(r):
        return sum(v or 0 for v in r["node_cpu_s"].values()) / r["wall_s"] if r["wall_s"] else None

    extra = [
        ("produce request time in broker, mean ms", mean_produce_ms, "ms", True),
        ("flush jobs (write + fdatasync) per s, all nodes ¹", flushes_per_s, 0, True),
        ("flush job, mean ms ¹", mean_flush_ms, "ms", True),
        ("flush job, mean KiB ¹", flush_kib, 1, True),
        ("brokers' CPU s per GB produced", cpu_per_gb, 2, False),
        ("client CPU s per GB produced", client_cpu_per_gb, 2, False),
        ("brokers' CPU, cores (all nodes)", node_cores, 2, True),
        ("client CPU, cores", lambda r: r["client_cpu_s"] / r["wall_s"] if r["wall_s"] else None,
         2, True),
        ("machine busy (all CPUs, anyone's work)", lambda r: r.get("machine_busy"), "pct", True),
        ("kernel threads and interrupts, cores", lambda r: r.get("kernel_cores"), 2, True),
        ("other processes on the machine meanwhile, cores", lambda r: r.get("others_cores"), 2,
         True),
    ]
    for workload in WORKLOADS:
        first = True
        for name, get, kind, for_latency in extra:
            if workload == "ack-latency" and not for_latency:
                continue
            vals = [med([get(r) for r in of(k, workload)]) for k in keys]
            if kind == "ms":
                cells = [fmt_ms(v) for v in vals]
            elif kind == "pct":
                cells = [pct(v) for v in vals]
            else:
                cells = [fmt_num(v, kind) for v in vals]
            lines.append(f"| {workload if first else ''} | {name} | " + " | ".join(cells) + " |")
            first = False
    syncs = {k: [r.get("fio_fdatasync_ms") for r in of(k, "ack-latency") if r.get("fio_fdatasync_ms")]
             for k in keys}
    if any(syncs.values()):
        cells = [f"{fmt_ms(med([s['p50'] for s in v]))} / {fmt_ms(med([s['p99'] for s in v]))}"
                 if v else "–" for v in syncs.values()]
        lines.append("| ack-latency | fio 4 KiB write + fdatasync right before, p50 / p99 ms | "
                     + " | ".join(cells) + " |")
    lines.append("")
    lines.append("¹ The shard flusher's jobs: partitions with one replica. A replicated "
                 "partition's log is made durable by its Raft group's persist rounds, which "
                 "the flush metrics do not count (– or 0 with rf=3).")
    lines.append("")

    traced = [r for r in recs if r.get("trace") and "syncs" in r["trace"]]
    if traced:
        lines.append("Traced (--trace: perf recorded every run, which adds load; medians):")
        lines.append("")
        lines.append("| workload | measure | " + " | ".join(cols) + " |")
        lines.append("|---|---|" + "---:|" * len(cols))

        def syncs_per_s(kind):
            def get(r):
                total = sum(v.get(kind, 0) if kind else sum(v.values())
                            for v in r["trace"]["syncs"].values())
                return total / r["trace"]["window_s"]
            return get

        def syncs_per_request(r):
            total = sum(sum(v.values()) for v in r["trace"]["syncs"].values())
            reqs = node_sum(r, "produce_count")
            return total / reqs if reqs else None

        def wait_of(who_prefix, what, kind=None):
            def get(r):
                ws = [w for who, w in r["trace"]["wait"].items() if who.startswith(who_prefix)
                      and (kind is None or who.endswith(":" + kind))]
                if not ws:
                    return None
                waits = sum(w["waits"] for w in ws)
                wait_s = sum(w["wait_s"] for w in ws)
                span = r["trace"]["window_s"]
                if what == "share":
                    return wait_s / span
                if what == "mean_ms":
                    return 1000 * wait_s / waits if waits else None
                return sum(w["over_1ms"] for w in ws) / span
            return get

        trows = [
            ("fsync/fdatasync calls per s, all nodes", syncs_per_s(None), 0),
            ("… on segment files", syncs_per_s("segment"), 0),
            ("… on raft.state", syncs_per_s("raft.state"), 0),
            ("fsync/fdatasync calls per produce request", syncs_per_request, 2),
            ("nodes: runnable, waiting for a CPU (cores)", wait_of("node", "share"), 2),
            ("nodes: mean wait for a CPU after a wake-up or preemption, ms", wait_of("node", "mean_ms"), "ms"),
            ("nodes: waits over 1 ms per s", wait_of("node", "over"), 0),
            ("nodes' shard threads: mean wait for a CPU, ms", wait_of("node", "mean_ms", "shard"),
             "ms"),
            ("nodes' shard threads: waits over 1 ms per s", wait_of("node", "over", "shard"), 0),
            ("nodes' io_uring workers (fdatasync): runnable (cores)",
             wait_of("node", "share", "io-wq"), 2),
            ("client: runnable, waiting for a CPU (cores)", wait_of("client", "share"), 2),
            ("client: mean wait for a CPU, ms", wait_of("client", "mean_ms"), "ms"),
        ]
        for workload in WORKLOADS:
            first = True
            for name, get, kind in trows:
                vals = [med([get(r) for r in traced if r["setup"] == k and r["workload"] == workload])
                        for k in keys]
                cells = [fmt_ms(v) if kind == "ms" else fmt_num(v, kind) for v in vals]
                lines.append(f"| {workload if first else ''} | {name} | " + " | ".join(cells) + " |")
                first = False
        lines.append("")

    lines.append("Every run:")
    lines.append("")
    lines.append("| setup | run | 100 B msg/s | 1 KiB MB/s | ack p50 / p99 / p99.9 ms | "
                 "other processes, cores (100 B / 1 KiB / latency) |")
    lines.append("|---|---:|---:|---:|---|---|")
    for key in keys:
        for rep in range(1, a.runs + 1):
            got = {r["workload"]: r for r in bench.records if r["setup"] == key and r["run"] == rep}
            if not got:
                lines.append(f"| {SETUPS[key]['name']} | {rep} | – | – | – | – |")
                continue

            def val(w, f, digits):
                r = got.get(w)
                return fmt_num(r.get(f), digits) if r and r["ok"] else "failed" if r else "–"
            lr = got.get("ack-latency")
            lat = (lr.get("lat") or {}) if lr and lr["ok"] else {}
            lat_s = (f"{fmt_ms(lat.get('p50'))} / {fmt_ms(lat.get('p99'))} / "
                     f"{fmt_ms(lat.get('p99_9'))}") if lat else "–"
            others = " / ".join(
                fmt_num(got[w].get("others_cores"), 2) if w in got else "–" for w in WORKLOADS)
            lines.append(f"| {SETUPS[key]['name']} | {rep} | {val('produce-100B', 'msgs_s', 0)} | "
                         f"{val('produce-1KiB', 'mb_s', 1)} | {lat_s} | {others} |")
    lines.append("")
    if bench.problems:
        lines.append("Problems:")
        lines.append("")
        for p in bench.problems:
            lines.append(f"- {p}")
    else:
        lines.append("No errors, no node died, no leader moved during the runs, no panic or "
                     "ERROR line in the node logs.")
    lines.append("")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(
        description="acks=all produce throughput and latency: Strand alone, 3 nodes rf=1, "
                    "3 nodes rf=3 (see the module docstring)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 run, 200,000 × 100 B, 50,000 × 1 KiB, 20,000 latency")
    p.add_argument("--setups", default="single,rf1,rf3")
    p.add_argument("--shards", type=int, default=1, help="shards per node")
    p.add_argument("--partitions", type=int, default=3, help="partitions of the throughput topics")
    p.add_argument("--produce-100b", type=int, default=5_000_000)
    p.add_argument("--produce-1kib", type=int, default=1_000_000)
    p.add_argument("--latency-rate", type=float, default=10_000)
    p.add_argument("--latency-count", type=int, default=100_000)
    p.add_argument("--warmup", type=int, default=1_000_000)
    p.add_argument("--placement", choices=["spread", "inherit"], default="spread")
    p.add_argument("--log-level", default="info")
    p.add_argument("--bin-dir")
    p.add_argument("--results")
    p.add_argument("--scratch", help="parent of the temporary data directory (default $TMPDIR)")
    p.add_argument("--base-port", type=int)
    p.add_argument("--run-timeout", type=float, default=300)
    p.add_argument("--no-fio", action="store_true")
    p.add_argument("--trace", action="store_true",
                   help="record every client run with perf (scheduler switches and wake-ups, "
                        "ext4 fsyncs): fdatasyncs per node and file, and how long each node's "
                        "and the client's threads waited for a CPU. perf adds load: keep the "
                        "measured runs untraced")
    p.add_argument("--settle", type=float, default=120,
                   help="before each setup, wait up to this long for the machine's CPUs to be "
                        "under a quarter busy for 3 s (other work on a shared machine)")
    args = p.parse_args()
    if args.quick:
        defaults = {"runs": 1, "produce_100b": 200_000, "produce_1kib": 50_000,
                    "latency_count": 20_000, "warmup": 100_000}
        for k, v in defaults.items():
            if getattr(args, k) == p.get_default(k):
                setattr(args, k, v)
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown or not args.setups:
        p.error(f"--setups: unknown {unknown}; known: {', '.join(SETUPS)}")
    if not 1 <= args.shards <= RPC_OFFSET - 1:
        p.error(f"--shards must be 1 to {RPC_OFFSET - 1}")
    if args.trace and not shutil.which("perf"):
        p.error("--trace needs perf")
    if args.placement == "spread" and not shutil.which("taskset"):
        p.error("--placement spread needs taskset (util-linux)")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    bench = None
    try:
        bench = Bench(args)
        return bench.go()
    finally:
        PROCS.stop_all()
        if bench is not None:
            shutil.rmtree(bench.scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
