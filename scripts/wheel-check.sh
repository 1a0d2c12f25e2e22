#!/usr/bin/env bash
# Installs the wheel `make wheel` built into a fresh virtual environment, then runs
# scripts/wheel_smoke.py there with a PATH that holds that environment alone: no cargo, rustc
# or compiler, as on a user's machine without Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
tag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
shopt -s nullglob
wheels=(dist/oxloop-*-"$tag"-*.whl)
if [ ${#wheels[@]} -ne 1 ]; then
  echo "wheel-check: expected one $tag wheel in dist/, found: ${wheels[*]:-none}" >&2
  exit 1
fi
env_dir=$(mktemp -d /tmp/oxloop-wheel-check.XXXXXX)
trap 'rm -rf "$env_dir"' EXIT
"$python" -m venv "$env_dir/venv"
"$env_dir/venv/bin/pip" install --quiet "${wheels[0]}" trustme
# The interpreter the venv points at lives outside it: a PATH of the venv alone finds no tool.
cd "$env_dir"
env -i HOME="$env_dir" PATH="$env_dir/venv/bin" "$env_dir/venv/bin/python" \
  "$OLDPWD/scripts/wheel_smoke.py"
