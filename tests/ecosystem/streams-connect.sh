#!/usr/bin/env bash
# Kafka Streams and Kafka Connect (Apache Kafka 4.1.1 libraries, Java 17) against Strand.
#
#   streams/  a word count with exactly-once v2 (repartition topic, changelogged store) run
#             as its own JVM, killed with -9 twice mid-stream (then restored from the
#             changelog); the read_committed output must hold the exact count of every
#             word. Also the KIP-447 fencing it relies on (TxnOffsetCommit with a stale
#             member or generation), and commits during a rebalance.
#   connect/  a distributed Connect worker with FileStreamSource/FileStreamSink connectors
#             created over REST; restarted gracefully (exactly the source's lines in the
#             sink file) and after kill -9 (every line, in order); and with exactly-once
#             source support, killed with -9 mid-stream (each line once in the topic).
#
# Starts one broker (2 shards) on loopback ports in 22500-22999, runs both Maven projects,
# stops everything it started, and ends with "N passed, N failed" (JUnit tests; skipped =
# expected failures against Strand, listed above that line). Needs Java 17 and Maven
# (installed from apt when missing); the libraries come from Maven Central into ~/.m2.
# Environment: STRAND_BIN (default: <repo>/target/release/strand).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
STRAND_BIN=${STRAND_BIN:-$root/target/release/strand}
started=$SECONDS

if [ ! -x "$STRAND_BIN" ]; then
    echo "no broker binary at $STRAND_BIN: build it (cargo build --release) or set STRAND_BIN" >&2
    exit 2
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2; return 1; fi
}
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] || ! command -v mvn >/dev/null 2>&1; then
    echo "==> installing Java 17 and Maven from apt"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        openjdk-17-jdk-headless maven >/dev/null
fi

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Broker shards on base and base+1, the Connect REST API on base+5; first free slot wins.
base=""
for b in $(seq 22500 10 22990); do
    if ! in_use "$b" && ! in_use $((b + 1)) && ! in_use $((b + 5)); then base=$b; break; fi
done
[ -n "$base" ] || { echo "no free ports in 22500-22999" >&2; exit 2; }
rest_port=$((base + 5))
bootstrap="127.0.0.1:$base"

work=$(mktemp -d "${TMPDIR:-/tmp}/strand-eco-streams-connect.XXXXXX")
broker_pid=""
cleanup() {
    # JVMs the tests started (their pids are listed under $work), then the broker.
    if [ -d "$work" ]; then
        for pid in $(find "$work" -name pids -exec cat {} + 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null || true
        done
    fi
    if [ -n "$broker_pid" ]; then
        kill -9 "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> broker $STRAND_BIN on $bootstrap (2 shards), data under $work"
"$STRAND_BIN" serve --data-dir "$work/data" --listen "$bootstrap" --shards 2 --log-level info \
    </dev/null >/dev/null 2>"$work/broker.log" &
broker_pid=$!
for _ in $(seq 1 300); do
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        echo "broker exited:"; cat "$work/broker.log"; exit 1
    fi
    if grep -q ready "$work/broker.log" && in_use "$base" && in_use $((base + 1)); then break; fi
    sleep 0.1
done
in_use "$base" && in_use $((base + 1)) || { echo "broker not ready:"; cat "$work/broker.log"; exit 1; }

passed=0
failed=0
skipped=0
skipped_names=()
run_suite() { # run_suite NAME DIR
    local name=$1 dir=$2 rc=0 t f e s before=$failed
    echo "==> $name ($dir)"
    rm -rf "$dir/target/surefire-reports"
    mvn -B -q -Dstyle.color=never -f "$dir/pom.xml" test -Dstrand.bootstrap="$bootstrap" -Dconnect.rest.port="$rest_port" \
        -Deco.workdir="$work/$name" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' || rc=$?
    local reports=("$dir"/target/surefire-reports/TEST-*.xml)
    if [ ! -e "${reports[0]}" ]; then
        echo "$name: no test reports (build failed?)"; failed=$((failed + 1)); return
    fi
    for r in "${reports[@]}"; do
        t=$(grep -o '<testsuite [^>]*' "$r" | grep -o ' tests="[0-9]*"' | grep -o '[0-9]*')
        f=$(grep -o '<testsuite [^>]*' "$r" | grep -o ' failures="[0-9]*"' | grep -o '[0-9]*')
        e=$(grep -o '<testsuite [^>]*' "$r" | grep -o ' errors="[0-9]*"' | grep -o '[0-9]*')
        s=$(grep -o '<testsuite [^>]*' "$r" | grep -o ' skipped="[0-9]*"' | grep -o '[0-9]*')
        passed=$((passed + t - f - e - s))
        failed=$((failed + f + e))
        skipped=$((skipped + s))
        while read -r line; do skipped_names+=("$line"); done < <(
            awk -F'"' '/<testcase /{for(i=1;i<NF;i++){if($i~/ name=$/)n=$(i+1);if($i~/classname=$/)c=$(i+1)}}
                       /<skipped message=/{m=$2; gsub(/&quot;/,"\"",m); gsub(/&apos;/,"'\''",m); gsub(/&amp;/,"\\&",m); print c"."n": "m}' "$r")
    done
    if [ "$rc" -ne 0 ] && [ "$failed" -eq "$before" ]; then
        echo "$name: Maven exited $rc"; failed=$((failed + 1))
    fi
}
run_suite streams "$here/streams"
run_suite connect "$here/connect"

if ! kill -0 "$broker_pid" 2>/dev/null; then
    echo "the broker died during the tests:"; tail -50 "$work/broker.log"; failed=$((failed + 1))
elif grep -q panicked "$work/broker.log"; then
    echo "the broker panicked:"; grep -B5 -A20 panicked "$work/broker.log" | head -60; failed=$((failed + 1))
fi
if [ "$failed" -ne 0 ]; then
    echo "--- broker log (last 30 lines) ---"; tail -30 "$work/broker.log"
fi
for s in "${skipped_names[@]+"${skipped_names[@]}"}"; do echo "expected failure (skipped): $s"; done
echo "streams-connect: $((SECONDS - started)) s, $skipped skipped as expected failures"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
