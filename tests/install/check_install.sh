#!/usr/bin/env bash
# Installs the build tree into a temporary prefix, then builds and runs a tiny out-of-tree program
# against it twice: with CMake's find_package(tessera) and with pkg-config.
set -euo pipefail
build=$1
consumer=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-install-XXXXXX")
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
echo "installed into $work/prefix"

cmake -S "$consumer" -B "$work/cmake-build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
"$work/cmake-build/consumer"

libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -1)
flags=$(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs tessera)
# shellcheck disable=SC2086
g++ -std=c++20 "$consumer/main.cc" -o "$work/pc-consumer" $flags -Wl,-rpath,"$(dirname "$libdir")"
"$work/pc-consumer"
echo "find_package and pkg-config consumers both built and ran"
