"""Servers the tests start for themselves: a throwaway PostgreSQL cluster.

`scripts/test-servers.sh` (run by `make test`) installs PostgreSQL when it is missing; this
module finds its binaries, makes a cluster in a fresh directory, serves it on a free port of
127.0.0.1 with trust authentication, and removes it afterwards. PostgreSQL refuses to run as
root, so as root it runs as the `postgres` user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass


def _postgres_bin(name: str) -> str:
    # Debian keeps the server's programs out of PATH, one directory per major version.
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} not found: run scripts/test-servers.sh")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    database: str


class PostgresCluster:
    """`start()` returns where to connect; `stop()` shuts the server down and removes it."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="oxloop-pg-")
        self._data = os.path.join(self._dir, "data")
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self._dir, "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as_user, *argv], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> Postgres:
        self._run(_postgres_bin("initdb"), "-D", self._data, "-A", "trust", "-U", "postgres")
        # A port found free may be taken before the server binds it: try a few.
        for _ in range(5):
            port = _free_port()
            options = f"-k {self._dir} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
            log = os.path.join(self._dir, "log")
            try:
                self._run(
                    _postgres_bin("pg_ctl"),
                    "-D",
                    self._data,
                    "-l",
                    log,
                    "-o",
                    options,
                    "-w",
                    "start",
                )
            except RuntimeError:
                continue
            return Postgres("127.0.0.1", port, "postgres", "postgres")
        raise RuntimeError("PostgreSQL did not start")

    def stop(self) -> None:
        try:
            self._run(_postgres_bin("pg_ctl"), "-D", self._data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
