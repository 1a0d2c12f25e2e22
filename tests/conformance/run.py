"""CPython's own test_asyncio, run on oxloop.

    python tests/conformance/run.py                  # every module, two workers
    python tests/conformance/run.py --module tasks -k wait_for -v
    python tests/conformance/run.py --update         # new failures as expectation lines

Each module of the running interpreter's `test.test_asyncio` runs in a worker process of its
own (_worker.py) with the event loop policy, `asyncio.new_event_loop()` and the suite's own loop
factories pointed at oxloop (_oxpatch.py). Every test has a timeout; a test that hangs or
crashes its worker is recorded as such, and the worker starts again after it.

Tests that do not pass on oxloop are listed in expectations.txt with a reason. The run fails
(exit 1) when a test that is not listed fails, errors, hangs or crashes. Listed tests that now
pass (other than on asyncio's own loop) are reported as FIXED, so that the list can be pruned.
A pass counts as conformance ("on oxloop") only when the test built an oxloop loop.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _expectations  # noqa: E402

WORKER = HERE / "_worker.py"
EXPECTATIONS = HERE / "expectations.txt"
VERSION = sys.version_info[:2]
PY = f"{VERSION[0]}.{VERSION[1]}"

NOT_ON_THIS_PLATFORM = {"test_proactor_events", "test_windows_events", "test_windows_utils"}
# Rough cost, so that the slow modules start first and the workers finish together.
COST = {
    "test_tasks": 100, "test_ssl": 60, "test_taskgroups": 40, "test_events": 30,
    "test_streams": 20, "test_sslproto": 20, "test_base_events": 15, "test_futures": 15,
    "test_locks": 10, "test_waitfor": 10, "test_unix_events": 10,
}


@dataclass
class ModuleRun:
    """One module's results: its planned test ids and a record per test id."""

    name: str
    plan: list[str] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    skip_reason: str | None = None
    error: str | None = None
    seconds: float = 0.0
    restarts: int = 0


# -- running the workers ---------------------------------------------------------------------


def discover() -> list[str]:
    try:
        import test.test_asyncio as pkg
    except ImportError as exc:
        sys.exit(f"{sys.executable} has no test.test_asyncio package (CPython's tests): {exc}")

    return sorted(
        p.stem for p in Path(pkg.__path__[0]).glob("test_*.py")
        if p.stem not in NOT_ON_THIS_PLATFORM
    )


