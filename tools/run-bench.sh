#!/usr/bin/env bash
# Runs every benchmark binary that the build produced, one after another (never two at once: the
# machine has 2 cores and the side-by-side ratios need them). Extra arguments go to each binary.
set -euo pipefail
build=${1:-build}
shift || true
found=0
for b in "$build"/bench/*/*_bench "$build"/bench/*/engine_compare; do
  [ -x "$b" ] || continue
  found=1
  echo "== $b"
  "$b" "$@"
done
[ "$found" = 1 ] || echo "run-bench: no benchmark binaries built yet under $build/bench"
