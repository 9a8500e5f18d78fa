#!/usr/bin/env bash
# The Apache Kafka Java client (kafka-clients, see java-clients/pom.xml) against Strand.
#
# Usage: STRAND_BIN=/path/to/strand tests/ecosystem/java-clients.sh [-Dtest=ClassName#method]
# Needs Java 17 and Maven; the client and JUnit come from Maven Central into ~/.m2 on the
# first run. Each test class starts its own two-shard broker on loopback ports 22000-22499
# with a fresh data dir under .cache/eco-java/, and kills it when done; this script kills
# whatever a crashed test JVM may have left running.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
STRAND_BIN="${STRAND_BIN:-$REPO/target/release/strand}"
case "$STRAND_BIN" in /*) ;; *) STRAND_BIN="$PWD/$STRAND_BIN" ;; esac
if [ ! -x "$STRAND_BIN" ]; then
    echo "java-clients: $STRAND_BIN is not an executable: build it or set STRAND_BIN" >&2
    exit 2
fi
for tool in java mvn; do
    command -v "$tool" >/dev/null || { echo "java-clients: $tool not found (Java 17 + Maven needed)" >&2; exit 2; }
done

WORK="$REPO/.cache/eco-java"
rm -rf "$WORK"
mkdir -p "$WORK"

MVN_PID=
cleanup() {
    # Maven runs in its own session (setsid): stop it and its forked test JVM by group id.
    if [ -n "$MVN_PID" ]; then
        kill -TERM -- "-$MVN_PID" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$MVN_PID" 2>/dev/null || true
    fi
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
        done < "$WORK/pids"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Offline once a run has fetched everything this pom needs (warm CI); online otherwise, and
# again online if the offline run found something missing from the local repository.
MVN=(mvn -B -q -Dstyle.color=never -f "$HERE/java-clients/pom.xml" -Dstrand.bin="$STRAND_BIN" -Dstrand.workdir="$WORK")
REPORTS="$HERE/java-clients/target/surefire-reports"
STAMP="$REPO/.cache/eco-java-m2-$(sha1sum "$HERE/java-clients/pom.xml" | cut -c1-12)"
rm -rf "$REPORTS"
# Runs Maven in the background (so that a signal to this script stops it at once); its
# output goes to $WORK/mvn.log.
run_mvn() {
    setsid "${MVN[@]}" "$@" >"$WORK/mvn.log" 2>&1 &
    MVN_PID=$!
    wait "$MVN_PID"
    local rc=$?
    MVN_PID=
    return $rc
}

status=0
online=1
if [ -f "$STAMP" ]; then
    online=0
    run_mvn -o test "$@" || status=$?
    if [ $status -ne 0 ] && grep -q "offline mode" "$WORK/mvn.log"; then
        echo "java-clients: the local Maven repository misses an artifact; running online"
        online=1
    else
        cat "$WORK/mvn.log"
    fi
fi
if [ $online -eq 1 ]; then
    status=0
    run_mvn test "$@" || status=$?
    cat "$WORK/mvn.log"
    if ls "$REPORTS"/TEST-*.xml >/dev/null 2>&1; then touch "$STAMP"; fi
fi

# Surefire's own closing line ("Tests run: N, Failures: F, Errors: E, Skipped: S") is printed
# by -q runs only on failure, so print the totals from its reports.
python3 - "$REPORTS" "$status" <<'PY' || true
import glob, sys, xml.etree.ElementTree as ET
t = f = e = s = 0
for path in glob.glob(sys.argv[1] + "/TEST-*.xml"):
    r = ET.parse(path).getroot()
    t += int(r.get("tests", 0)); f += int(r.get("failures", 0))
    e += int(r.get("errors", 0)); s += int(r.get("skipped", 0))
    for case in r.iter("testcase"):
        for kind in ("failure", "error"):
            for el in case.iter(kind):
                print(f"FAILED {r.get('name')}.{case.get('name')}: {(el.get('message') or '')[:300]}")
if t == 0 and sys.argv[2] != "0":
    e = 1  # Maven failed before any test ran (compilation, resolution): count it as a failure
print(f"Tests run: {t}, Failures: {f}, Errors: {e}, Skipped: {s}")
print(f"{max(0, t - f - e - s)} passed, {f + e} failed, {s} skipped")
PY
exit $status
