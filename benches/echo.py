"""Echo benchmark: asyncio vs uvloop vs oxloop servers, and a pure-Rust floor, under one load.

Each cell of the table is one echo server -- a loop (asyncio, uvloop, oxloop), an API style
(mode) and a transport -- driven by the same closed-loop load generator:

    protocol  ``asyncio.Protocol``: ``data_received`` -> ``transport.write``
              (UDP: ``DatagramProtocol``: ``datagram_received`` -> ``sendto``)
    streams   ``asyncio.start_server``: ``reader.read(65536)``, ``writer.write``, ``drain``
    sock      ``loop.sock_accept`` / ``sock_recv`` / ``sock_sendall``, one task per connection

on TCP and Unix sockets with 1 KiB, 16 KiB and 100 KiB messages, plus UDP (protocol mode,
1 KiB). Asked for by mode (``make bench-connections``), more rows measure the connection life cycle
and TLS:

    churn     the protocol server, under a load generator that opens a connection, sends
              64 B, waits for the echo and closes it, over and over (``loadgen --churn``):
              each "message" is one connection accepted, echoed and closed
    tls-churn the same over TLS (``ssl=`` on ``create_server``; the load generator speaks
              rustls, without session resumption): a full handshake per connection
    tls       the TLS protocol server echoing 1 KiB and 64 KiB on established connections
    uvicorn   a hello-world ASGI app on uvicorn (httptools) and on ``aiohttp.web``
    aiohttp   (``benches/http_server.py``) under keep-alive GET requests (``loadgen --http``)

(``--only churn,tls-churn,tls,uvicorn,aiohttp``). The HTTP rows have no Rust floor; the TLS
rows' floor speaks TLS through rustls (the Python servers' is the interpreter's OpenSSL: the
same protocol work by another library).
 The "rust" column is ``benches/loadgen``'s ``echo-server``: single-threaded epoll in
plain Rust, the same work with no interpreter -- the floor any Python loop is measured against.

Method
------
The server (``benches/echo_server.py``, or the Rust one) runs as a fresh subprocess pinned to
CPU 0 (``taskset -c 0``); the load generator (``benches/loadgen``, a single-threaded epoll
client in Rust) is pinned to CPU 1. ``--conns`` connections (default 10) each send a message,
wait for all of it to be echoed back (every byte is checked), and send the next. After a
warm-up the load generator counts the messages completed in a ``--duration`` window and reads
the server's CPU time (utime + stime from ``/proc/PID/stat``) as the window opens and as it
closes -- read by the load generator itself, so no signalling between processes shifts the
window. Reported per cell: messages per second, the server's CPU microseconds per message
(the cost of an echo on that loop, much less sensitive than throughput to what else the
machine is doing, though it falls somewhat as a busier server handles more messages per
wake-up), and oxloop's CPU per message relative to uvloop's and asyncio's (below 1: oxloop
spends less). Rounds are
interleaved across the loops (asyncio, uvloop, oxloop, rust, asyncio, ...) so machine noise
spreads evenly, and the median of ``--rounds`` rounds is reported. Every server is stopped
(SIGTERM, then SIGKILL) after its run and its Unix socket file removed.

CPU time in ``/proc/PID/stat`` is counted in clock ticks (10 ms), so a 2 s window at half a
core is read to about 2%. On loopback the kernel's work for a send (including delivery to the
receiving socket) is charged to the sender, so CPU per message includes the TCP/IP or Unix
socket path: the Rust column shows how much of it no event loop can avoid.

Each Python server first frees a 1 MiB block so that glibc's malloc is in the same state in
every one (``settle_malloc`` in ``benchutil.py``): asyncio's transports read into a 256 KiB
buffer, and in a process that has never freed a block that large each read costs an mmap, an
mremap and a munmap, which tripled asyncio's CPU per message here while oxloop's start-up
happened to avoid it. ``--cold-malloc`` measures the servers as start-up left them.

The load generator is built on demand (``cargo build --release --manifest-path
benches/loadgen/Cargo.toml``, skipped when its binaries are newer than its sources).

Usage (from the repository root, after ``make build``; ``make bench-echo`` runs the first)::

    .venv/bin/python benches/echo.py                        # everything, 3 rounds of 2 s
    .venv/bin/python benches/echo.py --quick                # 1 round of 1 s
    .venv/bin/python benches/echo.py --only protocol,tcp,1k --rounds 5
    .venv/bin/python benches/echo.py --only udp --loops uvloop,oxloop --json /tmp/udp.json

``--only`` takes modes, transports and sizes (``1k``, ``16k``, ``100k``); a cell runs when it
matches one of the given values in each category given. The last thing printed is a markdown
table for docs/benchmarks.md. uvloop is optional: without it its columns are left out.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import importlib
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchutil import print_markdown

ROOT = Path(__file__).resolve().parent.parent
LOADGEN_DIR = ROOT / "benches" / "loadgen"
LOADGEN = LOADGEN_DIR / "target" / "release" / "loadgen"
RUST_SERVER = LOADGEN_DIR / "target" / "release" / "echo-server"
PY_SERVER = ROOT / "benches" / "echo_server.py"
HTTP_SERVER = ROOT / "benches" / "http_server.py"

LOOP_NAMES = ("asyncio", "uvloop", "oxloop", "oxloop-nostats", "rust")
# oxloop-nostats (oxloop with its statistics off) runs only when named, to measure what the
# statistics cost: --loops oxloop,oxloop-nostats.
DEFAULT_LOOPS = ("asyncio", "uvloop", "oxloop", "rust")
MODES = ("protocol", "streams", "sock", "churn", "tls-churn", "tls", "uvicorn", "aiohttp")
TRANSPORTS = ("tcp", "unix", "udp")
SIZES = {
    "64": 64,
    "1k": 1024,
    "16k": 16 * 1024,
    "64k": 64 * 1024,
    "100k": 100 * 1024,
    "hello": len(b"Hello, world!"),
}
SIZE_NAMES = {
    "64": "64 B",
    "1k": "1 KiB",
    "16k": "16 KiB",
    "64k": "64 KiB",
    "100k": "100 KiB",
    "hello": "hello world",
}

SERVER_CPU = 0
CLIENT_CPU = 1
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0

# Servers started and not yet reaped, killed at exit whatever happens.
LIVE: set[subprocess.Popen[bytes]] = set()


@dataclass(frozen=True)
class Row:
    mode: str
    transport: str
    size: str  # a key of SIZES

    @property
    def nbytes(self) -> int:
        return SIZES[self.size]

    def label(self) -> str:
        return f"{self.mode} {self.transport} {self.size}"


ECHO_MODES = ("protocol", "streams", "sock")
ECHO_SIZES = ("1k", "16k", "100k")
ALL_ROWS = [Row(m, t, s) for m in ECHO_MODES for t in ("tcp", "unix") for s in ECHO_SIZES] + [
    Row("protocol", "udp", "1k")
]
# The connection rows (`make bench-connections`), run only when their modes are named: churn,
# the protocol server with each connection carrying one 64 B message, closed by the client;
# tls-churn, the same over TLS (a full handshake per connection); tls, the TLS protocol server
# echoing on established connections.
# uvicorn and aiohttp: a hello-world HTTP server (benches/http_server.py) under keep-alive
# requests, one in flight per connection (loadgen --http).
CONNECTION_MODES = ("churn", "tls-churn", "tls", "uvicorn", "aiohttp")
HTTP_MODES = ("uvicorn", "aiohttp")
# Rows without a Rust floor.
NO_FLOOR_MODES = HTTP_MODES
CONNECTION_ROWS = [
    Row("churn", "tcp", "64"),
    Row("churn", "unix", "64"),
    Row("tls-churn", "tcp", "64"),
    Row("tls", "tcp", "1k"),
    Row("tls", "tcp", "64k"),
    Row("uvicorn", "tcp", "hello"),
    Row("aiohttp", "tcp", "hello"),
]


class RunError(Exception):
    """One server run failed; its cell is reported as an error."""


# --- building and pinning ---------------------------------------------------------------------


def ensure_loadgen() -> None:
    """Builds benches/loadgen in release mode unless its binaries are newer than its sources."""
    sources = [LOADGEN_DIR / "Cargo.toml", LOADGEN_DIR / "Cargo.lock"]
    sources += sorted((LOADGEN_DIR / "src").rglob("*.rs"))
    newest = max(p.stat().st_mtime for p in sources if p.exists())
    if all(b.exists() and b.stat().st_mtime >= newest for b in (LOADGEN, RUST_SERVER)):
        return
    cargo = shutil.which("cargo")
    if cargo is None:
        sys.exit("echo.py: cargo is needed to build benches/loadgen (https://rustup.rs)")
    print("building benches/loadgen (cargo build --release)", file=sys.stderr, flush=True)
    cmd = [
        cargo,
        "build",
        "--release",
        "--quiet",
        "--manifest-path",
        str(LOADGEN_DIR / "Cargo.toml"),
    ]
    if subprocess.run(cmd).returncode != 0:
        sys.exit("echo.py: building benches/loadgen failed")
    for b in (LOADGEN, RUST_SERVER):  # cargo leaves an up-to-date binary's mtime alone
        b.touch()


def pinning(wanted: bool) -> tuple[list[str], list[str]]:
    """taskset prefixes for the server and the load generator, or none (with a warning)."""
    if not wanted:
        return [], []
    taskset = shutil.which("taskset")
    if taskset is None:
        print(
            "WARNING: taskset not found (it is part of util-linux): server and load generator "
            "run unpinned, so they share CPUs with each other and everything else; expect "
            "noisier numbers",
            file=sys.stderr,
        )
        return [], []
    allowed = os.sched_getaffinity(0)
    if not {SERVER_CPU, CLIENT_CPU} <= allowed:
        print(
            f"WARNING: CPUs {SERVER_CPU} and {CLIENT_CPU} are not both available "
            f"(allowed: {sorted(allowed)}): running unpinned",
            file=sys.stderr,
        )
        return [], []
    return [taskset, "-c", str(SERVER_CPU)], [taskset, "-c", str(CLIENT_CPU)]


# --- one run ----------------------------------------------------------------------------------


def make_certificates(workdir: Path) -> None:
    """A throwaway CA (ca.pem, for the load generator) and a certificate for localhost signed
    by it (server.pem, server.key), for the TLS rows."""
    try:
        import trustme
    except ImportError:
        sys.exit("echo.py: the TLS rows need trustme (pip install -r requirements-test.txt)")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(workdir / "server.pem"))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(workdir / "server.pem"), append=True)
    cert.private_key_pem.write_to_path(str(workdir / "server.key"))


def tls_server_args(workdir: Path) -> list[str]:
    return ["--tls-cert", str(workdir / "server.pem"), "--tls-key", str(workdir / "server.key")]



def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to its whole process group if it has not exited in time."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        LIVE.discard(proc)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(LIVE):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        LIVE.discard(proc)


def read_address(proc: subprocess.Popen[bytes], errlog: Path) -> str:
    """The first line the server prints: the address it listens on."""
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunError(f"the server did not start listening in {STARTUP_TIMEOUT:g} s")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                proc.wait(STOP_TIMEOUT)
                raise RunError(
                    f"the server exited (status {proc.returncode}) before listening{tail(errlog)}"
                )
            line += chunk
    return line.decode().strip()


def tail(path: Path, limit: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f":\n{text[-limit:]}" if text else ""


def run_once(
    server_cmd: list[str],
    row: Row,
    args: argparse.Namespace,
    pins: tuple[list[str], list[str]],
    workdir: Path,
    serial: int,
) -> dict[str, Any]:
    """Starts one server, loads it for warm-up + duration, stops it; the load generator's
    report with the server's CPU per message added."""
    sock_path = workdir / f"echo-{serial}.sock"
    where = str(sock_path) if row.transport == "unix" else "127.0.0.1:0"
    errlog = workdir / f"server-{serial}.err"
    if row.mode.startswith("tls"):
        server_cmd = [*server_cmd, *tls_server_args(workdir)]
    with open(errlog, "wb") as err:
        proc = subprocess.Popen(
            [*pins[0], *server_cmd, f"--{row.transport}", where],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,  # SIGKILL reaches anything it started
        )
    LIVE.add(proc)
    try:
        address = read_address(proc, errlog)
        cmd = [
            *pins[1],
            str(LOADGEN),
            f"--{row.transport}",
            address,
            "--conns",
            str(args.conns),
            "--size",
            str(row.nbytes),
            "--duration",
            repr(args.duration),
            "--warmup",
            repr(args.warmup),
            "--pid",
            str(proc.pid),
        ]
        if row.mode in ("churn", "tls-churn"):
            cmd += ["--churn", "1"]
        if row.mode.startswith("tls"):
            cmd += ["--tls", str(workdir / "ca.pem")]
        if row.mode in HTTP_MODES:
            cmd += ["--http", "/"]
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=args.warmup + args.duration + 60,
            )
        except subprocess.TimeoutExpired as exc:
            raise RunError("the load generator did not finish") from exc
        if done.returncode != 0 or not done.stdout.strip():
            raise RunError(
                f"the load generator failed (status {done.returncode}): "
                f"{done.stderr.strip()[-1500:]}{tail(errlog)}"
            )
        if proc.poll() is not None:
            raise RunError(
                f"the server exited (status {proc.returncode}) during the run{tail(errlog)}"
            )
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        stop_server(proc)
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
    if proc.returncode not in (0, -signal.SIGTERM):
        print(f"    note: the server exited with status {proc.returncode}{tail(errlog)}")
    errlog.unlink(missing_ok=True)
    if report["messages"] <= 0:
        raise RunError("no message completed in the measured window")
    cpu = report.get("server_cpu_s")
    report["cpu_us_per_msg"] = None if cpu is None else cpu * 1e6 / report["messages"]
    report["server_cpu_share"] = None if cpu is None else cpu / report["seconds"]
    return report


