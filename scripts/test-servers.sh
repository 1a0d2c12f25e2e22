#!/usr/bin/env bash
# Installs the servers the test suite starts for itself, when they are missing: PostgreSQL,
# for the asyncpg tests (tests/servers.py runs a throwaway cluster on a free port).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
echo "installing PostgreSQL (Debian's postgresql package) for the asyncpg tests"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
