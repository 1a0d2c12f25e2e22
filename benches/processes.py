"""Subprocess benchmark: spawning children and piping through them, asyncio vs uvloop vs oxloop.

Workloads, each through the loop's own ``asyncio.create_subprocess_*``:

    spawn   spawn ``/bin/true`` and wait for it, 2,000 times, 50 children at a time; every
            return code must be 0
    pipe    1 GiB through ``cat``: the parent writes a 256 KiB block 4,096 times to cat's stdin
            (``writer.write`` + ``await writer.drain()``) while another task reads cat's
            stdout back (``reader.read(256 KiB)`` until EOF)
    shell   ``create_subprocess_shell('exit 0')`` and wait for it, 500 times, 50 at a time

The pipe's bytes are checked cheaply, so that the checker does not dominate: the block is
``bytes(range(256)) * 1024``, so the byte at stream offset ``o`` is ``o % 256``; the reader
checks the first, middle and last byte of every chunk it gets against its offset, and the total
byte count at the end. cat's return code must be 0.

Method
------
Every (workload, loop, round) runs in a fresh interpreter -- this script started again with
``--worker`` -- so nothing a loop leaves behind (threads, signal handlers, child watchers,
malloc's state) reaches another. The worker creates its loop, runs a small untimed warm-up of
the same workload (5 spawns, 4 MiB through cat), then times the workload itself: the wall
clock (``time.perf_counter``) and the worker's own CPU time, user + system from
``resource.getrusage(RUSAGE_SELF)`` -- every thread of the worker, so asyncio's waitpid threads
count, but not the children: their CPU (``RUSAGE_CHILDREN``, every child having been reaped) is
reported separately, in the per-round lines and the JSON. Reported per workload: the wall time,
the throughput (children per second, or GiB per second through cat), the worker's CPU per
child or per GiB, and oxloop's wall time and CPU divided by uvloop's and asyncio's (below 1:
oxloop is faster, or spends less). Rounds are interleaved across the loops (asyncio, uvloop,
oxloop, asyncio, ...) so machine noise spreads evenly; the median of ``--rounds`` rounds is
shown. Nothing is pinned unless ``--pin CPUS`` is given: the children need CPU too, and they
inherit the worker's affinity, so pinning puts them on the same CPUs.

Each worker first frees a 1 MiB block, so that glibc's malloc is in the state a long-running
process is usually in (``settle_malloc`` in ``benchutil.py`` says why): asyncio's pipe transport
-- oxloop's too, it is the same code -- reads with ``os.read(fd, 256 KiB)`` and shrinks the
result, and until a block that large has been freed glibc serves every such read with an mmap,
an mremap and a munmap plus page faults on the fresh pages. Here that cost every loop a third or
more of its CPU on the pipe workload (uvloop's too: its stream buffers grow past the same
threshold). ``--cold-malloc`` measures the workers as start-up left them.

Python 3.11's asyncio loop watches its children with ``ThreadedChildWatcher`` (a thread per
child in ``waitpid``); oxloop watches a pidfd per child on its reactor; uvloop uses libuv's
process handles (a SIGCHLD handler). asyncio and oxloop start a child through
``subprocess.Popen``, which on Linux uses ``vfork`` + exec; libuv forks (``clone`` without
``CLONE_VM``, as strace shows), so uvloop pays for copying the parent's page tables and the
child for its copy-on-write faults before exec.

Usage (from the repository root, after ``make build``; ``make bench-processes`` runs the
first)::

    .venv/bin/python benches/processes.py                   # everything, 5 rounds
    .venv/bin/python benches/processes.py --quick           # 1 round, a tenth of the sizes
    .venv/bin/python benches/processes.py --only pipe --rounds 9
    .venv/bin/python benches/processes.py --loops uvloop,oxloop --json /tmp/proc.json

The last thing printed is a markdown table for docs/benchmarks.md. uvloop is optional: without
it its columns are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchutil import print_markdown, settle_malloc

LOOP_NAMES = ("asyncio", "uvloop", "oxloop")

CHUNK = 256 * 1024
BLOCK = bytes(range(256)) * (CHUNK // 256)  # the byte at stream offset o is o % 256
GIB = 1 << 30
CONCURRENCY = 50
TRUE = "/bin/true"

# Seconds one worker may take before it is killed and its cell reported as an error.
RUN_TIMEOUT = 600.0


class BenchError(Exception):
    """A workload saw a wrong result: a failed child, a wrong byte, a short stream."""


@dataclass(frozen=True)
class Workload:
    name: str
    label: str  # the table's row label, without the size
    size: int  # full size: children, or bytes through cat
    unit: str  # what size counts: "child" or "GiB"


WORKLOADS = {
    "spawn": Workload("spawn", "spawn + wait /bin/true", 2000, "child"),
    "pipe": Workload("pipe", "1 GiB through cat", GIB, "GiB"),
    "shell": Workload("shell", "shell 'exit 0'", 500, "child"),
}


def scaled_size(w: Workload, scale: float) -> int:
    if w.unit == "GiB":  # whole chunks, at least one
        return max(1, round(w.size * scale / CHUNK)) * CHUNK
    return max(1, round(w.size * scale))


# --- the worker: one workload on one loop, in a fresh interpreter ------------------------------


async def spawn_many(n: int, start: Callable[[], Awaitable[asyncio.subprocess.Process]]) -> None:
    """Starts n children, CONCURRENCY at a time, and waits for each; every one must exit 0."""
    next_index = 0
    failures: list[int] = []

    async def one_slot() -> None:
        nonlocal next_index
        while next_index < n:
            next_index += 1
            proc = await start()
            rc = await proc.wait()
            if rc != 0:
                failures.append(rc)

    await asyncio.gather(*(one_slot() for _ in range(min(CONCURRENCY, n))))
    if failures:
        raise BenchError(f"{len(failures)} of {n} children failed, e.g. status {failures[0]}")


async def run_spawn(n: int) -> None:
    await spawn_many(n, lambda: asyncio.create_subprocess_exec(TRUE))


async def run_shell(n: int) -> None:
    await spawn_many(n, lambda: asyncio.create_subprocess_shell("exit 0"))


async def run_pipe(nbytes: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def write_all() -> None:
        for _ in range(nbytes // CHUNK):
            stdin.write(BLOCK)
            await stdin.drain()
        stdin.close()
        await stdin.wait_closed()

    async def read_all() -> int:
        offset = 0
        while True:
            chunk = await stdout.read(CHUNK)
            if not chunk:
                return offset
            last = len(chunk) - 1
            mid = last // 2
            if (
                chunk[0] != offset % 256
                or chunk[mid] != (offset + mid) % 256
                or chunk[last] != (offset + last) % 256
            ):
                raise BenchError(f"wrong bytes in the chunk read at offset {offset}")
            offset += len(chunk)

    _, got = await asyncio.gather(write_all(), read_all())
    rc = await proc.wait()
    if got != nbytes:
        raise BenchError(f"read back {got} of {nbytes} bytes")
    if rc != 0:
        raise BenchError(f"cat exited with status {rc}")


RUNNERS: dict[str, Callable[[int], Awaitable[None]]] = {
    "spawn": run_spawn,
    "pipe": run_pipe,
    "shell": run_shell,
}
WARMUP = {"spawn": 5, "pipe": 16 * CHUNK, "shell": 5}




def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def worker(loop_name: str, workload: str, size: int) -> dict[str, Any]:
    """Runs one workload on a new loop of the named kind; its wall time and CPU times."""
    if loop_name == "asyncio":
        factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    else:
        factory = importlib.import_module(loop_name).new_event_loop
    fn = RUNNERS[workload]
    loop = factory()
    asyncio.set_event_loop(loop)  # asyncio's 3.11 child watcher looks the loop up
    try:
        loop.run_until_complete(fn(min(size, WARMUP[workload])))
        kids0 = cpu_seconds(resource.RUSAGE_CHILDREN)
        cpu0 = cpu_seconds(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        loop.run_until_complete(fn(size))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu0
        kids = cpu_seconds(resource.RUSAGE_CHILDREN) - kids0
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return {"size": size, "wall_s": wall, "cpu_s": cpu, "children_cpu_s": kids}


# --- the runner -------------------------------------------------------------------------------


class RunError(Exception):
    """One worker failed; its cell is reported as an error."""


def run_once(loop: str, w: Workload, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Starts a worker for one (loop, workload) and returns its report, with rates added."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", loop, w.name, str(size)]
    if args.pin:
        cmd += ["--pin", args.pin]
    if args.cold_malloc:
        cmd.append("--cold-malloc")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a SIGKILL to its group reaches its children too
    )
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RunError(f"timed out after {RUN_TIMEOUT:g} s") from exc
    except BaseException:  # Ctrl-C: take the worker and its children down with us
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RunError(f"the worker exited with status {proc.returncode}: {err.strip()[-1500:]}")
    report: dict[str, Any] = json.loads(lines[-1])
    if "error" in report:
        raise RunError(report["error"])
    if err.strip():
        print(f"    note: the worker wrote to stderr: {err.strip()[-800:]}", flush=True)
    amount = report["size"] / GIB if w.unit == "GiB" else report["size"]
    report["rate"] = amount / report["wall_s"]
    report["cpu_per_unit_s"] = report["cpu_s"] / amount
    report["children_cpu_per_unit_s"] = report["children_cpu_s"] / amount
    return report


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.1f} ms"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_rate(w: Workload, rate: float) -> str:
    return f"{rate:.2f} GiB/s" if w.unit == "GiB" else f"{rate:,.0f}/s"


def fmt_cpu(w: Workload, per_unit: float) -> str:
    return f"{fmt_time(per_unit)}/{w.unit}"


def describe(w: Workload, r: dict[str, Any]) -> str:
    return (
        f"{fmt_time(r['wall_s']):>8}, {fmt_rate(w, r['rate']):>11}, "
        f"parent CPU {fmt_cpu(w, r['cpu_per_unit_s'])} ({r['cpu_s'] / r['wall_s']:.0%} of a "
        f"core), children's CPU {fmt_cpu(w, r['children_cpu_per_unit_s'])}"
    )


def summarize(runs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if not runs:
        return None
    keys = ("wall_s", "rate", "cpu_s", "cpu_per_unit_s", "children_cpu_per_unit_s")
    return {**{k: statistics.median(r[k] for r in runs) for k in keys}, "runs": runs}


def ratio(ours: dict[str, Any] | None, theirs: dict[str, Any] | None, key: str) -> float | None:
    if not ours or not theirs or not theirs[key]:
        return None
    return float(ours[key] / theirs[key])


def available_loops(names: list[str]) -> list[str]:
    found = []
    for name in (n for n in LOOP_NAMES if n in names):
        if name != "asyncio":
            try:
                importlib.import_module(name)
            except ImportError as exc:
                print(
                    f"note: {name} is not importable ({exc}); its columns are left out",
                    file=sys.stderr,
                )
                continue
        found.append(name)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Subprocess benchmark: spawning children and piping through cat, "
        "asyncio vs uvloop vs oxloop (median of N rounds, a fresh interpreter per run).",
    )
    parser.add_argument(
        "--loops",
        default=",".join(LOOP_NAMES),
        help="comma-separated loops to compare (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated workloads to run (default: all): " + ", ".join(WORKLOADS),
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds per cell (default: 5)")
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply every workload's size (default: 1, or 0.1 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round at a tenth of the sizes (explicit options still win)",
    )
    parser.add_argument(
        "--pin",
        metavar="CPUS",
        help="run each worker, and so its children, on these CPUs, e.g. 0 or 0,1 "
        "(default: unpinned)",
    )
    parser.add_argument(
        "--cold-malloc",
        action="store_true",
        help="workers skip settling the C allocator first (see the module docstring)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every run's numbers here")
    parser.add_argument(
        "--worker", nargs=3, metavar=("LOOP", "WORKLOAD", "SIZE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    pin_cpus: set[int] | None = None
    if args.pin:
        try:
            pin_cpus = {int(c) for c in args.pin.split(",") if c.strip()}
        except ValueError:
            parser.error(f"--pin: expected CPU numbers separated by commas, got {args.pin!r}")
        if not pin_cpus or not pin_cpus <= os.sched_getaffinity(0):
            parser.error(f"--pin {args.pin}: allowed CPUs are {sorted(os.sched_getaffinity(0))}")

    if args.worker:
        if pin_cpus:
            os.sched_setaffinity(0, pin_cpus)
        if not args.cold_malloc:
            settle_malloc()
        loop_name, workload, size = args.worker
        try:
            report = worker(loop_name, workload, int(size))
        except BenchError as exc:
            report = {"error": str(exc)}
        print(json.dumps(report), flush=True)
        return 0

    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.scale is None:
        args.scale = 0.1 if args.quick else 1.0
    if args.rounds < 1 or args.scale <= 0:
        parser.error("--rounds must be at least 1 and --scale positive")
    names = [x.strip() for x in args.loops.split(",") if x.strip()]
    unknown = [x for x in names if x not in LOOP_NAMES]
    if unknown:
        parser.error(f"unknown loop(s) {unknown}; choose from {', '.join(LOOP_NAMES)}")
    selected = [x.strip() for x in args.only.split(",") if x.strip()] or list(WORKLOADS)
    unknown = [x for x in selected if x not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    loops = available_loops(names)
    if not loops:
        print("no loop to benchmark", file=sys.stderr)
        return 1
    # A SIGTERM to this script unwinds like Ctrl-C, through every worker's cleanup.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    python = sys.version.split()[0]
    print(
        f"Python {python}, loops: {', '.join(loops)}, {args.rounds} round(s) (median), "
        f"scale {args.scale:g}, a fresh interpreter per run, "
        + (f"pinned to CPU(s) {args.pin}" if args.pin else "unpinned")
        + (", cold malloc" if args.cold_malloc else ""),
        flush=True,
    )
    results: dict[str, dict[str, list[dict[str, Any]] | None]] = {}
    for wname in selected:
        w = WORKLOADS[wname]
        size = scaled_size(w, args.scale)
        print(f"\n{wname}: {row_label(w, size)}", flush=True)
        cells: dict[str, list[dict[str, Any]] | None] = {loop: [] for loop in loops}
        for rnd in range(1, args.rounds + 1):
            for loop in loops:
                runs = cells[loop]
                if runs is None:
                    continue
                try:
                    report = run_once(loop, w, size, args)
                except RunError as exc:
                    print(f"  {loop:8} round {rnd}: error: {exc}", flush=True)
                    cells[loop] = None
                    continue
                runs.append(report)
                print(f"  {loop:8} round {rnd}: {describe(w, report)}", flush=True)
        results[wname] = cells

    summary = {
        wname: {loop: summarize(cells[loop]) for loop in loops} for wname, cells in results.items()
    }
    print_table(summary, loops, args, python)
    if args.json:
        write_json(args.json, summary, loops, args, python)
    return 0


def row_label(w: Workload, size: int) -> str:
    if w.unit == "GiB":
        amount = f"{size / GIB:g} GiB" if size >= GIB else f"{size // (1 << 20)} MiB"
        return w.label.replace("1 GiB", amount)
    return f"{w.label} ×{size:,}, {min(CONCURRENCY, size)} at a time"


# --- reporting --------------------------------------------------------------------------------


def print_table(
    summary: dict[str, dict[str, dict[str, Any] | None]],
    loops: list[str],
    args: argparse.Namespace,
    python: str,
) -> None:
    others = [o for o in ("uvloop", "asyncio") if "oxloop" in loops and o in loops]
    header = ["workload"]
    header += [f"{loop} wall" for loop in loops]
    header += [f"{loop} rate" for loop in loops]
    header += [f"{loop} parent CPU" for loop in loops]
    for other in others:
        header += [f"oxloop/{other} wall", f"oxloop/{other} CPU"]
    rows: list[list[str]] = []
    for wname, per_loop in summary.items():
        w = WORKLOADS[wname]
        line = [row_label(w, scaled_size(w, args.scale))]
        line += [fmt_time(s["wall_s"]) if s else "error" for s in per_loop.values()]
        line += [fmt_rate(w, s["rate"]) if s else "error" for s in per_loop.values()]
        line += [fmt_cpu(w, s["cpu_per_unit_s"]) if s else "error" for s in per_loop.values()]
        for other in others:
            for key in ("wall_s", "cpu_per_unit_s"):
                r = ratio(per_loop["oxloop"], per_loop[other], key)
                line.append(f"{r:.2f}" if r is not None else "-")
        rows.append(line)
    print(
        f"\nMedian of {args.rounds} round(s), Python {python}, a fresh interpreter per run, "
        + (f"pinned to CPU(s) {args.pin}" if args.pin else "unpinned")
        + (", workers with malloc as start-up left it" if args.cold_malloc else "")
        + ". Parent CPU is the benchmark process's own user + system time (children "
        "excluded) per child or per GiB"
        + (
            "; the oxloop/... columns divide oxloop's by the other loop's (below 1: oxloop is "
            "faster or spends less)"
            if others
            else ""
        )
        + ".\n"
    )
    print_markdown(header, rows)




def write_json(
    path: str,
    summary: dict[str, dict[str, dict[str, Any] | None]],
    loops: list[str],
    args: argparse.Namespace,
    python: str,
) -> None:
    versions = {}
    for name in loops:
        if name != "asyncio":
            versions[name] = getattr(importlib.import_module(name), "__version__", None)
    others = [o for o in ("uvloop", "asyncio") if "oxloop" in loops and o in loops]
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": python,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pinned": args.pin,
        "versions": versions,
        "settings": {
            "rounds": args.rounds,
            "scale": args.scale,
            "concurrency": CONCURRENCY,
            "cold_malloc": args.cold_malloc,
        },
        "rows": [
            {
                "workload": wname,
                "size": scaled_size(WORKLOADS[wname], args.scale),
                "unit": WORKLOADS[wname].unit,
                "loops": per_loop,
                "oxloop_wall_ratio": {
                    o: ratio(per_loop["oxloop"], per_loop[o], "wall_s") for o in others
                },
                "oxloop_cpu_ratio": {
                    o: ratio(per_loop["oxloop"], per_loop[o], "cpu_per_unit_s") for o in others
                },
            }
            for wname, per_loop in summary.items()
        ],
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (every worker started was stopped)", file=sys.stderr)
        sys.exit(130)
