#!/usr/bin/env bash
# Installs what the test suite runs beside the project, when it is missing: PostgreSQL, for
# the asyncpg tests (tests/servers.py runs a throwaway cluster on a free port), and tmux, the
# terminal `python -m oxloop top` is tested in (tests/test_monitor.py).
set -euo pipefail
missing=()
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v postgres >/dev/null; then
  missing+=(postgresql)
fi
if ! command -v tmux >/dev/null; then
  missing+=(tmux)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
echo "installing ${missing[*]} (Debian's packages) for the tests"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