# --- the whole table --------------------------------------------------------------------------


def server_command(loop: str, mode: str, cold_malloc: bool) -> list[str]:
    if loop == "rust":
        return [str(RUST_SERVER)]
    if mode in HTTP_MODES:
        return [sys.executable, str(HTTP_SERVER), "--loop", loop, "--app", mode]
    # The connection rows are served by the protocol server; the load (and TLS) differ.
    mode = "protocol" if mode in CONNECTION_MODES else mode
    cmd = [sys.executable, str(PY_SERVER), "--loop", loop, "--mode", mode]
    return [*cmd, "--cold-malloc"] if cold_malloc else cmd


def available_loops(names: list[str]) -> list[str]:
    """The chosen loops that can run, in the table's order."""
    found = []
    for name in (n for n in LOOP_NAMES if n in names):
        if name not in ("asyncio", "rust"):
            try:
                importlib.import_module(name.removesuffix("-nostats"))
            except ImportError as exc:
                print(
                    f"note: {name} is not importable ({exc}); its columns are left out",
                    file=sys.stderr,
                )
                continue
        found.append(name)
    return found


def select_rows(only: str, parser: argparse.ArgumentParser) -> list[Row]:
    wanted: dict[str, set[str]] = {"mode": set(), "transport": set(), "size": set()}
    for token in (t.strip().lower() for t in only.split(",")):
        if not token:
            continue
        if token in MODES:
            wanted["mode"].add(token)
        elif token in TRANSPORTS:
            wanted["transport"].add(token)
        elif token in SIZES:
            wanted["size"].add(token)
        else:
            parser.error(
                f"--only: unknown {token!r}; modes {', '.join(MODES)}, transports "
                f"{', '.join(TRANSPORTS)}, sizes {', '.join(SIZES)}"
            )
    candidates = ALL_ROWS
    if wanted["mode"] & set(CONNECTION_MODES):
        candidates = ALL_ROWS + CONNECTION_ROWS
    rows = [
        r
        for r in candidates
        if all(not chosen or getattr(r, field) in chosen for field, chosen in wanted.items())
    ]
    if not rows:
        parser.error(f"--only {only!r} selects no cell")
    return rows


