#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 60), starting from the seed
# corpus in tests/fuzz/corpus/<target> (captured from real clients by capture_corpus.py).
#
#   tests/fuzz/run.sh 30        # what CI runs (tests/run.sh, STRAND_FUZZ_SECONDS)
#   tests/fuzz/run.sh 3600      # by hand, longer
#   tests/fuzz/run.sh 600 batch # one target
#
# New inputs libFuzzer finds go to tests/fuzz/corpus-work/<target> (not committed); a crash
# is written to tests/fuzz/artifacts/<target>/ and makes this script exit non-zero. Turn a
# crash into a regression test in src/protocol (see the `fuzz_regressions` tests there) and
# reproduce it with: cargo fuzz run --fuzz-dir tests/fuzz -s none TARGET ARTIFACT
#
# Needs a Rust toolchain; cargo-fuzz is installed from crates.io if missing (~35 s, kept in
# ~/.cargo/bin). A stable toolchain works: cargo-fuzz passes a few unstable rustc flags,
# which RUSTC_BOOTSTRAP=1 lets stable accept. Environment: FUZZ_SANITIZER (default none;
# "address" needs a nightly toolchain), FUZZ_MAX_LEN (default 16384 bytes).
set -euo pipefail
seconds=${1:-60}
shift || true
cd "$(dirname "$0")/../.."
fuzz_dir=tests/fuzz
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
fi
sanitizer=${FUZZ_SANITIZER:-none}
for target in "${targets[@]}"; do
    cargo fuzz build --fuzz-dir "$fuzz_dir" -s "$sanitizer" "$target"
done

failed=0
summary=()
for target in "${targets[@]}"; do
    work="$fuzz_dir/corpus-work/$target"
    seeds="$fuzz_dir/corpus/$target"
    mkdir -p "$work" "$seeds"
    log="$fuzz_dir/corpus-work/$target.log"
    echo "==> fuzzing $target for ${seconds}s"
    status=0
    # The first corpus directory receives new inputs; the committed seeds stay as they are.
    cargo fuzz run --fuzz-dir "$fuzz_dir" -s "$sanitizer" "$target" "$work" "$seeds" -- \
        -max_total_time="$seconds" -max_len="${FUZZ_MAX_LEN:-16384}" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(INFO: seed corpus|#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|.*panicked at|Test unit written)' "$log" | tail -20 || true
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corpus=$(find "$work" -type f | wc -l)
    if [ "$status" -ne 0 ]; then
        failed=1
        summary+=("FAIL  $target: exit $status after ${execs:-?} executions (log: $log)")
    else
        summary+=("PASS  $target: ${execs:-?} executions in ${seconds}s, $corpus new corpus inputs, no crash")
    fi
done
echo
printf '%s\n' "${summary[@]}"
exit "$failed"
