#!/usr/bin/env bash
# Runs tests of librdkafka's own test suite against a 3-node Strand cluster, by hand.
#
#   tools/librdkafka_suite.sh [--whole] [--keep] [TEST...]     (TEST default: 0081 0103)
#
# The first run builds librdkafka and its test runner (tests/test-runner) into the cache
# directory $STRAND_LIBRDKAFKA_CACHE (default ~/.cache/strand-librdkafka); later runs reuse
# them. The source is $LIBRDKAFKA_SRC if set (a source tree, or a git directory whose
# $LIBRDKAFKA_REF is exported), else a clone of $LIBRDKAFKA_REPO at $LIBRDKAFKA_REF
# (default master). Building needs gcc, make, libssl-dev and zlib1g-dev.
#
# Each run starts a fresh 3-node cluster of target/release/strand ($STRAND_BIN) with
# tools/local-cluster.sh on the first free ports from 22092 up (below 32768), in a
# temporary directory, writes a test.conf naming it, runs the tests and stops the cluster.
#
# A librdkafka test stops at its first failing sub-test, so each sub-test function of a
# test (the do_test_* functions that call SUB_TEST) is run alone, with SUBTESTS=<function>:
# one failure does not hide the others. --whole runs each test once as a whole instead.
# The summary lists every sub-test that passed or failed, with the failure's message;
# the test runner's full output and the nodes' logs stay in the run's directory
# (printed at the end; removed unless --keep or a failure).
#
# Environment: TEST_KAFKA_VERSION (default 4.0.0.0: the version the tests assume when
# choosing features), TEST_TIMEOUT_MULTIPLIER (test.timeout.multiplier, default 2),
# TEST_LEVEL, TEST_DEBUG (passed to the runner as librdkafka documents them).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${STRAND_LIBRDKAFKA_CACHE:-$HOME/.cache/strand-librdkafka}
src=$cache/src
export STRAND_BIN=${STRAND_BIN:-$repo/target/release/strand}
ref=${LIBRDKAFKA_REF:-master}
upstream=${LIBRDKAFKA_REPO:-https://github.com/confluentinc/librdkafka}
kafka_version=${TEST_KAFKA_VERSION:-4.0.0.0}
multiplier=${TEST_TIMEOUT_MULTIPLIER:-2}

whole=0
keep=0
tests=()
while [ $# -gt 0 ]; do
    case $1 in
        --whole) whole=1 ;;
        --keep) keep=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        -*) echo "librdkafka_suite: unknown option $1" >&2; exit 2 ;;
        *)
            [[ $1 =~ ^[0-9]{4}$ ]] || { echo "librdkafka_suite: a test is 4 digits, not '$1'" >&2; exit 2; }
            tests+=("$1")
            ;;
    esac
    shift