def median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def summarize(runs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if not runs:
        return None
    return {
        "msgs_per_s": median([r["msgs_per_s"] for r in runs]),
        "cpu_us_per_msg": median([r["cpu_us_per_msg"] for r in runs]),
        "server_cpu_share": median([r["server_cpu_share"] for r in runs]),
        "p50_us": median([r["p50_us"] for r in runs]),
        "p99_us": median([r["p99_us"] for r in runs]),
        "runs": runs,
    }


def describe(report: dict[str, Any]) -> str:
    cpu = report["cpu_us_per_msg"]
    share = report["server_cpu_share"]
    parts = [f"{report['msgs_per_s']:>9,.0f} msg/s"]
    if cpu is not None:
        parts.append(f"{cpu:7.1f} us/msg CPU ({share:4.0%} of a core)")
    parts.append(f"p50 {report['p50_us']:.0f} us, p99 {report['p99_us']:.0f} us")
    parts.append(f"load generator {report['loadgen_cpu_s'] / report['seconds']:.0%}")
    if report.get("udp_resends"):
        parts.append(f"{report['udp_resends']} resends")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Pinned echo benchmark: asyncio vs uvloop vs oxloop servers and a "
        "pure-Rust floor, under a Rust closed-loop load generator (median of N rounds).",
    )
    parser.add_argument(
        "--loops",
        default=",".join(DEFAULT_LOOPS),
        help="comma-separated servers to compare (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated filters: modes (protocol, streams, sock; churn, a new "
        "connection per 64 B message, only when named), transports (tcp, unix, udp), sizes "
        "(1k, 16k, 100k); default: every echo cell",
    )
    parser.add_argument("--conns", type=int, default=10, help="connections (default: 10)")
    parser.add_argument(
        "--duration", type=float, default=None, help="measured seconds per run (default: 2)"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="warm-up seconds per run (default: 0.5)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds per cell (default: 3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round of 1 s after 0.3 s of warm-up (explicit options still win)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--cold-malloc",
        action="store_true",
        help="Python servers skip settling the C allocator first (see the module docstring)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every run's numbers here")
    args = parser.parse_args(argv)
    quick = {"duration": 1.0, "warmup": 0.3, "rounds": 1}
    full = {"duration": 2.0, "warmup": 0.5, "rounds": 3}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.conns < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rounds and --conns must be at least 1, --duration positive")

    names = [x.strip() for x in args.loops.split(",") if x.strip()]
    unknown = [x for x in names if x not in LOOP_NAMES]
    if unknown:
        parser.error(f"unknown loop(s) {unknown}; choose from {', '.join(LOOP_NAMES)}")
    rows = select_rows(args.only, parser)
    loops = available_loops(names)
    if not loops:
        print("no server to benchmark", file=sys.stderr)
        return 1

    ensure_loadgen()
    pins = pinning(not args.no_pin)
    # A SIGTERM to this script unwinds like Ctrl-C, through every server's cleanup.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    python = sys.version.split()[0]
    print(
        f"Python {python}, servers: {', '.join(loops)}, {args.conns} connections, "
        f"{args.rounds} round(s) of {args.duration:g} s after {args.warmup:g} s warm-up, "
        + ("server on CPU 0, load generator on CPU 1" if pins[0] else "unpinned"),
        flush=True,
    )
    # results[row][loop]: every run, or None once that cell failed. The rust floor does not
    # depend on the mode: it runs once per (transport, size) and is shared by those rows.
    results: dict[Row, dict[str, list[dict[str, Any]] | None]] = {}
    floor: dict[tuple[bool, str, str], list[dict[str, Any]] | None] = {}
    workdir = Path(tempfile.mkdtemp(prefix="oxloop-echo-"))
    if any(row.mode.startswith("tls") for row in rows):
        make_certificates(workdir)
    serial = 0
    try:
        for row in rows:
            print(f"\n{row.label()}", flush=True)
            cells: dict[str, list[dict[str, Any]] | None] = {}
            floor_key = (
                row.mode in ("churn", "tls-churn"),
                row.mode.startswith("tls"),
                row.transport,
                row.size,
            )
            for loop in loops:
                if loop == "rust" and (floor_key in floor or row.mode in NO_FLOOR_MODES):
                    continue  # measured for an earlier row, or not measured
                cells[loop] = []
            for rnd in range(1, args.rounds + 1):
                for loop, runs in cells.items():
                    if runs is None:
                        continue
                    serial += 1
                    try:
                        report = run_once(
                            server_command(loop, row.mode, args.cold_malloc),
                            row,
                            args,
                            pins,
                            workdir,
                            serial,
                        )
                    except RunError as exc:
                        print(f"  {loop:8} round {rnd}: error: {exc}", flush=True)
                        cells[loop] = None
                        continue
                    runs.append(report)
                    print(f"  {loop:8} round {rnd}: {describe(report)}", flush=True)
            if "rust" in cells:
                floor[floor_key] = cells["rust"]
            elif "rust" in loops and row.mode in NO_FLOOR_MODES:
                cells["rust"] = None
            elif "rust" in loops:
                cells["rust"] = floor[floor_key]
                print("  rust     (floor measured above)", flush=True)
            results[row] = cells
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = {
        row: {loop: summarize(cells.get(loop)) for loop in loops} for row, cells in results.items()
    }
    print_table(summary, loops, args, python, bool(pins[0]))
    if args.json:
        write_json(args.json, summary, loops, args, python, bool(pins[0]))
    return 0


