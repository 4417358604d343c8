#!/usr/bin/env bash
# Installs the Debian packages Tessera's build, tests and benchmarks need — only those missing.
# Idempotent: when everything is present it prints one line and exits 0 without touching apt.
# Works as root or through sudo on Debian bookworm.
set -euo pipefail

# Build tools.
pkgs=(cmake ninja-build g++ make pkg-config git python3)
# Thrift: the headers need Boost; TNonblockingServer (libthriftnb) needs libevent.
pkgs+=(libthrift-dev thrift-compiler libboost-dev libevent-dev libssl-dev)
# Storage, codec, logging and CLI.
pkgs+=(liblmdb-dev libisal-dev libspdlog-dev libfmt-dev libcli11-dev libxxhash-dev nlohmann-json3-dev
       libcpp-httplib-dev)
# Tests and benchmarks (RocksDB only for side-by-side engine comparisons).
pkgs+=(libgtest-dev libgmock-dev libbenchmark-dev librocksdb-dev)
# Style and fuzzing.
pkgs+=(clang clang-format clang-tidy)

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: missing packages (${missing[*]}) and not root, and no sudo available" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
