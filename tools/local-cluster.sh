#!/usr/bin/env bash
# Runs a Strand cluster of N nodes on this machine, for trying things out by hand.
#
#   tools/local-cluster.sh start [N] [--shards S]   start the nodes not running (N default 3)
#   tools/local-cluster.sh status                   which nodes run, their pids and ports
#   tools/local-cluster.sh stop                     SIGTERM every node, wait for them to exit
#   tools/local-cluster.sh kill I                   kill -9 node I (start brings it back)
#
# Node I (1-based) keeps its data in ./data-cluster/nodeI, logs to ./data-cluster/nodeI.log
# and its pid in ./data-cluster/nodeI.pid (paths relative to the current directory). Its
# shard k serves Kafka clients on 127.0.0.1:(19092 + 1000 (I - 1) + k) and peers on
# 127.0.0.1:(19192 + 1000 (I - 1) + k): node 1 on 19092 and 19192, node 2 on 20092 and
# 20192, and so on. Each node is started as
#
#   strand serve --node-id 1 --data-dir data-cluster/node1 --listen 127.0.0.1:19092
#       --rpc-listen 127.0.0.1:19192
#       --peers 1@127.0.0.1:19192,2@127.0.0.1:20192,3@127.0.0.1:21192 [--shards S]
#
# The cluster's size and shard count are fixed by its first start (kept in
# ./data-cluster/cluster.conf); remove ./data-cluster to begin a different one.
# Builds nothing: runs $STRAND_BIN, by default target/release/strand of this checkout.
#
# Two variables move a cluster elsewhere, so that several can run side by side:
#   STRAND_CLUSTER_DIR    its directory instead of ./data-cluster
#   STRAND_CLUSTER_PORT   the client port of node 1 instead of 19092 (peers 100 above;
#                         node I adds 1000 (I - 1) to both)
# Every command of one cluster must be given the same values.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${STRAND_BIN:-$repo/target/release/strand}
dir=${STRAND_CLUSTER_DIR:-data-cluster}
conf=$dir/cluster.conf
client_base=${STRAND_CLUSTER_PORT:-19092}
node_stride=1000
max_nodes=40
max_shards=100 # the rpc ports begin 100 above the client ports
[[ $client_base =~ ^[1-9][0-9]*$ ]] && [ "$client_base" -le 65535 ] \
    || { echo "local-cluster: STRAND_CLUSTER_PORT must be a port number" >&2; exit 1; }
rpc_base=$((client_base + max_shards))
ready_timeout_s=30
stop_timeout_s=30

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
    echo "local-cluster: $*" >&2
    exit 1
}

is_count() { # is_count VALUE MAX: VALUE is an integer in 1..MAX
    [[ $1 =~ ^[1-9][0-9]*$ ]] && [ "$1" -le "$2" ]
}

client_port() { echo $((client_base + node_stride * ($1 - 1))); }
rpc_port() { echo $((rpc_base + node_stride * ($1 - 1))); }
pid_file() { echo "$dir/node$1.pid"; }
log_file() { echo "$dir/node$1.log"; }

# The pid of node $1 if it is running (a strand process started for that node), else
# nothing. A pid file left behind by a node that died is removed.
running_pid() {
    local file pid
    file=$(pid_file "$1")
    [ -f "$file" ] || return 0
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "serve --node-id $1 "; then
        echo "$pid"
    else
        rm -f "$file"
    fi
}