done
[ ${#tests[@]} -gt 0 ] || tests=(0081 0103)
[ -x "$STRAND_BIN" ] || { echo "librdkafka_suite: build $STRAND_BIN first (cargo build --release --bin strand)" >&2; exit 1; }

# --- librdkafka and its test runner, built once -------------------------------------------
build() {
    mkdir -p "$cache"
    if [ ! -f "$src/configure" ]; then
        rm -rf "$src"
        if [ -n "${LIBRDKAFKA_SRC:-}" ] && [ -f "$LIBRDKAFKA_SRC/configure" ]; then
            cp -a "$LIBRDKAFKA_SRC" "$src"
        elif [ -n "${LIBRDKAFKA_SRC:-}" ]; then # a git directory
            mkdir -p "$src"
            git --git-dir="$LIBRDKAFKA_SRC" archive "$ref" | tar -x -C "$src"
            git --git-dir="$LIBRDKAFKA_SRC" rev-parse "$ref" >"$src/.strand-commit"
        else
            git clone --quiet --depth 1 --branch "$ref" "$upstream" "$src"
            git -C "$src" rev-parse HEAD >"$src/.strand-commit"
        fi
    fi
    if [ ! -x "$src/tests/test-runner" ]; then
        echo "building librdkafka and its tests in $src (once; several minutes)"
        (
            cd "$src"
            # No --install-deps: system libraries only; the optional ones are left out.
            [ -f Makefile.config ] || ./configure --disable-curl --disable-sasl \
                --disable-zstd --disable-lz4-ext >"$cache/configure.log" 2>&1
            nice -n 10 make -j2 libs >"$cache/build-lib.log" 2>&1
            nice -n 10 make -j2 -C tests build >"$cache/build-tests.log" 2>&1
        ) || { echo "librdkafka_suite: the build failed; see $cache/*.log" >&2; exit 1; }
    fi
}
build
version=$(sed -n 's/^#define RD_KAFKA_VERSION *0x\(..\)\(..\)\(..\).*/\1 \2 \3/p' "$src/src/rdkafka.h" \
    | { read -r a b c; echo "$((16#$a)).$((16#$b)).$((16#$c))"; })
commit=$(cat "$src/.strand-commit" 2>/dev/null || echo unknown)

# --- the cluster --------------------------------------------------------------------------
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
base=""
for candidate in 22092 25092 28092; do # node I uses candidate + 1000 (I - 1), rpc 100 above
    free=1
    for port in $candidate $((candidate + 100)) $((candidate + 1000)) $((candidate + 1100)) \
        $((candidate + 2000)) $((candidate + 2100)); do
        if listening "$port"; then free=0; break; fi
    done
    if [ "$free" -eq 1 ]; then base=$candidate; break; fi
done
[ -n "$base" ] || { echo "librdkafka_suite: no free ports for a cluster" >&2; exit 1; }

run=$(mktemp -d "${TMPDIR:-/tmp}/strand-librdkafka.XXXXXX")
export STRAND_CLUSTER_DIR=$run/cluster STRAND_CLUSTER_PORT=$base
cluster() { "$repo/tools/local-cluster.sh" "$@"; }
failed=0
finish() {
    cluster stop >/dev/null 2>&1 || true
    if [ "$keep" -eq 0 ] && [ "$failed" -eq 0 ]; then
        rm -rf "$run"
    else
        echo "outputs and node logs: $run"
    fi
}
trap finish EXIT
cluster start 3 >"$run/cluster-start.log" 2>&1 || { cat "$run/cluster-start.log" >&2; failed=1; exit 1; }
bootstrap="127.0.0.1:$base,127.0.0.1:$((base + 1000)),127.0.0.1:$((base + 2000))"
# A node is "ready" before it has met its peers: wait until each one lists all three
# brokers and a controller, or the first test sees a cluster of one without a controller.
cluster_formed() {
    local node info
    for node in ${bootstrap//,/ }; do
        info=$("$STRAND_BIN" cluster info -b "$node" --format json --timeout-ms 2000 2>/dev/null) || return 1
        [ "$(grep -c '"id":' <<<"$info")" -eq 3 ] || return 1
        grep -q '"controller": [0-9]' <<<"$info" || return 1
    done
}
deadline=$((SECONDS + 60))
until cluster_formed; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "librdkafka_suite: the cluster did not form in 60s" >&2; failed=1; exit 1; }
    sleep 0.5
done
cat >"$run/test.conf" <<EOF
bootstrap.servers=$bootstrap
test.timeout.multiplier=$multiplier
EOF

# --- the tests ----------------------------------------------------------------------------
# The do_test_* functions of a test's source that open a sub-test, in source order.
subtest_functions() {
    local file
    file=$(ls "$src/tests/$1"-*.c 2>/dev/null | head -n 1)
    [ -n "$file" ] || return 0
    # A definition starts at column 0 (calls are indented).
    awk '/^([A-Za-z_].*)?do_test_[A-Za-z0-9_]*\(/ {
            match($0, /do_test_[A-Za-z0-9_]*\(/); fn = substr($0, RSTART, RLENGTH - 1) }
         /SUB_TEST(0|_QUICK)?\(/ && fn != "" && !(fn in seen) { seen[fn] = 1; print fn }' "$file"
}

# run_one NAME TEST [SUBTESTS]: one test-runner run, its output in $run/NAME.out
run_one() {
    local name=$1 test=$2 filter=${3:-} rc=0
    (
        cd "$src/tests"
        export LD_LIBRARY_PATH=../src:../src-cpp RDKAFKA_TEST_CONF=$run/test.conf \
            TEST_KAFKA_VERSION=$kafka_version TESTS=$test
        [ -z "$filter" ] || export SUBTESTS=$filter
        # Not exec'd: this shell, not the caller, reports a runner killed by a signal.
        timeout 1200 ./test-runner -p1 -L -S
        exit $?
    ) >"$run/$name.out" 2>&1 || rc=$?
    return "$rc"
}

summary=$run/summary.txt
: >"$summary"
passes=0
fails=0
skips=0
# report NAME RC: the sub-tests of one run, as PASS / SKIP / FAIL lines
report() {
    local out=$run/$1.out rc=$2 line
    sed 's/\x1b\[[0-9;]*m//g' "$out" >"$out.txt"
    while IFS= read -r line; do
        echo "PASS  $line" >>"$summary"
        passes=$((passes + 1))
    done < <(sed -n 's/^.*\[ \(.*\): PASS ([0-9.]*s) \]$/\1/p' "$out.txt")
    while IFS= read -r line; do
        echo "SKIP  $line" >>"$summary"
        skips=$((skips + 1))
    done < <(sed -n 's/^.*\[ \(.*\): SKIP: \(.*\) \]$/\1: \2/p' "$out.txt")
    if [ "$rc" -ne 0 ]; then
        fails=$((fails + 1))
        failed=1
        line=$(grep -m 1 -A 1 '^### Test ' "$out.txt" | tr '\n' ' ' \
            | sed 's/^### Test "\(.*\)" failed at \([^ ]*\) at .*### \(.*\)$/\1 [\2] \3/')
        [ -n "$line" ] || line="$1: the runner exited $rc without a failure line (timeout or crash?)"
        echo "FAIL  $line" >>"$summary"
    fi
}

echo "librdkafka $version ($commit) against Strand ($STRAND_BIN) at $bootstrap"
for test in "${tests[@]}"; do
    functions=()
    [ "$whole" -eq 1 ] || mapfile -t functions < <(subtest_functions "$test")
    if [ ${#functions[@]} -eq 0 ]; then
        echo "== $test"
        rc=0
        run_one "$test" "$test" || rc=$?
        report "$test" "$rc"
    else
        for fn in "${functions[@]}"; do
            echo "== $test $fn"
            rc=0
            run_one "$test-$fn" "$test" "$fn:" || rc=$?
            if [ "$rc" -eq 0 ] && ! grep -q ': PASS (\|: SKIP: ' "$run/$test-$fn.out"; then
                rm -f "$run/$test-$fn.out" # not called by this test's main function
                continue
            fi
            report "$test-$fn" "$rc"
        done
    fi
done

echo
echo "summary (librdkafka $version, TEST_KAFKA_VERSION=$kafka_version):"
cat "$summary"
echo "$passes passed, $fails failed, $skips skipped"
[ "$failed" -eq 0 ]
