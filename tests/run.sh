#!/usr/bin/env bash
# Runs every test of Strand on a fresh machine: installs what the tests need (kcat from
# apt, the Python Kafka clients in .venv), builds, runs the Rust unit and integration
# tests (including the rdkafka client tests), then the real-client suite in tests/compat.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

step "installing test tools"
if ! command -v kcat >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat
fi
kcat -V | head -1

requirements=tests/compat/requirements.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r "$requirements"
    echo "$want" > "$stamp"
fi
.venv/bin/python -c 'import confluent_kafka, kafka, aiokafka; print("confluent-kafka", confluent_kafka.version()[0], "librdkafka", confluent_kafka.libversion()[0], "| kafka-python", kafka.__version__, "| aiokafka", aiokafka.__version__)'

step "building"
cargo build --release --bin strand
cargo build --all-targets

step "cargo test (unit tests, wire-level tests, rdkafka client tests)"
cargo test --all-targets -- --test-threads 2

step "real-client suite (kcat, confluent-kafka, kafka-python, aiokafka)"
STRAND_BIN="$root/target/release/strand" .venv/bin/python -m pytest tests/compat -v -p no:cacheprovider --timeout 300
