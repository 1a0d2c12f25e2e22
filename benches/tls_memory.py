"""Memory of a TLS server over many handshakes: asyncio vs uvloop vs oxloop, side by side.

    .venv/bin/python benches/tls_memory.py                  # 100,000 handshakes per loop
    .venv/bin/python benches/tls_memory.py --handshakes 20000 --loops oxloop

Each loop's TLS echo server (``benches/echo_server.py --tls-cert``) runs pinned to CPU 0; the
load generator (``benches/loadgen --churn --tls``, rustls without session resumption) makes
one full handshake, one 64 B echo and one close per connection from CPU 1. After a warm-up of
50,000 handshakes (the C allocator's heap takes that long to settle: a server's resident
memory rises by a MiB or two over the first hundred thousand connections, then stays) the
server's resident memory (``VmRSS`` from ``/proc``) is read, then again once
``--handshakes`` more have completed; the growth per 1,000 handshakes is reported. A server
that keeps something per connection grows steadily; one that does not stays flat.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import echo

WARMUP = 50_000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def handshakes(address: str, count: int, workdir: Path, pins: list[str]) -> int:
    """Runs the load generator until `count` handshakes completed; returns how many did."""
    done = 0
    while done < count:
        cmd = [
            *pins,
            str(echo.LOADGEN),
            "--tcp",
            address,
            "--conns",
            "8",
            "--size",
            "64",
            "--churn",
            "1",
            "--tls",
            str(workdir / "ca.pem"),
            "--duration",
            "2",
            "--warmup",
            "0",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        done += json.loads(out.stdout.strip().splitlines()[-1])["messages"]
    return done


def measure(loop: str, count: int, workdir: Path, pins: tuple[list[str], list[str]]) -> dict:
    server = [
        *pins[0],
        sys.executable,
        str(echo.PY_SERVER),
        "--loop",
        loop,
        "--tcp",
        "127.0.0.1:0",
        *echo.tls_server_args(workdir),
    ]
    proc = subprocess.Popen(server, stdout=subprocess.PIPE, start_new_session=True)
    echo.LIVE.add(proc)
    try:
        address = echo.read_address(proc, workdir / "none")
        handshakes(address, WARMUP, workdir, pins[1])
        before = rss_kib(proc.pid)
        made = handshakes(address, count, workdir, pins[1])
        after = rss_kib(proc.pid)
    finally:
        echo.stop_server(proc)
    return {
        "loop": loop,
        "handshakes": made,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "growth_kib_per_1000": (after - before) * 1000 / made,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=100_000)
    parser.add_argument("--loops", default="asyncio,uvloop,oxloop")
    args = parser.parse_args(argv)
    loops = echo.available_loops([x.strip() for x in args.loops.split(",") if x.strip()])
    echo.ensure_loadgen()
    pins = echo.pinning(True)
    workdir = Path(tempfile.mkdtemp(prefix="oxloop-tls-memory-"))
    echo.make_certificates(workdir)
    rows = []
    for loop in loops:
        result = measure(loop, args.handshakes, workdir, pins)
        print(
            f"{loop:8} {result['handshakes']:>7,} handshakes: RSS {result['rss_before_kib']:,}"
            f" -> {result['rss_after_kib']:,} KiB "
            f"({result['growth_kib_per_1000']:+.1f} KiB per 1,000)",
            flush=True,
        )
        rows.append(
            [
                loop,
                f"{result['handshakes']:,}",
                f"{result['rss_before_kib'] / 1024:.1f}",
                f"{result['rss_after_kib'] / 1024:.1f}",
                f"{result['growth_kib_per_1000']:+.1f}",
            ]
        )
    print()
    echo.print_markdown(
        ["loop", "handshakes", "RSS before MiB", "RSS after MiB", "KiB per 1,000"], rows
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
