#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ (or the ones named) for a fixed time each, and keeps every crash as a
# regression input.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]        # default: 60 seconds, every target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Builds into target/fuzz (or
# $CARGO_TARGET_DIR). Each target starts from fuzz/seeds/<target>/ and fuzz/regressions/<target>/, and grows its
# working corpus in fuzz/corpus/<target>/ (not committed). A crash (or timeout, or out-of-memory) is copied to
# fuzz/regressions/<target>/, which the stable regression tests replay (crates/*/tests/fuzz_regressions.rs). Prints
# one line per target (runs, seconds, runs/s, crashes) and exits 1 when any target crashed.
#
# The targets are built without a sanitizer: the workspace denies unsafe code, so AddressSanitizer would slow every
# run without watching any code of ours; overflow checks and debug assertions stay on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is needed: cargo install cargo-fuzz --locked" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/fuzz}"
export CARGO_INCREMENTAL=0
build=(--sanitizer none --codegen-units 16)

if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
cargo +nightly fuzz build "${build[@]}"

logs="$CARGO_TARGET_DIR/fuzz-logs"
mkdir -p "$logs"
failed=0
printf '%-14s %12s %8s %10s %8s\n' target runs seconds runs/s crashes
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target" artifacts="fuzz/artifacts/$target" regressions="fuzz/regressions/$target"
  mkdir -p "$corpus" "$artifacts" "$regressions" "fuzz/seeds/$target"
  status=0
  cargo +nightly fuzz run "${build[@]}" "$target" "$corpus" "fuzz/seeds/$target" "$regressions" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    >"$logs/$target.log" 2>&1 || status=$?
  crashes=0
  for artifact in "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* "$artifacts"/leak-*; do
    [ -e "$artifact" ] || continue
    cp "$artifact" "$regressions/"
    rm "$artifact"
    crashes=$((crashes + 1))
  done
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$target.log" | tail -1)
  elapsed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$logs/$target.log" | tail -1)
  printf '%-14s %12s %8s %10s %8s\n' "$target" "${runs:-?}" "${elapsed:-?}" "${rate:-?}" "$crashes"
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    echo "  $target failed (exit $status); log: $logs/$target.log; inputs kept in $regressions/" >&2
  fi
done
exit "$failed"
