"""Micro-benchmarks: stdlib asyncio vs uvloop vs oxloop, in the same run.

Each workload stresses one hot path of an event loop:

    call_soon            schedule 1M callbacks with loop.call_soon, then run them all
    call_later_cancel    schedule 100k timers with loop.call_later, cancel every one, run once
    sleep0               one task doing 500k ``await asyncio.sleep(0)``
    gather               ``asyncio.gather`` of 200k trivial coroutines (one task each)
    cancel_tasks         create 100k tasks blocked on a future, cancel all, await completion
    call_soon_threadsafe another thread sends 100k callbacks; the loop counts them to 100k
    run_in_executor      20k ``loop.run_in_executor(None, f)`` on the default executor, gathered

Every (workload, loop, round) gets a fresh event loop, closed afterwards, with gc.collect()
before it; only the workload itself is timed (loop creation and closing are not). As timeit
does, the cyclic garbage collector is disabled while a workload runs: with up to a million
live objects its full collections otherwise dominate, and vary, far more than the loops do
(``--gc`` keeps it enabled, to see the cost a real program would also pay). Rounds are
interleaved round-robin across the loops (asyncio, uvloop, oxloop, asyncio, ...) so that
machine noise spreads evenly, and the median of the rounds is reported. Every workload checks
its own result (callback counts, cancelled() flags, ...): a wrong result, an exception or a hang
(per-cell timeout) marks that cell ``error`` and the run goes on.

Usage (from the repository root, after ``make build``; ``make bench`` runs the first line)::

    .venv/bin/python benches/micro.py                       # everything, 5 rounds
    .venv/bin/python benches/micro.py --scale 0.1           # quick run, 1/10 of the sizes
    .venv/bin/python benches/micro.py --rounds 9 --only sleep0,gather
    .venv/bin/python benches/micro.py --loops uvloop,oxloop

The last thing printed is a markdown table, ready to paste into docs/benchmarks.md: the median
time per loop and "oxloop vs uvloop" / "oxloop vs asyncio" as speedups (other loop's time /
oxloop's time: above 1 means oxloop is faster). uvloop is optional: without it its column is
left out.

Instruction counts with callgrind (``--callgrind``)
---------------------------------------------------
Wall-clock times on a shared 2-core machine are noisy; instruction counts are not. With
``--callgrind`` the script runs each selected (workload, loop) in a child process under
``valgrind --tool=callgrind``, twice -- at size n and 2n -- and reports the difference divided by
n: the instructions (Ir) per operation, with interpreter start-up, imports and loop creation
cancelled out. Under valgrind everything is ~50x slower, so the default scale there is 0.01::

    .venv/bin/python benches/micro.py --callgrind --only sleep0,call_soon --loops uvloop,oxloop

To look inside one workload by hand (where do oxloop's instructions go?), run one small round
directly and annotate it; the counts include start-up, so compare at the same --scale::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.oxloop.out \\
        .venv/bin/python benches/micro.py --loops oxloop --only call_soon \\
        --rounds 1 --warmup 0 --scale 0.05
    callgrind_annotate /tmp/cg.oxloop.out | head -40

valgrind's "Collected" (or "I refs") line on stderr is the total instruction count. valgrind
runs one thread at a time, so the two threaded workloads (call_soon_threadsafe, run_in_executor)
count every thread's instructions, including spinning and wake-ups, and vary more than the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchutil import oxloop_without_stats, print_markdown

LOOP_NAMES = ("asyncio", "uvloop", "oxloop", "oxloop-nostats")
# What runs unless --loops says otherwise; oxloop-nostats (oxloop with `stats_enabled` off)
# is asked for by name, to measure what the statistics cost: --loops oxloop,oxloop-nostats.
DEFAULT_LOOPS = ("asyncio", "uvloop", "oxloop")

# Leave the cyclic GC enabled during the timed part (--gc).
KEEP_GC = False

# Per-cell timeout, seconds: a workload taking longer is reported as a hang ('error').
CELL_TIMEOUT = 120.0


class BenchError(Exception):
    """A workload produced a wrong result."""


class CellTimeout(BaseException):
    """Raised from SIGALRM when one cell runs too long."""


# --- workloads --------------------------------------------------------------------------------
# Each takes a fresh, not running loop and a size, runs the workload on it, checks the result,
# and returns the elapsed seconds of the workload alone.


def bench_call_soon(loop: asyncio.AbstractEventLoop, n: int) -> float:
    count = 0

    def cb() -> None:
        nonlocal count
        count += 1

    t0 = time.perf_counter()
    call_soon = loop.call_soon
    for _ in range(n):
        call_soon(cb)
    call_soon(loop.stop)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    if count != n:
        raise BenchError(f"{count} of {n} callbacks ran")
    return elapsed


def bench_call_later_cancel(loop: asyncio.AbstractEventLoop, n: int) -> float:
    fired = 0

    def cb() -> None:
        nonlocal fired
        fired += 1

    t0 = time.perf_counter()
    call_later = loop.call_later
    handles = [call_later(10.0 + i * 1e-6, cb) for i in range(n)]
    for h in handles:
        h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    if fired:
        raise BenchError(f"{fired} cancelled timers fired")
    if not all(h.cancelled() for h in handles):
        raise BenchError("a handle does not report cancelled()")
    return elapsed


def bench_sleep0(loop: asyncio.AbstractEventLoop, n: int) -> float:
    async def main() -> int:
        done = 0
        sleep = asyncio.sleep
        for _ in range(n):
            await sleep(0)
            done += 1
        return done

    coro = main()
    t0 = time.perf_counter()
    done = loop.run_until_complete(coro)
    elapsed = time.perf_counter() - t0
    if done != n:
        raise BenchError(f"{done} of {n} sleeps")
    return elapsed


def bench_gather(loop: asyncio.AbstractEventLoop, n: int) -> float:
    async def trivial(i: int) -> int:
        return i

    async def main() -> list[int]:
        return await asyncio.gather(*[trivial(i) for i in range(n)])

    t0 = time.perf_counter()
    results = loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    if len(results) != n or results[-1] != n - 1 or sum(results) != n * (n - 1) // 2:
        raise BenchError("gather returned wrong results")
    return elapsed


def bench_cancel_tasks(loop: asyncio.AbstractEventLoop, n: int) -> float:
    async def blocked(fut: asyncio.Future[None]) -> None:
        await fut

    async def main() -> list[asyncio.Task[None]]:
        never: asyncio.Future[None] = loop.create_future()
        tasks = [loop.create_task(blocked(never)) for _ in range(n)]
        await asyncio.sleep(0)  # let every task start and block on the future
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if not all(isinstance(r, asyncio.CancelledError) for r in results):
            raise BenchError("a task did not end with CancelledError")
        never.cancel()
        return tasks

    t0 = time.perf_counter()
    tasks = loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    if not all(t.cancelled() for t in tasks):
        raise BenchError("a task does not report cancelled()")
    return elapsed


def bench_call_soon_threadsafe(loop: asyncio.AbstractEventLoop, n: int) -> float:
    count = 0
    done: asyncio.Future[int] = loop.create_future()

    def cb() -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set_result(count)

    def producer() -> None:
        cst = loop.call_soon_threadsafe
        for _ in range(n):
            cst(cb)

    thread = threading.Thread(target=producer)
    t0 = time.perf_counter()
    # Started from inside the running loop so the producer races a live loop.
    loop.call_soon(thread.start)
    got = loop.run_until_complete(done)
    elapsed = time.perf_counter() - t0
    thread.join()
    if got != n:
        raise BenchError(f"{got} of {n} callbacks ran")
    return elapsed


def _one() -> int:
    return 1


def bench_run_in_executor(loop: asyncio.AbstractEventLoop, n: int) -> float:
    async def main() -> int:
        rie = loop.run_in_executor
        results = await asyncio.gather(*[rie(None, _one) for _ in range(n)])
        return sum(results)

    t0 = time.perf_counter()
    total = loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    loop.run_until_complete(loop.shutdown_default_executor())
    if total != n:
        raise BenchError(f"{total} of {n} executor jobs returned")
    return elapsed


# name -> (function, full-size n, description for the table)
WORKLOADS: dict[str, tuple[Callable[[asyncio.AbstractEventLoop, int], float], int, str]] = {
    "call_soon": (bench_call_soon, 1_000_000, "call_soon"),
    "call_later_cancel": (bench_call_later_cancel, 100_000, "call_later + cancel"),
    "sleep0": (bench_sleep0, 500_000, "await sleep(0)"),
    "gather": (bench_gather, 200_000, "gather tasks"),
    "cancel_tasks": (bench_cancel_tasks, 100_000, "cancel pending tasks"),
    "call_soon_threadsafe": (
        bench_call_soon_threadsafe,
        100_000,
        "call_soon_threadsafe",
    ),
    "run_in_executor": (bench_run_in_executor, 20_000, "run_in_executor"),
}


# --- running ----------------------------------------------------------------------------------


def loop_factories(names: list[str]) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
    for name in names:
        if name == "asyncio":
            factories[name] = asyncio.new_event_loop
            continue
        if name == "oxloop-nostats":
            factories[name] = oxloop_without_stats
            continue
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:
            print(
                f"note: {name} is not importable ({exc}); its column is left out", file=sys.stderr
            )
            continue
        factories[name] = mod.new_event_loop
    return factories


def _on_alarm(signum: int, frame: Any) -> None:
    raise CellTimeout


def run_cell(
    factory: Callable[[], asyncio.AbstractEventLoop],
    fn: Callable[[asyncio.AbstractEventLoop, int], float],
    n: int,
) -> float:
    gc.collect()
    loop = factory()
    try:
        signal.setitimer(signal.ITIMER_REAL, CELL_TIMEOUT)
        if not KEEP_GC:
            gc.disable()
        try:
            return fn(loop, n)
        finally:
            gc.enable()
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        try:
            if not loop.is_running():
                loop.close()
        except Exception as exc:  # a loop that cannot close is a finding, not a crash
            print(f"    (closing the loop failed: {exc!r})", file=sys.stderr)
        asyncio.set_event_loop(None)


def callgrind_main(args: argparse.Namespace, loops: list[str], selected: list[str]) -> int:
    """Instructions per operation: callgrind at n and 2n, the difference over n."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("--callgrind needs valgrind on PATH", file=sys.stderr)
        return 1
    print(
        f"Instructions per operation (callgrind, Ir at 2n minus Ir at n, over n), "
        f"scale {args.scale:g}, Python {sys.version.split()[0]}"
    )
    rows: dict[str, dict[str, float | None]] = {}
    for wname in selected:
        full_n = WORKLOADS[wname][1]
        n = max(1, int(full_n * args.scale))
        rows[wname] = {}
        for lname in loops:
            counts = []
            for size in (n, 2 * n):
                cmd = [
                    valgrind,
                    "--tool=callgrind",
                    "--callgrind-out-file=/dev/null",
                    sys.executable,
                    os.path.abspath(__file__),
                    "--loops",
                    lname,
                    "--only",
                    wname,
                    "--rounds",
                    "1",
                    "--warmup",
                    "0",
                    "--scale",
                    repr(size / full_n),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                found = re.search(r"Collected : (\d+)", proc.stderr)
                if (
                    proc.returncode != 0
                    or found is None
                    or "error" in proc.stdout.split("| workload", 1)[-1].lower()
                ):
                    print(
                        f"  {wname} on {lname}: the run under callgrind failed "
                        f"(exit {proc.returncode})\n{proc.stdout[-1000:]}{proc.stderr[-1000:]}",
                        file=sys.stderr,
                    )
                    counts = []
                    break
                counts.append(int(found.group(1)))
            per_op = (counts[1] - counts[0]) / n if counts else None
            rows[wname][lname] = per_op
            shown = f"{per_op:,.0f} Ir/op" if per_op is not None else "error"
            print(f"  {wname:22} {lname:8} {shown}", flush=True)

    header = ["workload (Ir per op)", *loops]
    if "oxloop" in loops and "uvloop" in loops:
        header.append("uvloop / oxloop")
    if "oxloop" in loops and "asyncio" in loops:
        header.append("asyncio / oxloop")
    if "oxloop" in loops and "oxloop-nostats" in loops:
        header.append("stats cost")
    table = []
    for wname, per_loop in rows.items():
        row = [WORKLOADS[wname][2]]
        row += [f"{v:,.0f}" if v is not None else "error" for v in per_loop.values()]
        if "oxloop" in loops and "uvloop" in loops:
            row.append(fmt_ratio(per_loop["uvloop"], per_loop["oxloop"]))
        if "oxloop" in loops and "asyncio" in loops:
            row.append(fmt_ratio(per_loop["asyncio"], per_loop["oxloop"]))
        if "oxloop" in loops and "oxloop-nostats" in loops:
            row.append(fmt_cost(per_loop["oxloop"], per_loop["oxloop-nostats"]))
        table.append(row)
    print("\nRatios > 1 mean oxloop executes fewer instructions per operation.\n")
    print_markdown(header, table)
    return 0


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e3:.2f} ms"


