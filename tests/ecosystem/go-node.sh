#!/usr/bin/env bash
# Runs the franz-go (tests/ecosystem/go) and kafkajs (tests/ecosystem/node) suites
# against the strand binary. Each suite gets its own fresh broker (two shards) on
# loopback ports 23000-23999; tests inside a suite use unique topic and group names.
#
#   STRAND_BIN      broker binary (default: <repo>/target/release/strand)
#   SUITES          "go node" (default), or just one of them
#   KGO_LOG_LEVEL   debug: franz-go logs every request and response of a failing test
#   GO_TEST_RUN     passed to go test -run
#   NODE_TESTS      node test files to run (default: test/*.test.mjs)
#   KAFKAJS_LOG     debug: kafkajs logs every request of a failing test
#                   (KAFKAJS_LOG_FILE=path keeps the whole log)
#
# Logs of the last run (client test output, broker logs) are kept in
# <repo>/.cache/ecosystem-go-node/.
#
# Ends with "N passed, N failed, N skipped" over both suites; exits non-zero if any
# test failed or a broker died.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STRAND_BIN="${STRAND_BIN:-$REPO/target/release/strand}"
SUITES="${SUITES:-go node}"
CACHE="$REPO/.cache/ecosystem-go-node"
mkdir -p "$CACHE"
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/strand-eco-gonode.XXXXXX")"

BROKER_PID=""
stop_broker() {
  if [ -n "$BROKER_PID" ]; then
    kill -9 "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=""
  fi
}
cleanup() {
  stop_broker
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -x "$STRAND_BIN" ]; then
  echo "go-node.sh: $STRAND_BIN is not an executable: build it or set STRAND_BIN" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_broker NAME PORT: a fresh broker, data in $RUN_DIR/NAME, ready when both
# shard ports accept and the log says ready.
start_broker() {
  local name="$1" port="$2" dir="$RUN_DIR/$1"
  for p in "$port" $((port + 1)); do
    if port_open "$p"; then
      echo "go-node.sh: port $p is already in use" >&2
      return 1
    fi
  done
  mkdir -p "$dir"
  BROKER_LOG="$dir/broker.log"
  : >"$BROKER_LOG"
  "$STRAND_BIN" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" --shards 2 \
    --log-level info </dev/null >/dev/null 2>"$BROKER_LOG" &
  BROKER_PID=$!
  local deadline=$((SECONDS + 30))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      echo "go-node.sh: broker exited during start:" >&2
      cat "$BROKER_LOG" >&2
      BROKER_PID=""
      return 1
    fi
    if grep -q ready "$BROKER_LOG" && port_open "$port" && port_open $((port + 1)); then
      return 0
    fi
    sleep 0.1
  done
  echo "go-node.sh: broker not ready after 30s:" >&2
  cat "$BROKER_LOG" >&2
  return 1
}

# check_broker: fails if the broker died or panicked; prints its log tail then.
check_broker() {
  local ok=0
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    echo "go-node.sh: the broker died during the suite" >&2
    ok=1
  fi
  if grep -q panicked "$BROKER_LOG"; then
    echo "go-node.sh: the broker panicked" >&2
    ok=1
  fi
  cp "$BROKER_LOG" "$CACHE/broker-$1.log"
  if [ $ok -ne 0 ]; then
    tail -n 100 "$BROKER_LOG" >&2
  fi
  return $ok
}

PASSED=0
FAILED=0
SKIPPED=0
STATUS=0

run_go() {
  cd "$HERE/go" || return 1
  if ! go mod download >"$CACHE/go-download.log" 2>&1; then
    cat "$CACHE/go-download.log" >&2
    FAILED=$((FAILED + 1)); STATUS=1; return
  fi
  if ! go vet ./... >"$CACHE/go-vet.log" 2>&1; then
    cat "$CACHE/go-vet.log" >&2
    FAILED=$((FAILED + 1)); STATUS=1; return
  fi
  if ! start_broker go 23000; then
    FAILED=$((FAILED + 1)); STATUS=1; return
  fi
  local out="$CACHE/go-test.log"
  STRAND_BOOTSTRAP=127.0.0.1:23000 go test -count=1 -p 1 -v -timeout 150s ${GO_TEST_RUN:+-run "$GO_TEST_RUN"} ./... 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  # Top-level tests only (subtests are indented).
  local p f s
  p=$(grep -c '^--- PASS' "$out"); f=$(grep -c '^--- FAIL' "$out"); s=$(grep -c '^--- SKIP' "$out")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + s))
  [ "$rc" -ne 0 ] && STATUS=1
  check_broker go || { FAILED=$((FAILED + 1)); STATUS=1; }
  stop_broker
}

run_node() {
  cd "$HERE/node" || return 1
  # Install only when node_modules does not match the lock file.
  if ! grep -q '"version": "2.2.4"' node_modules/kafkajs/package.json 2>/dev/null; then
    if ! npm ci --no-audit --no-fund --loglevel=error >"$CACHE/npm-ci.log" 2>&1; then
      cat "$CACHE/npm-ci.log" >&2
      FAILED=$((FAILED + 1)); STATUS=1; return
    fi
  fi
  if ! start_broker node 23010; then
    FAILED=$((FAILED + 1)); STATUS=1; return
  fi
  local out="$CACHE/node-test.log"
  KAFKAJS_NO_PARTITIONER_WARNING=1 STRAND_BOOTSTRAP=127.0.0.1:23010 node --test --test-concurrency=1 --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$out" ${NODE_TESTS:-test/*.test.mjs} 2>&1
  local rc=$?
  local p f s
  p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out" | tail -1); f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out" | tail -1)
  s=$(awk '/^# (skipped|todo) [0-9]+$/ {n += $3} END {print n + 0}' "$out")
  p=${p:-0}; f=${f:-0}; s=${s:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + s))
  [ "$rc" -ne 0 ] && STATUS=1
  check_broker node || { FAILED=$((FAILED + 1)); STATUS=1; }
  stop_broker
}

for suite in $SUITES; do
  case "$suite" in
    go) run_go ;;
    node) run_node ;;
    *) echo "go-node.sh: unknown suite $suite" >&2; STATUS=1 ;;
  esac
done

echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
exit $STATUS
