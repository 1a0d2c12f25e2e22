"""`python -m oxloop top PATH`: the live view of a program served by `oxloop.monitor`."""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oxloop")
    commands = parser.add_subparsers(dest="command", required=True)
    top_cmd = commands.add_parser(
        "top", help="the live view of a program served by oxloop.monitor (OXLOOP_MONITOR)"
    )
    top_cmd.add_argument("path", help="the monitor's Unix socket")
    top_cmd.add_argument("--interval", type=float, default=1.0, help="seconds between screens")
    top_cmd.add_argument("--once", action="store_true", help="print one screen and exit")
    args = parser.parse_args(argv)
    try:
        return top(args.path, args.interval, args.once)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