# --- reporting --------------------------------------------------------------------------------


def cpu_ratio(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> float | None:
    if not ours or not theirs or not ours["cpu_us_per_msg"] or not theirs["cpu_us_per_msg"]:
        return None
    return float(ours["cpu_us_per_msg"] / theirs["cpu_us_per_msg"])


def throughput_ratio(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> float | None:
    if not ours or not theirs or not theirs["msgs_per_s"]:
        return None
    return float(ours["msgs_per_s"] / theirs["msgs_per_s"])


def print_table(
    summary: dict[Row, dict[str, dict[str, Any] | None]],
    loops: list[str],
    args: argparse.Namespace,
    python: str,
    pinned: bool,
) -> None:
    title = {"rust": "Rust floor"}
    ratios = [
        other
        for other in ("uvloop", "asyncio", "oxloop-nostats")
        if "oxloop" in loops and other in loops
    ]
    header = ["mode", "transport", "size"]
    header += [f"{title.get(x, x)} msg/s" for x in loops]
    header += [f"{title.get(x, x)} CPU µs/msg" for x in loops]
    header += [f"oxloop/{other} CPU" for other in ratios]
    rows: list[list[str]] = []
    for row, per_loop in summary.items():
        line = [row.mode, row.transport, SIZE_NAMES[row.size]]
        # No Rust floor is measured for HTTP.
        missing = {x: "-" if x == "rust" and row.mode in NO_FLOOR_MODES else "error" for x in loops}
        for loop in loops:
            s = per_loop[loop]
            line.append(f"{s['msgs_per_s'] / 1000:.1f}k" if s else missing[loop])
        for loop in loops:
            s = per_loop[loop]
            cpu = s["cpu_us_per_msg"] if s else None
            line.append(f"{cpu:.1f}" if cpu is not None else missing[loop])
        for other in ratios:
            r = cpu_ratio(per_loop["oxloop"], per_loop[other])
            line.append(f"{r:.2f}" if r is not None else "-")
        rows.append(line)
    print(
        f"\nMedian of {args.rounds} round(s) of {args.duration:g} s (after {args.warmup:g} s "
        f"warm-up), {args.conns} connections each with one message in flight, Python {python}, "
        + ("server pinned to CPU 0, load generator to CPU 1" if pinned else "unpinned")
        + (", Python servers with malloc as start-up left it" if args.cold_malloc else "")
        + ". CPU µs/msg is the server's user + system CPU time per echoed message (churn: "
        + "per connection accepted, echoed once and closed)"
        + (
            "; the oxloop/... columns divide oxloop's by the other loop's (below 1: oxloop "
            "spends less)"
            if ratios
            else ""
        )
        + ".\n"
    )
    print_markdown(header, rows, labels=3)




def write_json(
    path: str,
    summary: dict[Row, dict[str, dict[str, Any] | None]],
    loops: list[str],
    args: argparse.Namespace,
    python: str,
    pinned: bool,
) -> None:
    versions = {}
    for name in loops:
        if name in ("uvloop", "oxloop"):
            versions[name] = getattr(importlib.import_module(name), "__version__", None)
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": python,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pinned": pinned,
        "versions": versions,
        "settings": {
            "conns": args.conns,
            "duration": args.duration,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "cold_malloc": args.cold_malloc,
        },
        "rows": [
            {
                "mode": row.mode,
                "transport": row.transport,
                "size": row.nbytes,
                "loops": per_loop,
                "oxloop_cpu_ratio": {
                    other: cpu_ratio(per_loop.get("oxloop"), per_loop.get(other))
                    for other in ("uvloop", "asyncio")
                    if "oxloop" in loops and other in loops
                },
                "oxloop_throughput_ratio": {
                    other: throughput_ratio(per_loop.get("oxloop"), per_loop.get(other))
                    for other in ("uvloop", "asyncio")
                    if "oxloop" in loops and other in loops
                },
            }
            for row, per_loop in summary.items()
        ],
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (every server started was stopped)", file=sys.stderr)
        sys.exit(130)