def normalise_module(name: str) -> str:
    name = name.rsplit(".", 1)[-1]
    return name if name.startswith("test_") else f"test_{name}"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """The worker and whatever its tests started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class ModuleRunner:
    """Runs one module in worker processes until every planned test has a record."""

    def __init__(
        self, name: str, args: argparse.Namespace, logdir: Path, listed: list[str]
    ) -> None:
        self.run = ModuleRun(name)
        self.args = args
        self.log = logdir / f"{name}.log"
        self.events = logdir / f"{name}.events.jsonl"
        self.ids = logdir / f"{name}.remaining"
        self.listed = logdir / f"{name}.listed"
        self.listed.write_text("".join(f"{i}\n" for i in listed))
        self.events.write_text("")
        self.offset = 0
        self.current: str | None = None  # started, no result yet
        self.done = False

    def __call__(self) -> ModuleRun:
        run = self.run
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix=f"oxloop-conformance-{run.name}-"))
        remaining: list[str] | None = None  # None: the first worker, which plans
        try:
            while True:
                rc, killed = self._worker(workdir, remaining)
                if self.done or run.skip_reason or run.error:
                    break
                if self.current is None:
                    where = "between tests" if run.plan or remaining else "before planning"
                    run.error = f"worker exited with {rc} {where}\n{_tail(self.log)}"
                    break
                self._record_lost(self.current, rc, killed)
                remaining = [t for t in run.plan if t not in run.records]
                if not remaining:
                    break
                run.restarts += 1
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not run.skip_reason:
            for test_id in run.plan:
                run.records.setdefault(test_id, {
                    "id": test_id, "outcome": "not-run", "oxloop": 0, "asyncio": 0,
                    "detail": "never started: a class or module fixture failed",
                })
        run.seconds = time.monotonic() - started
        return run

    def _worker(self, workdir: Path, remaining: list[str] | None) -> tuple[int, bool]:
        args = self.args
        cmd = [
            sys.executable, str(WORKER), "--module", self.run.name, "--events", str(self.events),
            "--timeout", str(args.timeout), "--listed", str(self.listed),
            "--listed-timeout", str(args.expected_timeout),
        ]
        if remaining is not None:
            self.ids.write_text("".join(f"{i}\n" for i in remaining))
            cmd += ["--ids", str(self.ids)]
        else:
            for k in args.k:
                cmd += ["-k", k]
        self.current = None
        with open(self.log, "ab") as log:
            log.write(f"\n=== {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
            last_progress = time.monotonic()
            killed = False
            while True:
                try:
                    proc.wait(timeout=0.5)
                    exited = True
                except subprocess.TimeoutExpired:
                    exited = False
                if self._read_events():
                    last_progress = time.monotonic()
                if exited:
                    break
                # faulthandler's watchdog in the worker ends a hung test; this is the backstop.
                if time.monotonic() - last_progress > args.timeout + 30:
                    killed = True
                    _kill_group(proc)
                    proc.wait()
            _kill_group(proc)  # children the tests left behind
        return proc.returncode, killed

    def _read_events(self) -> bool:
        with open(self.events, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        run = self.run
        lines = [line for line in data[:end].splitlines() if line.strip()]
        for line in lines:
            ev = json.loads(line)
            if "plan" in ev:
                run.plan = ev["plan"]
            elif "start" in ev:
                self.current = ev["start"]
            elif "outcome" in ev:
                run.records[ev["id"]] = ev
                if ev["id"] == self.current:
                    self.current = None
            elif "module_skip" in ev:
                run.skip_reason = ev["module_skip"]
            elif "module_error" in ev:
                run.error = ev["module_error"]
            elif ev.get("done"):
                self.done = True
        return bool(lines)

    def _record_lost(self, test_id: str, rc: int, killed: bool) -> None:
        """The worker died during `test_id`: faulthandler's timeout, our backstop, or a crash."""
        tail = _tail(self.log)
        timed_out = killed or "\nTimeout (" in tail
        why = ("no result in time: the worker was stopped" if timed_out
               else f"the worker died with exit status {rc}")
        self.run.records[test_id] = {
            "id": test_id, "outcome": "timeout" if timed_out else "crash",
            "detail": f"{why}; its last output:\n{tail}", "oxloop": 0, "asyncio": 0,
        }


# -- judging -----------------------------------------------------------------------------------


def classify(rec: dict[str, Any], exp: _expectations.Expectation | None) -> str:
    """One of: pass, pass-asyncio, pass-noloop, skip, expected, fixed, FAIL."""
    outcome = rec["outcome"]
    if outcome == "skip":
        return "skip"
    if outcome == "pass":
        on_asyncio_only = rec.get("oxloop", 0) == 0 and rec.get("asyncio", 0) > 0
        if exp is not None:
            # A listed test that passes on asyncio's own loop is still no conformance.
            return "expected" if on_asyncio_only else "fixed"
        if rec.get("oxloop", 0) > 0:
            return "pass"
        return "pass-asyncio" if on_asyncio_only else "pass-noloop"
    return "expected" if exp is not None else "FAIL"


def summary(rec: dict[str, Any]) -> str:
    """One line on why a test did not pass: the exception, or why its worker stopped."""
    detail = rec.get("detail", "")
    if rec["outcome"] in ("timeout", "crash", "not-run"):
        return detail.split("\n", 1)[0].split(";", 1)[0]
    return first_error_line(detail)