def fmt_ratio(other: float | None, ours: float | None) -> str:
    if other is None or ours is None or ours <= 0:
        return "-"
    return f"{other / ours:.2f}x"


def fmt_cost(with_stats: float | None, without: float | None) -> str:
    """What the statistics add: oxloop's figure over oxloop-nostats', as a percentage."""
    if with_stats is None or without is None or without <= 0:
        return "-"
    return f"{(with_stats / without - 1) * 100:+.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Micro-benchmarks: asyncio vs uvloop vs oxloop (median of N rounds).",
    )
    parser.add_argument(
        "--loops",
        default=",".join(DEFAULT_LOOPS),
        help="comma-separated loops to compare (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated workloads to run (default: all): " + ", ".join(WORKLOADS),
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per cell (default: 5)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed warm-up rounds per cell at 1/10 size (default: 1)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="multiply every workload's size, e.g. 0.1 for a quick run "
        "(default: 1, or 0.01 with --callgrind)",
    )
    parser.add_argument(
        "--gc",
        action="store_true",
        help="keep the cyclic garbage collector enabled while timing",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions per operation under valgrind's callgrind "
        "instead of timing (see the module docstring)",
    )
    args = parser.parse_args(argv)
    global KEEP_GC
    KEEP_GC = args.gc
    if args.scale is None:
        args.scale = 0.01 if args.callgrind else 1.0

    names = [x.strip() for x in args.loops.split(",") if x.strip()]
    unknown = [x for x in names if x not in LOOP_NAMES]
    if unknown:
        parser.error(f"unknown loop(s) {unknown}; choose from {', '.join(LOOP_NAMES)}")
    selected = [x.strip() for x in args.only.split(",") if x.strip()] or list(WORKLOADS)
    unknown = [x for x in selected if x not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    factories = loop_factories(names)
    if not factories:
        print("no loop to benchmark", file=sys.stderr)
        return 1
    if args.callgrind:
        return callgrind_main(args, list(factories), selected)
    signal.signal(signal.SIGALRM, _on_alarm)

    print(
        f"Python {sys.version.split()[0]}, loops: {', '.join(factories)}, "
        f"rounds: {args.rounds} (median), scale: {args.scale:g}, "
        f"GC {'enabled' if KEEP_GC else 'disabled while timing'}"
    )
    # results[workload][loop] = list of seconds, or None once the cell failed
    results: dict[str, dict[str, list[float] | None]] = {}
    for wname in selected:
        fn, full_n, _ = WORKLOADS[wname]
        n = max(1, int(full_n * args.scale))
        cells: dict[str, list[float] | None] = {lname: [] for lname in factories}
        results[wname] = cells
        print(f"\n{wname} (n={n:,})", flush=True)
        for lname, factory in factories.items():
            for _ in range(args.warmup):
                try:
                    run_cell(factory, fn, max(1, n // 10))
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    print(f"  {lname:8} warm-up failed: {exc!r}", flush=True)
                    cells[lname] = None
        for rnd in range(args.rounds):
            for lname, factory in factories.items():
                times = cells[lname]
                if times is None:
                    continue
                try:
                    times.append(run_cell(factory, fn, n))
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    what = "timed out" if isinstance(exc, CellTimeout) else f"failed: {exc!r}"
                    print(f"  {lname:8} round {rnd + 1} {what}", flush=True)
                    cells[lname] = None
        for lname, times in cells.items():
            if times:
                med = statistics.median(times)
                spread = f"{fmt_time(min(times))} .. {fmt_time(max(times))}"
                print(
                    f"  {lname:8} median {fmt_time(med):>10}   "
                    f"({n / med / 1e6:.2f} M ops/s; rounds {spread})",
                    flush=True,
                )
            else:
                print(f"  {lname:8} error", flush=True)

    print_table(results, list(factories), args)
    return 0


def print_table(
    results: dict[str, dict[str, list[float] | None]],
    loops: list[str],
    args: argparse.Namespace,
) -> None:
    have_uv = "uvloop" in loops
    have_aio = "asyncio" in loops
    have_ox = "oxloop" in loops
    header = ["workload", *loops]
    if have_ox and have_uv:
        header.append("oxloop vs uvloop")
    if have_ox and have_aio:
        header.append("oxloop vs asyncio")
    have_nostats = have_ox and "oxloop-nostats" in loops
    if have_nostats:
        header.append("stats cost")
    rows: list[list[str]] = []
    for wname, cells in results.items():
        fn, full_n, label = WORKLOADS[wname]
        n = max(1, int(full_n * args.scale))
        med: dict[str, float | None] = {
            lname: (statistics.median(t) if t else None) for lname, t in cells.items()
        }
        row = [f"{label} ({_count(n)})"]
        row += [fmt_time(m) if m is not None else "error" for m in med.values()]
        if have_ox and have_uv:
            row.append(fmt_ratio(med["uvloop"], med["oxloop"]))
        if have_ox and have_aio:
            row.append(fmt_ratio(med["asyncio"], med["oxloop"]))
        if have_nostats:
            row.append(fmt_cost(med["oxloop"], med["oxloop-nostats"]))
        rows.append(row)

    gc_note = "GC enabled" if KEEP_GC else "GC disabled while timing"
    print(
        f"\nMedian of {args.rounds} rounds, scale {args.scale:g}, {gc_note}, Python "
        f"{sys.version.split()[0]}; ratios are speedups (> 1 means oxloop is faster).\n"
    )
    print_markdown(header, rows)




def _count(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


if __name__ == "__main__":
    sys.exit(main())
