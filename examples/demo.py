"""The asyncio model on oxloop, measured side by side with stdlib asyncio (and uvloop).

Run it with ``make demo`` (or ``.venv/bin/python examples/demo.py`` after ``make build``).
It shows the things asyncio is for, and prints one table comparing the event loops:

A. Tens of thousands of concurrent tasks. 50,000 tasks each sleep a small random delay
   (0-10 ms), then all wait on one ``asyncio.Event``; once every task is waiting, the event is
   set and they finish. Reported: wall time, peak memory (growth of the process's peak RSS,
   which counts native allocations too -- tracemalloc would miss uvloop's and oxloop's), and
   the cost per task. For comparison the same work is done with OS threads (``time.sleep`` and
   a ``threading.Event``) -- but 50,000 threads are too heavy for a small machine, so threads
   run 2,000 at a time and the comparison is per unit: microseconds and KiB per task versus
   per thread.
B. Cancellation. 20,000 tasks block in ``asyncio.sleep(3600)``; each is cancelled through its
   Task object. Reported: time for the ``cancel()`` calls, time until every task has finished,
   and that every one reports ``cancelled()``.
C. Staying responsive around CPU-bound work. 8 jobs of ~0.2 s of pure-Python arithmetic go to a
   ``concurrent.futures.ProcessPoolExecutor`` through ``loop.run_in_executor`` while a
   heartbeat task sleeps 10 ms in a loop and records how late it wakes up (the loop's lag).
   For contrast, one such job is then run inline on the loop, which stalls the heartbeat.
D. Past one machine's pool, when Dask's ``distributed`` is installed: the same jobs through
   ``loop.run_in_executor(client.get_executor(), ...)`` on a ``LocalCluster`` of worker
   processes. Pointing the same code at a real cluster takes only
   ``distributed.Client("tcp://scheduler-host:8786")`` in place of the local one.

Every (loop, section) runs in a fresh subprocess -- this script re-invokes itself with
``--child SECTION --loop NAME`` -- so memory numbers of one loop do not leak into another's.
uvloop is optional: without it its column is left out. A section that fails on a loop shows
``error`` in its cells and the rest of the demo goes on. Runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import importlib
import importlib.util
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

N_TASKS = 50_000
N_THREADS = 2_000
MAX_DELAY = 0.010  # seconds: the longest random sleep in section A
N_CANCEL = 20_000
N_JOBS = 8
JOB_SECONDS = 0.2
HEARTBEAT = 0.010
CHILD_TIMEOUT = 90.0
LOOPS = ("asyncio", "uvloop", "oxloop")


# --- measuring memory ---------------------------------------------------------------------------


def _rss_kib() -> int:
    """Current resident set size, KiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_kib() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


# --- section A: many concurrent tasks (and threads for comparison) -------------------------------


def _delays(n: int) -> list[float]:
    rng = random.Random(42)
    return [rng.uniform(0, MAX_DELAY) for _ in range(n)]


async def _many_tasks(n: int) -> dict[str, Any]:
    delays = _delays(n)
    arrived = asyncio.Event()
    go = asyncio.Event()
    waiting = 0

    async def worker(i: int) -> int:
        nonlocal waiting
        await asyncio.sleep(delays[i])
        waiting += 1
        if waiting == n:
            arrived.set()
        await go.wait()
        return i

    base = _rss_kib()
    _reset_peak_rss()
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(worker(i)) for i in range(n)]
    await arrived.wait()  # every task is alive and blocked on the event
    go.set()
    results = await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    peak = _peak_rss_kib() - base
    if sum(results) != n * (n - 1) // 2:
        raise RuntimeError("gather returned wrong results")
    return {"wall": wall, "peak_kib": peak}


def _many_threads(n: int) -> dict[str, Any]:
    delays = _delays(n)
    arrived = threading.Event()
    go = threading.Event()
    lock = threading.Lock()
    waiting = 0
    done = [False] * n

    def worker(i: int) -> None:
        nonlocal waiting
        time.sleep(delays[i])
        with lock:
            waiting += 1
            if waiting == n:
                arrived.set()
        go.wait()
        done[i] = True

    base = _rss_kib()
    _reset_peak_rss()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    arrived.wait()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    peak = _peak_rss_kib() - base
    if not all(done):
        raise RuntimeError("a thread did not finish")
    return {"wall": wall, "peak_kib": peak}


