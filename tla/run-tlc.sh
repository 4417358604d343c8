#!/usr/bin/env bash
# Model-checks every tla/*.cfg with TLC. Needs TLA2TOOLS pointing at tla2tools.jar (see
# tla/README.md); without it, says plainly that it SKIPPED and exits 0.
#
#   bash tla/run-tlc.sh            every tla/*.cfg (what `make tla` runs); fails on any violation
#   bash tla/run-tlc.sh findings   every tla/findings/*.cfg; each is expected to be VIOLATED (they
#                                  demonstrate protocol findings) and fails if one is not
#
# TLC_WORKERS (default 2) sets TLC's worker threads. Foo.cfg and Foo_name.cfg check Foo.tla.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${TLA2TOOLS:-}" ] || [ ! -f "${TLA2TOOLS}" ]; then
  echo "tla: SKIPPED — TLA2TOOLS is not set to an existing tla2tools.jar (see tla/README.md)"
  exit 0
fi
mode=${1:-check}
shopt -s nullglob
if [ "$mode" = findings ]; then
  cfgs=(findings/*.cfg)
else
  cfgs=(*.cfg)
fi
if [ ${#cfgs[@]} -eq 0 ]; then
  echo "tla: no configurations (no tla/*.cfg)"
  exit 0
fi
metadir="${TMPDIR:-/tmp}/tlc-states-$$"
trap 'rm -rf "$metadir"' EXIT
status=0
for cfg in "${cfgs[@]}"; do
  spec=$(basename "$cfg" .cfg)
  spec=${spec%%_*}   # Foo_small.cfg checks Foo.tla
  echo "== TLC $spec.tla with $cfg"
  log=$(mktemp)
  rc=0
  # -deadlock: a finished run (manager and workers exited) is a final state, not a deadlock.
  # -noGenerateSpecTE: no trace-exploration modules written next to the specs.
  java -XX:+UseParallelGC -cp "$TLA2TOOLS" tlc2.TLC -workers "${TLC_WORKERS:-2}" -deadlock -noGenerateSpecTE \
    -metadir "$metadir/$spec" -config "$cfg" "$spec.tla" >"$log" 2>&1 || rc=$?
  if [ "$mode" = findings ]; then
    grep -E "^Error: |violated|states generated|depth of|^State [0-9]+:|Stuttering|Back to state" \
      "$log" | sed 's/ line [0-9].*//' || true
    if grep -qE "is violated|properties were violated" "$log"; then
      echo "-- $cfg: violated, as this finding expects"
    else
      echo "-- $cfg: NOT violated (the finding no longer reproduces; update tla/README.md)"
      status=1
    fi
  else
    cat "$log"
    [ $rc -eq 0 ] || status=1
  fi
  rm -f "$log"
done
exit $status
