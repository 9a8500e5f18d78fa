#!/usr/bin/env bash
# Apache Kafka 4.1.1, fetched from Maven Central, as a reference broker and as the home of
# Kafka's own command-line tools.
#
#   kafka.sh install                       fetch the jars (once; a stamp file) and print their dir
#   kafka.sh start PORT DATA_DIR [k=v ...] start a single KRaft node (broker+controller) on
#                                          127.0.0.1:PORT (controller on PORT+1), wait until it
#                                          answers metadata requests, print its pid; k=v pairs
#                                          are appended to server.properties
#   kafka.sh stop DATA_DIR                 SIGTERM, then SIGKILL after a grace period
#   kafka.sh run CLASS ARGS...             run a Java main class with Kafka's class path
#
# KAFKA_HEAP_OPTS overrides the broker heap (default -Xmx768m).
set -euo pipefail

KAFKA_VERSION=4.1.1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
project="$here/kafka"
home="$root/.cache/kafka-$KAFKA_VERSION"
libs="$home/libs"
stamp="$home/.installed"
STOP_GRACE_S=${KAFKA_STOP_GRACE_S:-20}
READY_TIMEOUT_S=${KAFKA_READY_TIMEOUT_S:-90}

die() { echo "kafka.sh: $*" >&2; exit 1; }

install() {
    local want
    want="$(sha256sum "$project/pom.xml" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$libs" ]; then
        echo "$libs"
        return
    fi
    command -v mvn >/dev/null || die "mvn not found"
    rm -rf "$libs"
    mkdir -p "$libs"
    # Offline first (a warm ~/.m2 needs no network), then online.
    if ! mvn -q -B -o -f "$project/pom.xml" dependency:copy-dependencies >/dev/null 2>&1; then
        mvn -q -B -f "$project/pom.xml" dependency:copy-dependencies >&2 \
            || die "mvn dependency:copy-dependencies failed"
    fi
    [ -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ] || die "kafka_2.13-$KAFKA_VERSION.jar missing in $libs"
    echo "$want" > "$stamp"
    echo "$libs"
}

need_install() {
    [ -f "$stamp" ] || install >/dev/null
}

# Short-lived tools start faster with the client compiler and a small serial heap.
TOOL_JVM_OPTS=(-Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
    "-Dlog4j2.configurationFile=$project/log4j2-tools.properties")

run() {
    [ $# -ge 1 ] || die "usage: kafka.sh run CLASS ARGS..."
    need_install
    exec java "${TOOL_JVM_OPTS[@]}" ${KAFKA_TOOL_OPTS:-} -cp "$libs/*" "$@"
}

accepts() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null
}

start() {
    [ $# -ge 2 ] || die "usage: kafka.sh start PORT DATA_DIR [key=value ...]"
    local port="$1" data="$2"
    shift 2
    need_install
    local controller=$((port + 1))
    mkdir -p "$data"
    data="$(cd "$data" && pwd)"
    if [ -f "$data/kafka.pid" ] && alive "$(cat "$data/kafka.pid")"; then
        die "a broker is already running from $data (pid $(cat "$data/kafka.pid"))"
    fi
    local props="$data/server.properties"
    cat > "$props" <<PROPS
node.id=1
process.roles=broker,controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.voters=1@127.0.0.1:$controller
log.dirs=$data/logs
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
PROPS
    local kv
    for kv in "$@"; do
        case "$kv" in *=*) echo "$kv" >> "$props" ;; *) die "not key=value: $kv" ;; esac
    done

    # A fresh data dir gets a new cluster id; a formatted one is left as it is.
    local cluster_id
    cluster_id="$(cat "$data/cluster.id" 2>/dev/null || true)"
    if [ -z "$cluster_id" ]; then
        # Base64url of 16 random bytes, as Kafka's own ids; one starting with '-' would
        # be read by the storage tool as an option (about 1 run in 64), so it starts over.
        while :; do
            cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
            case "$cluster_id" in -*) ;; *) break ;; esac
        done
        echo "$cluster_id" > "$data/cluster.id"
    fi
    java "${TOOL_JVM_OPTS[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
        --ignore-formatted --cluster-id "$cluster_id" --config "$props" \
        >> "$data/format.out" 2>&1 || { cat "$data/format.out" >&2; die "storage format failed"; }

    # setsid: the broker survives this script and is stopped by pid.
    setsid java ${KAFKA_HEAP_OPTS:--Xmx768m -Xms256m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        "-Dlog4j2.configurationFile=$project/log4j2-broker.properties" \
        -cp "$libs/*" kafka.Kafka "$props" \
        < /dev/null >> "$data/kafka.out" 2>&1 &
    local pid=$!
    echo "$pid" > "$data/kafka.pid"

    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until accepts "$port"; do
        alive "$pid" || { tail -50 "$data/kafka.out" >&2; die "broker exited during start-up"; }
        [ $SECONDS -lt $deadline ] || { tail -50 "$data/kafka.out" >&2; stop "$data"; die "port $port not open after ${READY_TIMEOUT_S}s"; }
        sleep 0.2
    done
    # The port opens before the broker has caught up with its metadata log: a metadata
    # request listing the topics is the real readiness check.
    until java "${TOOL_JVM_OPTS[@]}" -cp "$libs/*" org.apache.kafka.tools.TopicCommand \
            --bootstrap-server "127.0.0.1:$port" --list >/dev/null 2>>"$data/ready.err"; do
        alive "$pid" || { tail -50 "$data/kafka.out" >&2; die "broker exited during start-up"; }
        [ $SECONDS -lt $deadline ] || { tail -50 "$data/kafka.out" >&2; stop "$data"; die "no metadata after ${READY_TIMEOUT_S}s"; }
        sleep 0.5
    done
    echo "$pid"
}

stop() {
    [ $# -eq 1 ] || die "usage: kafka.sh stop DATA_DIR"
    local data="$1" pid
    pid="$(cat "$data/kafka.pid" 2>/dev/null || true)"
    [ -n "$pid" ] || return 0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_GRACE_S))
        while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        if alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            while alive "$pid"; do sleep 0.1; done
        fi
    fi
    rm -f "$data/kafka.pid"
}

cmd="${1:-}"
[ $# -ge 1 ] && shift
case "$cmd" in
    install) install ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    run) run "$@" ;;
    *) die "usage: kafka.sh install | start PORT DATA_DIR [k=v...] | stop DATA_DIR | run CLASS ARGS..." ;;
esac