# --- section B: cancellation -----------------------------------------------------------------


async def _cancel_many(n: int) -> dict[str, Any]:
    tasks = [asyncio.ensure_future(asyncio.sleep(3600)) for _ in range(n)]
    await asyncio.sleep(0)  # every task starts and blocks in its sleep
    if any(t.done() for t in tasks):
        raise RuntimeError("a task finished early")
    t0 = time.perf_counter()
    for t in tasks:
        t.cancel()
    t1 = time.perf_counter()
    await asyncio.gather(*tasks, return_exceptions=True)
    t2 = time.perf_counter()
    return {
        "cancel_calls": t1 - t0,
        "until_done": t2 - t0,
        "n_cancelled": sum(1 for t in tasks if t.cancelled()),
    }


# --- section C: CPU-bound work in a process pool ------------------------------------------------


def cpu_job(iterations: int, job: int = 0) -> int:
    """Pure-Python arithmetic: holds a CPU (and, if run on the loop, the GIL) throughout.
    `job` tells jobs apart for Dask, which runs calls with the same arguments once."""
    acc = 0
    for i in range(iterations):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def calibrate(seconds: float) -> int:
    """Iterations of cpu_job that take about `seconds` on this machine."""
    n = 20_000
    while True:
        t0 = time.perf_counter()
        cpu_job(n)
        took = time.perf_counter() - t0
        if took > 0.05:
            return max(1, int(n * seconds / took))
        n *= 4


@contextlib.contextmanager
def _process_pool(workers: int) -> Iterator[concurrent.futures.Executor]:
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        yield pool


@contextlib.contextmanager
def _dask_cluster(workers: int) -> Iterator[concurrent.futures.Executor]:
    """A Dask cluster of `workers` worker processes on this machine. The same code points at
    a real cluster with `distributed.Client("tcp://scheduler-host:8786").get_executor()`."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    )
    with cluster, distributed.Client(cluster) as client:
        yield client.get_executor()


async def _cpu_pool(
    iterations: int,
    executor: Callable[[int], contextlib.AbstractContextManager[concurrent.futures.Executor]],
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    stop = False

    async def heartbeat() -> None:
        while not stop:
            t0 = time.perf_counter()
            await asyncio.sleep(HEARTBEAT)
            lags.append(time.perf_counter() - t0 - HEARTBEAT)

    workers = os.cpu_count() or 2
    with executor(workers) as pool:
        # Start the worker processes first: the timing below is about the jobs and the loop.
        await asyncio.gather(*[loop.run_in_executor(pool, cpu_job, 1, i) for i in range(workers)])
        beat = asyncio.ensure_future(heartbeat())
        await asyncio.sleep(5 * HEARTBEAT)
        lags.clear()
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *[loop.run_in_executor(pool, cpu_job, iterations, i) for i in range(N_JOBS)]
        )
        total = time.perf_counter() - t0
        pool_lags = list(lags)
        if len(set(results)) != 1:
            raise RuntimeError("jobs returned differing results")

        # For contrast: the same job run inline, on the loop's thread.
        lags.clear()
        await asyncio.sleep(2 * HEARTBEAT)
        t1 = time.perf_counter()
        cpu_job(iterations)
        inline = time.perf_counter() - t1
        await asyncio.sleep(2 * HEARTBEAT)
        inline_lags = list(lags)
        stop = True
        await beat
    return {
        "total": total,
        "inline": inline,
        "workers": workers,
        "worst_lag": max(pool_lags) if pool_lags else None,
        "median_lag": statistics.median(pool_lags) if pool_lags else None,
        "beats": len(pool_lags),
        "inline_worst_lag": max(inline_lags) if inline_lags else None,
    }


# --- the child process: one section on one loop -------------------------------------------------


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "asyncio":
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(name).new_event_loop
    return factory


def _run_on(name: str, coro: Any) -> Any:
    loop = _loop_factory(name)()
    try:
        asyncio.set_event_loop(loop)
        result = loop.run_until_complete(coro)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        return result
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def child(section: str, loop_name: str, iterations: int) -> None:
    if section == "tasks":
        result = _run_on(loop_name, _many_tasks(N_TASKS))
    elif section == "threads":
        result = _many_threads(N_THREADS)
    elif section == "cancel":
        result = _run_on(loop_name, _cancel_many(N_CANCEL))
    elif section == "cpu":
        result = _run_on(loop_name, _cpu_pool(iterations, _process_pool))
    elif section == "dask":
        result = _run_on(loop_name, _cpu_pool(iterations, _dask_cluster))
    else:
        raise SystemExit(f"unknown section {section!r}")
    print(json.dumps(result))


# --- the parent: run every child, print the table -----------------------------------------------


def run_child(section: str, loop_name: str, iterations: int) -> dict[str, Any] | None:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        section,
        "--loop",
        loop_name,
        "--iterations",
        str(iterations),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(
            f"  ! {section} on {loop_name}: timed out after {CHILD_TIMEOUT:.0f} s", file=sys.stderr
        )
        return None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"  ! {section} on {loop_name}: exit {proc.returncode}: {tail}", file=sys.stderr)
        return None
    try:
        data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"  ! {section} on {loop_name}: no result in {proc.stdout[-200:]!r}", file=sys.stderr)
        return None
    return data


def median_result(results: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Field by field median of repeated runs; None if any run failed (the cell is 'error')."""
    if not results or any(r is None for r in results):
        return None
    merged: dict[str, Any] = {}
    for key in results[0]:
        values = [r[key] for r in results if r is not None]
        if key == "n_cancelled":
            merged[key] = min(values)  # every run must have cancelled every task
        elif any(v is None for v in values):
            merged[key] = None
        else:
            merged[key] = statistics.median(values)
    return merged


