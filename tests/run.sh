#!/usr/bin/env bash
# Runs every test of Strand on a fresh machine: installs what the tests need (kcat from
# apt, the Python Kafka clients in .venv), builds, runs the Rust unit and integration
# tests (including the rdkafka client tests), the real-client suite in tests/compat (with
# the short crash loop and the hostile-client tests), then a bounded fuzz run (tests/fuzz).
#
# Needs: a Rust toolchain, python3 (3.11+) with venv/pip, network access to apt, PyPI and
# crates.io. Run as root or as a user with sudo (only for apt). Exits non-zero if any step
# failed; later steps still run when they can, and a summary is printed at the end.
#
# Arguments are passed on to pytest (e.g. tests/run.sh -x -k "kcat or bad_input").
# Environment: STRAND_BIN (the broker the Python suite starts; default
# target/release/strand), PYTEST_ARGS (more pytest arguments, split on spaces),
# STRAND_FUZZ_SECONDS (time per fuzz target, default 30; 0 skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$SECONDS

current="start"
step() { current="$*"; printf '\n==> %s\n' "$*"; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "need root (or sudo) to run: $*" >&2
        return 1
    fi
}
apt_install() {
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

results=()
failed=0
record() { # record NAME STATUS
    if [ "$2" -eq 0 ]; then
        results+=("PASS  $1")
    else
        results+=("FAIL  $1 (exit $2)")
        failed=1
    fi
}
summary() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        results+=("FAIL  $current (exit $rc)")
        failed=1
    fi
    printf '\n==> summary (%ds)\n' $((SECONDS - started))
    printf '    %s\n' "${results[@]}"
    if [ "$failed" -ne 0 ]; then
        echo "    SOME TESTS FAILED"
    else
        echo "    all passed"
    fi
    local passed_steps failed_steps
    passed_steps=$(printf '%s\n' "${results[@]}" | grep -c '^PASS' || true)
    failed_steps=$(printf '%s\n' "${results[@]}" | grep -c '^FAIL' || true)
    echo "steps: $passed_steps passed, $failed_steps failed"
}
trap 'summary' EXIT

# ---------------------------------------------------------------------------- tools
step "installing test tools"
if ! command -v kcat >/dev/null 2>&1; then
    apt_install kcat
fi
kcat -V | grep -m1 '^Version' || true

python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "python3 is $("$python" --version 2>&1); the suite needs 3.11+" >&2
    exit 1
fi

requirements=tests/compat/requirements.txt
stamp=.venv/.requirements.sha256
# The stamp covers the requirements and the interpreter the venv was made from.
want=$( (cat "$requirements"; "$python" -VV) | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # A venv whose interpreter is gone (python upgraded) is rebuilt; a working one is
    # updated in place (pip installs only what the pins change).
    .venv/bin/python -c '' 2>/dev/null || rm -rf .venv
    if ! "$python" -m venv .venv 2>/dev/null; then
        # Debian's python3 ships venv/ensurepip separately.
        rm -rf .venv
        pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        apt_install "python${pyver}-venv" || apt_install python3-venv
        "$python" -m venv .venv
    fi
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r "$requirements"
    echo "$want" > "$stamp"
fi
.venv/bin/python -c 'import confluent_kafka as c, kafka, aiokafka; print(f"confluent-kafka {c.__version__} (librdkafka {c.libversion()[0]}) | kafka-python {kafka.__version__} | aiokafka {aiokafka.__version__}")'

# The ecosystem suites' toolchains: Java 17 + Maven (Apache Kafka, the Java client,
# Streams, Connect), Go (franz-go), Node.js + npm (kafkajs). Installed from Debian's
# packages where missing; the libraries themselves come from Maven Central, the Go module
# proxy and npm when the suites run.
ecosystem_suites=(cli.sh java-clients.sh streams-connect.sh go-node.sh)
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}" || echo "could not install ${missing[*]}; the suites that need them will fail"
fi
echo "$(java -version 2>&1 | head -1) | $(mvn -v 2>/dev/null | head -1) | $(go version 2>&1) | node $(node --version 2>&1)"
tests/ecosystem/kafka.sh install >/dev/null \
    || echo "Apache Kafka did not install; the suites that need it will fail"
record "installing test tools" 0

# ---------------------------------------------------------------------------- layers
step "module layers (no import cycle, no upward import in src/)"
status=0
"$python" tools/layers.py src || status=$?
record "tools/layers.py" "$status"

# ---------------------------------------------------------------------------- build
step "building"
status=0
cargo build --release --bin strand || status=$?
record "cargo build --release --bin strand" "$status"
release_ok=$status

# ---------------------------------------------------------------------------- rust tests
step "cargo test (unit tests, wire-level tests, rdkafka client tests)"
status=0
RUST_TEST_THREADS=2 cargo test --all-targets || status=$?
record "cargo test --all-targets" "$status"

# ---------------------------------------------------------------------------- client suite
step "real-client suite (kcat, confluent-kafka, kafka-python, aiokafka)"
export STRAND_BIN="${STRAND_BIN:-$root/target/release/strand}"
if [ "$release_ok" -ne 0 ] && [ "$STRAND_BIN" = "$root/target/release/strand" ]; then
    echo "skipped: the release build failed"
    record "pytest tests/compat" 1
else
    status=0
    # shellcheck disable=SC2086 # PYTEST_ARGS is a list of words
    .venv/bin/python -m pytest tests/compat -v -rfE -p no:cacheprovider --timeout 300 \
        -W ignore::DeprecationWarning ${PYTEST_ARGS:-} "$@" || status=$?
    record "pytest tests/compat" "$status"
fi

# ---------------------------------------------------------------------------- ecosystem
# Kafka's own CLI tools, the Java client, Streams and Connect (Apache Kafka 4.x from Maven
# Central), franz-go and kafkajs, each against a Strand these scripts start themselves.
# They install what they need (Maven, the Go module proxy, npm) into caches, so a second
# run is offline. SKIP_ECOSYSTEM=1 skips them.
if [ "${SKIP_ECOSYSTEM:-0}" != 1 ]; then
    for suite in "${ecosystem_suites[@]}"; do
        step "ecosystem: $suite"
        if [ "$release_ok" -ne 0 ] && [ "$STRAND_BIN" = "$root/target/release/strand" ]; then
            echo "skipped: the release build failed"
            record "tests/ecosystem/$suite" 1
            continue
        fi
        status=0
        "tests/ecosystem/$suite" || status=$?
        record "tests/ecosystem/$suite" "$status"
    done
fi

# ---------------------------------------------------------------------------- fuzzing
# Bounded: each fuzz target for STRAND_FUZZ_SECONDS (0 skips it). Longer runs by hand:
# tests/fuzz/run.sh SECONDS.
fuzz_seconds=${STRAND_FUZZ_SECONDS:-30}
if [ "$fuzz_seconds" -gt 0 ]; then
    step "fuzzing request decoding, batch validation and inter-node frames (${fuzz_seconds}s per target)"
    status=0
    tests/fuzz/run.sh "$fuzz_seconds" || status=$?
    record "tests/fuzz/run.sh $fuzz_seconds" "$status"
fi

exit "$failed"