def first_error_line(detail: str) -> str:
    lines = [line for line in detail.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith((" ", "\t", "Traceback", "During handling", "The above")):
            return line.strip()[:200]
    return lines[-1].strip()[:200] if lines else ""


def infer_reason(rec: dict[str, Any]) -> str:
    """A first guess at `category: reason` for an expectation line (--update); check it."""
    detail = rec.get("detail", "")
    if rec["outcome"] == "pass":
        return "private: runs on asyncio's own loop, not oxloop"
    if "NotImplementedError" in detail:
        for area, what in (("networking", "networking (issue 4)"),
                           ("subprocess", "subprocess (issue 5)"),
                           ("pipe", "pipes (issue 5)"), ("TLS", "TLS")):
            if f"{area} support is not available" in detail:
                return f"not-yet: {what}"
    if rec.get("missing"):
        return "private: uses loop." + ", loop.".join(rec["missing"])
    if rec.get("oxloop", 0) == 0 and rec.get("asyncio", 0) > 0:
        return "private: asyncio's own loop: " + summary(rec)
    if rec.get("fake_clock"):
        # new_test_loop(gen): _testloop.OxTestLoop, TestLoop's virtual clock on oxloop.
        return "bug: TODO (on TestLoop's virtual clock) " + summary(rec)
    return "bug: TODO " + summary(rec)


# -- the command -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run CPython's test_asyncio on oxloop.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__,
    )
    parser.add_argument("--module", action="append", default=[],
                        help="run only this module (tasks or test_tasks); repeatable")
    parser.add_argument("-k", action="append", default=[],
                        help="only tests whose id contains this (a pattern if it has a *)")
    parser.add_argument("--update", action="store_true",
                        help="print the unexpected failures as expectation lines")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="workers at once (2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test (60)")
    parser.add_argument("--expected-timeout", type=float, default=15.0,
                        help="seconds per test listed in the expectations (15)")
    parser.add_argument("--expectations", type=Path, default=EXPECTATIONS)
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="print the traceback of each unexpected failure")
    parser.add_argument("--json", type=Path, help="write every test's record to this file")
    parser.add_argument("--logs", type=Path, help="keep the worker logs in this directory")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        import oxloop
    except ImportError as exc:
        print(f"cannot import oxloop with {sys.executable}: {exc}", file=sys.stderr)
        return 2
    try:
        expectations = _expectations.parse(args.expectations.read_text("utf-8"), VERSION)
    except (OSError, ValueError) as exc:
        print(f"{args.expectations}: {exc}", file=sys.stderr)
        return 2

    modules = discover()
    if args.module:
        wanted = [normalise_module(m) for m in args.module]
        unknown = [m for m in wanted if m not in modules]
        if unknown:
            print(f"no such test_asyncio module on Python {PY}: {', '.join(unknown)}",
                  file=sys.stderr)
            return 2
        modules = wanted
    modules.sort(key=lambda m: -COST.get(m, 5))

    logdir = args.logs or Path(tempfile.mkdtemp(prefix="oxloop-conformance-"))
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"CPython {sys.version.split()[0]}'s test_asyncio on oxloop "
          f"({Path(oxloop.__file__).parent}): {len(modules)} modules, {args.jobs} workers, "
          f"{args.timeout:.0f}s per test ({args.expected_timeout:.0f}s if listed)", flush=True)

    lock = threading.Lock()
    started = time.monotonic()

    def one(name: str) -> ModuleRun:
        listed = [i for i in expectations if i.split(".", 1)[0] == name]
        run = ModuleRunner(name, args, logdir, listed)()
        n = Counter(classify(r, expectations.get(i)) for i, r in run.records.items())
        note = run.skip_reason or ""
        if run.error:
            note = "module error: " + run.error.splitlines()[0]
        with lock:
            print(f"  {name:<26} {len(run.records):5d} tests {run.seconds:6.1f}s  "
                  f"unexpected failures: {n['FAIL']}  {note}", flush=True)
        return run

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = sorted(pool.map(one, modules), key=lambda r: r.name)
    failed = report(runs, expectations, args, time.monotonic() - started)
    if args.json:
        records = {i: r for run in runs for i, r in run.records.items()}
        args.json.write_text(json.dumps({"python": PY, "records": records}, indent=1))
    if failed:
        print(f"(worker logs: {logdir})", file=sys.stderr)
    elif not args.logs:
        shutil.rmtree(logdir, ignore_errors=True)
    return 1 if failed else 0