def available_loops() -> list[str]:
    names = []
    for name in LOOPS:
        if name == "asyncio":
            names.append(name)
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            print(f"({name} is not installed: its column is left out)")
            continue
        names.append(name)
    return names


class Row:
    """One metric: a value per loop; `better` says how to compare ('lower', 'higher' or '')."""

    def __init__(self, label: str, better: str = "lower") -> None:
        self.label = label
        self.better = better
        self.values: dict[str, float | None] = {}
        self.texts: dict[str, str] = {}

    def set(self, loop: str, value: float | None, text: str) -> None:
        self.values[loop] = value
        self.texts[loop] = text

    def ratio(self, other: str) -> str:
        ours, theirs = self.values.get("oxloop"), self.values.get(other)
        if not self.better or ours is None or theirs is None or ours <= 0 or theirs <= 0:
            return ""
        r = theirs / ours if self.better == "lower" else ours / theirs
        return f"{r:.2f}x"


def _fmt_s(x: float) -> str:
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def _fmt_ms(x: float) -> str:
    return f"{x * 1e3:.1f} ms"


def build_rows(
    loops: list[str], res: dict[tuple[str, str], dict[str, Any] | None]
) -> list[Row | str]:
    rows: list[Row | str] = []
    thr = res.get(("threads", "-"))
    thr_us = thr_kib = None
    if thr is not None:
        thr_us = max(thr["wall"] - MAX_DELAY, 1e-9) / N_THREADS * 1e6
        thr_kib = thr["peak_kib"] / N_THREADS

    rows.append(f"A. {N_TASKS:,} concurrent tasks (sleep 0-10 ms, then wait on one Event)")
    wall = Row("wall time")
    mem = Row("peak memory (RSS growth)")
    per_us = Row("time per task (µs)")
    per_kib = Row("memory per task (KiB)")
    t_ratio = Row("thread-to-task cost ratio: time", better="")
    m_ratio = Row("thread-to-task cost ratio: memory", better="")
    for lp in loops:
        r = res.get(("tasks", lp))
        if r is None:
            for row in (wall, mem, per_us, per_kib, t_ratio, m_ratio):
                row.set(lp, None, "error")
            continue
        us = max(r["wall"] - MAX_DELAY, 1e-9) / N_TASKS * 1e6
        kib = r["peak_kib"] / N_TASKS
        wall.set(lp, r["wall"], _fmt_s(r["wall"]))
        mem.set(lp, r["peak_kib"], f"{r['peak_kib'] / 1024:.1f} MiB")
        per_us.set(lp, us, f"{us:.1f}")
        per_kib.set(lp, kib, f"{kib:.2f}")
        if thr_us is not None and thr_kib is not None:
            t_ratio.set(lp, thr_us / us, f"{thr_us / us:.0f}")
            m_ratio.set(
                lp, thr_kib / kib if kib > 0 else None, f"{thr_kib / kib:.0f}" if kib > 0 else "-"
            )
        else:
            t_ratio.set(lp, None, "error")
            m_ratio.set(lp, None, "error")
    rows += [wall, mem, per_us, per_kib, t_ratio, m_ratio]

    rows.append(f"B. cancelling {N_CANCEL:,} tasks blocked in sleep(3600)")
    calls = Row("cancel() on every Task")
    until = Row("until all have finished")
    ok = Row("tasks reporting cancelled()", better="")
    for lp in loops:
        r = res.get(("cancel", lp))
        if r is None:
            for row in (calls, until, ok):
                row.set(lp, None, "error")
            continue
        calls.set(lp, r["cancel_calls"], _fmt_ms(r["cancel_calls"]))
        until.set(lp, r["until_done"], _fmt_ms(r["until_done"]))
        mark = "all" if r["n_cancelled"] == N_CANCEL else "NOT ALL"
        ok.set(lp, r["n_cancelled"], f"{r['n_cancelled']:,} ({mark})")
    rows += [calls, until, ok]

    rows += _cpu_rows(
        loops,
        res,
        "cpu",
        f"C. {N_JOBS} CPU-bound jobs (~{JOB_SECONDS} s each) in a ProcessPoolExecutor, "
        "heartbeat every 10 ms",
    )
    if any(("dask", lp) in res for lp in loops):
        rows += _cpu_rows(
            loops,
            res,
            "dask",
            f"D. the same {N_JOBS} jobs through Dask (distributed.LocalCluster, worker processes)",
        )
    return rows


