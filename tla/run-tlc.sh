#!/usr/bin/env bash
# Model-checks every tla/*.cfg with TLC. Needs TLA2TOOLS pointing at tla2tools.jar (see
# tla/README.md); without it, says plainly that it skipped and exits 0.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${TLA2TOOLS:-}" ] || [ ! -f "${TLA2TOOLS}" ]; then
  echo "tla: SKIPPED — TLA2TOOLS is not set to an existing tla2tools.jar (see tla/README.md)"
  exit 0
fi
shopt -s nullglob
cfgs=(*.cfg)
if [ ${#cfgs[@]} -eq 0 ]; then
  echo "tla: no specifications yet (no tla/*.cfg)"
  exit 0
fi
status=0
for cfg in "${cfgs[@]}"; do
  spec=${cfg%.cfg}
  spec=${spec%%_*}   # Foo_small.cfg checks Foo.tla
  echo "== TLC $spec.tla with $cfg"
  if ! java -XX:+UseParallelGC -cp "$TLA2TOOLS" tlc2.TLC -workers auto -deadlock \
        -metadir "${TMPDIR:-/tmp}/tlc-states-$$" -config "$cfg" "$spec.tla"; then
    status=1
  fi
done
exit $status
