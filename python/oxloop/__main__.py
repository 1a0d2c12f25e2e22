"""The `python -m oxloop` commands.

    python -m oxloop script.py [args]     run a program with every asyncio loop it makes on
    python -m oxloop -m module [args]     oxloop (`asyncio.run`, `asyncio.new_event_loop`, ...)
    python -m oxloop top PATH             the live view of a program served by oxloop.monitor
"""

from __future__ import annotations

import argparse
import asyncio
import os
import runpy
import sys
import time
from typing import Any

from oxloop.monitor import request

CLEAR = "\x1b[H\x1b[J"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _rate(cur: dict[str, Any], prev: dict[str, Any] | None, key: str, dt: float) -> str:
    if prev is None or dt <= 0:
        return "-"
    return f"{(cur[key] - prev[key]) / dt:,.0f}"


def _split(cur: dict[str, Any], prev: dict[str, Any] | None) -> str:
    """Where the loop's time went since the previous snapshot (or since it was made)."""
    base = prev or {"uptime": 0.0, "callback_time": 0.0, "poll_time": 0.0}
    span = cur["uptime"] - base["uptime"]
    if span <= 0:
        return "-"
    callbacks = (cur["callback_time"] - base["callback_time"]) / span
    waiting = (cur["poll_time"] - base["poll_time"]) / span
    other = max(0.0, 1.0 - callbacks - waiting)
    return f"callbacks {callbacks:.1%}  waiting {waiting:.1%}  other {other:.1%}"


def render(
    snap: dict[str, Any], prev: dict[str, Any] | None, path: str, interval: float
) -> str:
    """One screen of `top`: per loop, throughput and time split since the previous snapshot,
    lag, what is open, the slowest callbacks and the oldest tasks."""
    clock = time.strftime("%H:%M:%S", time.localtime(snap["time"]))
    lines = [
        f"oxloop top  pid {snap['pid']}  {path}  {clock}  (every {interval:g} s; Ctrl-C quits)",
        "",
    ]
    before = {loop["loop"]: loop["stats"] for loop in (prev or {}).get("loops", [])}
    dt = snap["time"] - prev["time"] if prev else 0.0
    if not snap["loops"]:
        lines.append("no oxloop loop in this process")
    for loop in snap["loops"]:
        s = loop["stats"]
        p = before.get(loop["loop"])
        lag = s["lag"]
        lines += [
            f"loop {loop['loop']}  {'running' if loop['running'] else 'not running'}"
            f"  up {s['uptime']:.1f} s",
            f"  callbacks/s {_rate(s, p, 'callbacks', dt)}"
            f"  iterations/s {_rate(s, p, 'iterations', dt)}"
            f"  io events/s {_rate(s, p, 'io_events', dt)}",
            f"  time: {_split(s, p)}",
            f"  lag: p50 {_ms(lag['p50'])}  p99 {_ms(lag['p99'])}  max {_ms(lag['max'])}",
            f"  ready {s['ready']}  timers {s['timers']}  transports {s['transports']}"
            f"  servers {s['servers']}  fd watchers {s['fd_watchers']}"
            f"  children {s['children']}",
            "",
            "  slowest callbacks",
        ]
        for slow in s["slowest"][:5]:
            ago = snap["time"] - slow["at"]
            lines.append(f"  {_ms(slow['duration']):>12}  {slow['name']}  ({ago:.0f} s ago)")
        lines += ["", f"  oldest tasks ({len(loop['tasks'])} of {loop['tasks_total']})"]
        for task in loop["tasks"]:
            age = f"{task['age']:.1f}s" if task["age"] is not None else "?"
            if task["idle"] is not None:
                idle = f"{task['idle']:.1f}s"
            else:
                idle = f">={task['idle_at_least']:.1f}s"
            lines.append(
                f"  age {age:>8}  idle {idle:>9}  {'  ' * task['depth']}{task['name']}"
                f"  {task['where']}"
            )
        lines.append("")
    return "\n".join(lines)


def top(path: str, interval: float, once: bool) -> int:
    prev = None
    while True:
        try:
            snap = request(path)
        except (OSError, ValueError) as exc:
            print(f"oxloop top: no monitor answers at {path!r}: {exc}", file=sys.stderr)
            return 1
        screen = render(snap, prev, path, interval)
        if once:
            print(screen)
            return 0
        sys.stdout.write(CLEAR + screen + "\n")
        sys.stdout.flush()
        prev = snap
        time.sleep(interval)


def run_program(argv: list[str]) -> int:
    """Runs a script (or `-m module`) as `python` would, with oxloop's policy installed: every
    loop asyncio makes for it (`asyncio.run`, `asyncio.Runner`, `asyncio.new_event_loop`) is
    an oxloop loop."""
    from oxloop import EventLoopPolicy

    asyncio.set_event_loop_policy(EventLoopPolicy())
    if argv[0] == "-m":
        if len(argv) < 2:
            print("python -m oxloop -m: a module name is needed", file=sys.stderr)
            return 2
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    sys.argv = list(argv)
    # As `python script.py` does: the script's directory comes first on the path.
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
    runpy.run_path(argv[0], run_name="__main__")
    return 0


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if not args_in or args_in[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr if not args_in else sys.stdout)
        return 2 if not args_in else 0
    if args_in[0] != "top":
        return run_program(args_in)
    parser = argparse.ArgumentParser(
        prog="python -m oxloop top",
        description="The live view of a program served by oxloop.monitor (OXLOOP_MONITOR).",
    )
    parser.add_argument("path", help="the monitor's Unix socket")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between screens")
    parser.add_argument("--once", action="store_true", help="print one screen and exit")
    args = parser.parse_args(args_in[1:])
    try:
        return top(args.path, args.interval, args.once)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
