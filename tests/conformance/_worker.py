"""Run one module of CPython's test_asyncio on oxloop; write one JSON line per event.

Started by run.py, one process per module (and again after a test hangs or crashes it):

    python _worker.py --module test_tasks --events FILE [--ids FILE] [-k PATTERN] [--timeout S]
                      [--listed FILE --listed-timeout S]

Events, in order: {"plan": [ids]} (every selected test, before the first runs), then per test
{"start": id} and {"id": id, "outcome": ..., "oxloop": n, "asyncio": n, ...}; a class or module
fixture that fails is reported as its own id ("test_x.Class.setUpClass"). A test that hangs
past the timeout makes faulthandler dump every thread's stack to stderr and exit the process:
run.py sees a "start" with no result, and restarts the worker after that test.
"""

from __future__ import annotations

import argparse
import faulthandler
import fnmatch
import importlib
import json
import os
import sys
import time
import traceback
import unittest
import warnings
from typing import Any, TextIO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _oxpatch  # noqa: E402

PREFIX = "test.test_asyncio."
MAX_DETAIL = 4000


def short_id(test_id: str) -> str:
    return test_id[len(PREFIX):] if test_id.startswith(PREFIX) else test_id


def flatten(suite: Any) -> list[unittest.TestCase]:
    out: list[unittest.TestCase] = []
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            out.extend(flatten(item))
        else:
            out.append(item)
    return out


def matches_k(test_id: str, patterns: list[str]) -> bool:
    """unittest's -k: a substring of the test id, or an fnmatch pattern if it has a `*`."""
    return any(
        fnmatch.fnmatchcase(test_id, p) if "*" in p else p in test_id for p in patterns
    )


def read_ids(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip()}


class EventResult(unittest.TestResult):
    """Records each test's outcome, the loops built for it and what it reached for."""

    def __init__(
        self, out: TextIO, timeout: float, listed: set[str], listed_timeout: float
    ) -> None:
        super().__init__()
        self.out = out
        self.timeout = timeout
        self.listed = listed
        self.listed_timeout = listed_timeout
        self.current: dict[str, Any] | None = None
        self.started = 0.0

    def emit(self, event: dict[str, Any]) -> None:
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def _format(self, err: Any, test: Any) -> str:
        if isinstance(test, unittest.TestCase):
            text = self._exc_info_to_string(err, test)
        else:
            text = "".join(traceback.format_exception(*err))
        if len(text) > MAX_DETAIL:
            text = "...\n" + text[-MAX_DETAIL:]
        return text

    def _record(self, outcome: str, detail: str = "") -> None:
        cur = self.current
        if cur is None:
            return
        rank = {"pass": 0, "skip": 1, "fail": 2, "error": 3}
        if rank.get(outcome, 0) >= rank.get(cur["outcome"], 0):
            if cur["outcome"] in ("fail", "error") and outcome in ("fail", "error"):
                cur["detail"] += "\n" + detail
            else:
                cur["outcome"] = outcome
                cur["detail"] = detail

    # -- unittest hooks ---------------------------------------------------------------------

    def startTest(self, test: Any) -> None:  # noqa: N802
        super().startTest(test)
        tid = short_id(test.id())
        self.emit({"start": tid})
        self.current = {"id": tid, "outcome": "pass", "detail": ""}
        self.started = time.monotonic()
        timeout = self.listed_timeout if tid in self.listed else self.timeout
        faulthandler.dump_traceback_later(timeout, exit=True)

    def stopTest(self, test: Any) -> None:  # noqa: N802
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        cur = self.current
        self.current = None
        if cur is None:
            return
        c = _oxpatch.COUNTERS
        cur.update(
            oxloop=c.oxloop,
            asyncio=c.asyncio,
            fake_clock=c.fake_clock,
            missing=sorted(c.missing),
            seconds=round(time.monotonic() - self.started, 3),
        )
        # Reset here, not in startTest: a loop built for this test before it started (3.10's
        # IsolatedAsyncioTestCase makes its loop before startTest) counts for this test.
        c.reset()
        self.emit(cur)

    def addError(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addError(test, err)
        if self.current is None or not isinstance(test, unittest.TestCase):
            # A class or module fixture: setUpClass, tearDownModule, ...
            self.emit(
                {
                    "id": _fixture_id(test),
                    "outcome": "error",
                    "detail": self._format(err, test),
                    "oxloop": 0,
                    "asyncio": 0,
                    "fixture": True,
                }
            )
            return
        self._record("error", self._format(err, test))

    def addFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        super().addFailure(test, err)
        self._record("fail", self._format(err, test))

    def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802
        super().addSkip(test, reason)
        if isinstance(test, unittest.case._SubTest):  # type: ignore[attr-defined]
            return  # a skipped subtest does not skip the test
        if self.current is None:
            # Python 3.12+ reports a skipped test without starting it.
            if isinstance(test, unittest.TestCase):
                self.emit({"id": short_id(test.id()), "outcome": "skip", "detail": reason,
                           "oxloop": 0, "asyncio": 0})
            return
        self._record("skip", reason)

    def addExpectedFailure(self, test: Any, err: Any) -> None:  # noqa: N802
        # Marked @expectedFailure in CPython itself: failing is asyncio's behaviour too.
        super().addExpectedFailure(test, err)

    def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802
        super().addUnexpectedSuccess(test)
        self._record("fail", "unexpected success: CPython marks this test @expectedFailure")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._record(kind, f"[{subtest._subDescription()}]\n" + self._format(err, test))


def _fixture_id(holder: Any) -> str:
    # unittest's _ErrorHolder: "setUpClass (test.test_asyncio.test_x.Class)"
    desc = getattr(holder, "description", str(holder))
    if " (" in desc and desc.endswith(")"):
        what, where = desc[:-1].split(" (", 1)
        return f"{short_id(where)}.{what}"
    return short_id(desc)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--module", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--ids", help="file of test ids to run (one a line); default: all")
    parser.add_argument("-k", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--listed", help="file of ids listed in the expectations")
    parser.add_argument("--listed-timeout", type=float, default=15.0)
    args = parser.parse_args()

    faulthandler.enable()
    warnings.simplefilter("default", ResourceWarning)
    with open(args.events, "a", encoding="utf-8") as out:

        def emit(event: dict[str, Any]) -> None:
            out.write(json.dumps(event) + "\n")
            out.flush()

        _oxpatch.install()
        try:
            module = importlib.import_module(PREFIX + args.module)
        except unittest.SkipTest as exc:
            emit({"module_skip": str(exc)})
            return 0
        except Exception:
            emit({"module_error": traceback.format_exc()})
            return 1
        _oxpatch.patch_module(args.module, module)

        tests = flatten(unittest.defaultTestLoader.loadTestsFromModule(module))
        if args.ids:
            wanted = read_ids(args.ids)
            tests = [t for t in tests if short_id(t.id()) in wanted]
        elif args.k:
            tests = [t for t in tests if matches_k(short_id(t.id()), args.k)]
        if not args.ids:
            emit({"plan": [short_id(t.id()) for t in tests]})

        listed = read_ids(args.listed) if args.listed else set()
        result = EventResult(out, args.timeout, listed, args.listed_timeout)
        suite = unittest.TestSuite(tests)
        suite.run(result)
        emit({"done": True})
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: a thread or child a test left behind must not hold us up.
    os._exit(status)