listening() { # listening PORT: something accepts connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

load_conf() { # sets nodes and shards from cluster.conf; fails if there is none
    [ -f "$conf" ] || die "no cluster in $dir (start one with: $0 start [N] [--shards S])"
    nodes=$(sed -n 's/^nodes=//p' "$conf")
    shards=$(sed -n 's/^shards=//p' "$conf")
    if ! is_count "$nodes" "$max_nodes" || ! is_count "$shards" "$max_shards"; then
        die "$conf is damaged: want lines nodes=N and shards=S"
    fi
}

peers() {
    local i list=""
    for ((i = 1; i <= nodes; i++)); do
        list+="${list:+,}$i@127.0.0.1:$(rpc_port "$i")"
    done
    echo "$list"
}

check_ports() { # check_ports I: fails if another process listens on a port of node I
    local i=$1 k port
    for ((k = 0; k < shards; k++)); do
        for port in $(($(client_port "$i") + k)) $(($(rpc_port "$i") + k)); do
            if listening "$port"; then
                echo "local-cluster: port $port of node $i is taken by another process" >&2
                return 1
            fi
        done
    done
}

start_node() { # start_node I: starts node I in the background; prints where its log begins
    local i=$1 port rpc log from
    port=$(client_port "$i")
    rpc=$(rpc_port "$i")
    mkdir -p "$dir/node$i"
    log=$(log_file "$i")
    touch "$log"
    from=$(stat -c %s "$log")
    nohup "$bin" serve --node-id "$i" --data-dir "$dir/node$i" \
        --listen "127.0.0.1:$port" --rpc-listen "127.0.0.1:$rpc" --peers "$(peers)" \
        --shards "$shards" </dev/null >>"$log" 2>&1 &
    echo $! >"$(pid_file "$i")"
    echo "$from"
}

wait_ready() { # wait_ready I FROM: until node I logged "ready" after byte FROM of its log
    local i=$1 from=$2 log pid deadline
    log=$(log_file "$i")
    pid=$(<"$(pid_file "$i")")
    deadline=$((SECONDS + ready_timeout_s))
    until tail -c +$((from + 1)) "$log" | grep -q ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pid_file "$i")"
            echo "local-cluster: node $i exited; the end of $log:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "local-cluster: node $i (pid $pid) not ready after ${ready_timeout_s}s; see $log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "node $i ready: pid $pid, clients 127.0.0.1:$(client_port "$i"), rpc 127.0.0.1:$(rpc_port "$i"), log $log"
}

