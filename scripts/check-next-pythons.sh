#!/usr/bin/env bash
# Compiles the extension for the CPython releases no interpreter of this machine provides
# (3.14, 3.15): PyO3 builds against its own declarations of each version's C API, given a
# configuration file in place of an interpreter, so a use of an API those versions dropped or
# changed fails here. Nothing is linked or run.
set -euo pipefail
cd "$(dirname "$0")/.."
for version in 3.14 3.15; do
  config=$(mktemp)
  trap 'rm -f "$config"' EXIT
  printf '%s\n' implementation=CPython "version=$version" shared=true abi3=false \
    "lib_name=python$version" pointer_width=64 build_flags= \
    suppress_build_script_link_lines=true > "$config"
  echo "== cargo check against CPython $version"
  PYO3_CONFIG_FILE="$config" CARGO_TARGET_DIR="target/check-$version" cargo check --quiet
  rm -f "$config"
done