def _cpu_rows(
    loops: list[str], res: dict[tuple[str, str], dict[str, Any] | None], section: str, title: str
) -> list[Row | str]:
    total = Row(
        f"total time ({N_JOBS} x {JOB_SECONDS} s, {os.cpu_count() or 2} workers)", better=""
    )
    lag = Row("worst heartbeat lag", better="")
    med = Row("median heartbeat lag", better="")
    beats = Row("heartbeats during the jobs", better="")
    inline = Row("worst lag if ONE job runs on the loop", better="")
    for lp in loops:
        r = res.get((section, lp))
        if r is None:
            for row in (total, lag, med, beats, inline):
                row.set(lp, None, "error")
            continue
        total.set(lp, r["total"], _fmt_s(r["total"]))
        wl = r["worst_lag"]
        lag.set(lp, wl, _fmt_ms(wl) if wl is not None else "no beats")
        ml = r["median_lag"]
        med.set(lp, ml, _fmt_ms(ml) if ml is not None else "-")
        beats.set(lp, r["beats"], str(r["beats"]))
        il = r["inline_worst_lag"]
        inline.set(lp, il, _fmt_ms(il) if il is not None else "-")
    return [title, total, lag, med, beats, inline]


def print_table(loops: list[str], rows: list[Row | str]) -> None:
    ratio_cols = []
    if "oxloop" in loops and "asyncio" in loops:
        ratio_cols.append("asyncio")
    if "oxloop" in loops and "uvloop" in loops:
        ratio_cols.append("uvloop")
    header = ["metric", *loops, *[f"oxloop vs {c}" for c in ratio_cols]]
    body: list[list[str] | str] = []
    for row in rows:
        if isinstance(row, str):
            body.append(row)
            continue
        body.append(
            [
                row.label,
                *[row.texts.get(lp, "-") for lp in loops],
                *[row.ratio(c) for c in ratio_cols],
            ]
        )
    cells = [header, *[b for b in body if isinstance(b, list)]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    widths[0] += 2  # metric rows are indented under their section title

    def line(cols: list[str]) -> str:
        parts = [f"{cols[0]:<{widths[0]}}"] + [
            f"{c:>{w}}" for c, w in zip(cols[1:], widths[1:], strict=True)
        ]
        return "  " + " | ".join(parts)

    rule = "  " + "-+-".join("-" * w for w in widths)
    print(line(header))
    print(rule)
    for b in body:
        if isinstance(b, str):
            print(f"  {b}")
        else:
            print(line(["  " + b[0], *b[1:]]))


HEADER = """\
oxloop demo: the asyncio model on oxloop, next to stdlib asyncio{uv}.
Python {py}, {cores} CPU core(s). Each loop runs each section in a fresh subprocess,
{repeat} times, round-robin over the loops; every number below is the median of those runs.

  A. {n_tasks:,} tasks sleep 0-10 ms, then all wait on one asyncio.Event: coroutines are
     cheap, so tens of thousands can be in flight at once. OS threads doing the same
     (time.sleep + threading.Event) run {n_threads:,} at a time -- {n_tasks:,} threads would
     swamp a small machine -- so compare the per-unit rows: cost = (wall time - 10 ms longest
     sleep) / count, and peak RSS growth / count.
  B. Cancellation goes through each Task object; every task must end cancelled().
  C. CPU-bound pure-Python jobs go to worker processes via loop.run_in_executor, so the loop
     keeps serving a 10 ms heartbeat; running one job on the loop itself stalls it. The work
     is done by other processes, so only responsiveness is the loop's: the total time and
     the worst lag (the workers take every core) mostly show how busy the machine is.
  D. (with Dask's distributed installed) the same jobs through a Dask cluster's executor,
     run_in_executor(client.get_executor(), ...): a LocalCluster here, a real cluster with
     Client("tcp://scheduler:8786") and no other change.

Ratio columns: how many times better oxloop is (time or memory, other / oxloop; > 1 means
oxloop wins). Lags, counts and already-relative rows have no ratio: they are shown, not ranked.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--loop", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="fresh runs of each (loop, section); the table shows medians (default: 3)",
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.loop, args.iterations)
        return 0

    loops = available_loops()
    print(
        HEADER.format(
            uv=" and uvloop" if "uvloop" in loops else " (uvloop not installed)",
            py=sys.version.split()[0],
            cores=os.cpu_count(),
            n_tasks=N_TASKS,
            n_threads=N_THREADS,
            repeat=args.repeat,
        )
    )
    started = time.perf_counter()
    iterations = calibrate(JOB_SECONDS)
    # Repeats go round-robin over the loops, so that a noisy moment hits them all alike.
    sections = ["tasks", "cancel", "cpu"]
    if importlib.util.find_spec("distributed") is not None:
        sections.append("dask")
    plan = [("threads", "-")] + [(s, lp) for s in sections for lp in loops]
    runs: dict[tuple[str, str], list[dict[str, Any] | None]] = {key: [] for key in plan}
    for rnd in range(max(1, args.repeat)):
        print(f"Run {rnd + 1}/{args.repeat}:", end="", flush=True)
        for section, lp in plan:
            print(f" {section}/{lp if lp != '-' else 'os'}", end="", flush=True)
            runs[(section, lp)].append(
                run_child(section, "asyncio" if lp == "-" else lp, iterations)
            )
        print()
    print()
    res = {key: median_result(results) for key, results in runs.items()}
    print_table(loops, build_rows(loops, res))

    thr = res.get(("threads", "-"))
    if thr is not None:
        us = max(thr["wall"] - MAX_DELAY, 1e-9) / N_THREADS * 1e6
        kib = thr["peak_kib"] / N_THREADS
        print(
            f"\n  OS threads, for comparison: {N_THREADS:,} threads took "
            f"{_fmt_s(thr['wall'])} and {thr['peak_kib'] / 1024:.1f} MiB of RSS: "
            f"{us:.1f} µs and {kib:.1f} KiB per thread."
        )
        print(
            f"  At that rate {N_TASKS:,} threads would need ~{us * N_TASKS / 1e6:.1f} s and "
            f"~{kib * N_TASKS / 1024:.0f} MiB (plus 8 MiB of virtual address space per stack)."
        )
    print(f"\n  Demo finished in {time.perf_counter() - started:.1f} s.")
    failed = [k for k, v in res.items() if v is None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