cmd_start() {
    local want_nodes="" want_shards="" i k pid from failed=0
    local -a todo=() started=() offsets=()
    while [ $# -gt 0 ]; do
        case $1 in
            --shards)
                [ $# -ge 2 ] || die "--shards needs a value"
                want_shards=$2
                shift 2
                ;;
            --shards=*)
                want_shards=${1#--shards=}
                shift
                ;;
            -*) die "start: unknown option $1 (see $0 help)" ;;
            *)
                [ -z "$want_nodes" ] || die "start: one node count only"
                want_nodes=$1
                shift
                ;;
        esac
    done
    if [ -n "$want_nodes" ] && ! is_count "$want_nodes" "$max_nodes"; then
        die "start: the node count must be 1 to $max_nodes, not '$want_nodes'"
    fi
    if [ -n "$want_shards" ] && ! is_count "$want_shards" "$max_shards"; then
        die "start: --shards must be 1 to $max_shards, not '$want_shards'"
    fi
    [ -x "$bin" ] || die "$bin is not an executable: build it (cargo build --release) or set STRAND_BIN"

    if [ -f "$conf" ]; then
        load_conf
        if [ -n "$want_nodes" ] && [ "$want_nodes" != "$nodes" ]; then
            die "$dir holds a cluster of $nodes nodes, not $want_nodes: remove $dir to begin another"
        fi
        if [ -n "$want_shards" ] && [ "$want_shards" != "$shards" ]; then
            die "$dir holds a cluster of $shards shard(s) per node, not $want_shards: remove $dir to begin another"
        fi
    else
        nodes=${want_nodes:-3}
        shards=${want_shards:-1}
    fi

    for ((i = 1; i <= nodes; i++)); do
        pid=$(running_pid "$i")
        if [ -n "$pid" ]; then
            echo "node $i already running (pid $pid)"
        else
            check_ports "$i" || failed=1
            todo+=("$i")
        fi
    done
    [ "$failed" -eq 0 ] || die "nothing started"
    if [ ! -f "$conf" ]; then
        mkdir -p "$dir"
        printf 'nodes=%s\nshards=%s\n' "$nodes" "$shards" >"$conf"
    fi

    # Start every missing node first, then wait for them: a node does not wait for its peers
    # to say "ready", but starting them together lets them elect a metadata leader at once.
    for i in "${todo[@]}"; do
        from=$(start_node "$i")
        started+=("$i")
        offsets+=("$from")
    done
    for ((k = 0; k < ${#started[@]}; k++)); do
        wait_ready "${started[k]}" "${offsets[k]}" || failed=1
    done
    [ "$failed" -eq 0 ] || die "some nodes did not start (the others keep running; '$0 stop' stops them)"
    echo "bootstrap servers: $(bootstrap)"
}

bootstrap() {
    local i list=""
    for ((i = 1; i <= nodes; i++)); do
        list+="${list:+,}127.0.0.1:$(client_port "$i")"
    done
    echo "$list"
}

ports() { # ports BASE: BASE, or BASE-LAST with several shards
    if [ "$shards" -eq 1 ]; then echo "$1"; else echo "$1-$(($1 + shards - 1))"; fi
}

cmd_status() {
    local i pid running=0
    load_conf
    echo "cluster in $dir: $nodes node(s), $shards shard(s) each; binary $bin"
    for ((i = 1; i <= nodes; i++)); do
        pid=$(running_pid "$i")
        if [ -n "$pid" ]; then
            running=$((running + 1))
            printf 'node %s: running (pid %s)' "$i" "$pid"
        else
            printf 'node %s: stopped' "$i"
        fi
        printf ', clients 127.0.0.1:%s, rpc 127.0.0.1:%s, log %s\n' \
            "$(ports "$(client_port "$i")")" "$(ports "$(rpc_port "$i")")" "$(log_file "$i")"
    done
    echo "$running of $nodes running; bootstrap servers: $(bootstrap)"
}

cmd_stop() {
    local i k pid deadline left=0
    local -a pids=() ids=()
    load_conf
    for ((i = 1; i <= nodes; i++)); do
        pid=$(running_pid "$i")
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
        ids+=("$i")
    done
    if [ ${#pids[@]} -eq 0 ]; then
        echo "no node running"
        return 0
    fi
    echo "sent SIGTERM to node(s) ${ids[*]}"
    deadline=$((SECONDS + stop_timeout_s))
    for ((k = 0; k < ${#pids[@]}; k++)); do
        while kill -0 "${pids[k]}" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
        if kill -0 "${pids[k]}" 2>/dev/null; then
            echo "local-cluster: node ${ids[k]} (pid ${pids[k]}) still running after ${stop_timeout_s}s; '$0 kill ${ids[k]}' kills it" >&2
            left=1
        else
            rm -f "$(pid_file "${ids[k]}")"
            echo "node ${ids[k]} stopped"
        fi
    done
    return "$left"
}

cmd_kill() {
    local i=${1:-} pid
    [ $# -eq 1 ] || die "usage: $0 kill I"
    load_conf
    is_count "$i" "$nodes" || die "kill: no node '$i' (nodes are 1 to $nodes)"
    pid=$(running_pid "$i")
    [ -n "$pid" ] || die "node $i is not running"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$(pid_file "$i")"
    echo "node $i (pid $pid) killed with SIGKILL; '$0 start' brings it back"
}

command=${1:-help}
[ $# -eq 0 ] || shift
case $command in
    start) cmd_start "$@" ;;
    status) [ $# -eq 0 ] || die "status takes no arguments"; cmd_status ;;
    stop) [ $# -eq 0 ] || die "stop takes no arguments"; cmd_stop ;;
    kill) cmd_kill "$@" ;;
    help | -h | --help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