def report(
    runs: list[ModuleRun], expectations: dict[str, _expectations.Expectation],
    args: argparse.Namespace, seconds: float,
) -> int:
    """Print the table and the lists; return the number of unexpected failures."""
    cols = ("tests", "passed", "on oxloop", "failed", "skipped", "expected", "fixed")
    header = f"{'module':<26}" + "".join(f"{c:>10}" for c in cols) + f"{'secs':>7}"
    print(f"\n{header}\n{'-' * len(header)}")
    total: Counter[str] = Counter()
    by_kind: dict[str, list[dict[str, Any]]] = {"FAIL": [], "fixed": [], "pass-asyncio": []}
    seen: set[str] = set()
    for run in runs:
        n: Counter[str] = Counter()
        for test_id, rec in run.records.items():
            seen.add(test_id)
            kind = classify(rec, expectations.get(test_id))
            n[kind] += 1
            by_kind.get(kind, []).append(rec)
        row = {
            "tests": len(run.records), "passed": n["pass"] + n["pass-asyncio"] + n["pass-noloop"],
            "on oxloop": n["pass"], "failed": n["FAIL"] + (1 if run.error else 0),
            "skipped": n["skip"], "expected": n["expected"], "fixed": n["fixed"],
        }
        total.update(row)
        note = f"  module skipped: {run.skip_reason}" if run.skip_reason else ""
        note += "  MODULE ERROR (below)" if run.error else ""
        note += f"  ({run.restarts} restarts after a hang or crash)" if run.restarts else ""
        print(f"{run.name:<26}" + "".join(f"{row[c]:>10}" for c in cols)
              + f"{run.seconds:7.1f}{note}")
    print("-" * len(header))
    print(f"{'total':<26}" + "".join(f"{total[c]:>10}" for c in cols) + f"{seconds:7.1f}")
    print("passed: not in expectations.txt and passed; on oxloop: those of them that built an "
          "oxloop loop\nexpected: listed in expectations.txt, and failed or passed on asyncio's "
          "own loop only; fixed: listed, yet passed")

    for run in runs:
        if run.error:
            print(f"\nMODULE ERROR in {run.name}:\n{run.error}")
    unexpected = sorted(by_kind["FAIL"], key=lambda r: r["id"])
    if unexpected:
        print(f"\nUNEXPECTED FAILURES ({len(unexpected)}): not in expectations.txt")
        for rec in unexpected:
            print(f"  {rec['id']}  [{rec['outcome']}] {summary(rec)}")
            if args.verbose:
                print("    " + rec.get("detail", "").rstrip().replace("\n", "\n    "))
    fixed = sorted(r["id"] for r in by_kind["fixed"])
    if fixed:
        print(f"\nFIXED ({len(fixed)}): listed in expectations.txt, but passed (not on "
              "asyncio's own loop): remove their lines")
        for test_id in fixed:
            print(f"  {test_id}  ({expectations[test_id].text()})")
    foreign = sorted(by_kind["pass-asyncio"], key=lambda r: r["id"])
    if foreign:
        print(f"\nNOT ON OXLOOP ({len(foreign)}): passed on asyncio's own loop only; point "
              "their loop factory at oxloop (_oxpatch.py) or list them as private")
        for rec in foreign:
            print(f"  {rec['id']}")
    ran = {r.name for r in runs if not r.skip_reason and not r.error}
    stale = sorted(i for i in expectations
                   if not args.k and i.split(".", 1)[0] in ran and i not in seen)
    if stale:
        print(f"\nSTALE ({len(stale)}): listed for Python {PY}, but no such test ran")
        for test_id in stale:
            print(f"  {test_id}")

    if args.update:
        print(f"\n# --update: lines for expectations.txt (Python {PY}); check each reason")
        module = None
        for rec in sorted(unexpected + foreign, key=lambda r: r["id"]):
            if rec["id"].split(".", 1)[0] != module:
                module = rec["id"].split(".", 1)[0]
                print(f"# --- {module}")
            print(f"{rec['id']}  py{PY}  {infer_reason(rec)}")
        for test_id in fixed:
            print(f"# fixed, remove: {test_id}")

    failed = total["failed"]
    print(f"\nPython {sys.version.split()[0]}: {total['on oxloop']} tests passed on oxloop loops "
          f"({total['passed']} passed in all), {total['expected']} expected failures, "
          f"{len(fixed)} fixed, {total['skipped']} skipped, {failed} unexpected failures")
    verdict = "FAIL" if failed else "PASS"
    print(f"{verdict}: {total['on oxloop']} passed, {failed} failed, {total['skipped']} skipped")
    return failed


if __name__ == "__main__":
    sys.exit(main())
