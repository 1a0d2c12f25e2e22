"""`oxloop.task_tree()`: every pending task of a loop, who awaits whom, and for how long.

The tree is the one 3.14's `asyncio.capture_call_graph` walks, on every supported version: a
task awaits the task or future it is suspended on (`_fut_waiter`), the children of a
`gather()` it awaits, and the tasks of a `TaskGroup` it opened. From 3.14 asyncio records the
same edges itself (`_asyncio_awaited_by`), and they are read from there.

Ages and idle times come from the loop, once it watches its tasks (from the first tree asked
for, from `oxloop.watch_tasks()`, or from its start while a monitor serves): `create_task`
then marks each task with when it was made, and the end of each task step is marked on its
task, so that trees tell how old each task is and how long it has been idle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterable, Iterator
from typing import Any

# Attributes the loop sets on the tasks it makes and runs: clock readings, in ticks.
CREATED = "_oxloop_created"
RAN = "_oxloop_ran"


@dataclasses.dataclass(frozen=True)
class Frame:
    """One coroutine of a task's chain of awaits."""

    filename: str
    lineno: int
    #: The qualified name of the coroutine's code.
    name: str

    def __str__(self) -> str:
        return f"{self.name} at {self.filename}:{self.lineno}"


@dataclasses.dataclass(frozen=True)
class TaskNode:
    """A pending task in the tree."""

    task: asyncio.Task[Any]
    name: str
    #: The chain of coroutines it is suspended in, outermost first: the last is where it waits.
    stack: tuple[Frame, ...]
    #: Seconds since the task was made; None for a task made before the loop watched its
    #: tasks, or not by `loop.create_task`.
    age: float | None
    #: Seconds since one of its steps last ended; None until the loop has been watching its
    #: steps (from the first tree asked for on) and for a task that has not run since then,
    #: for which `idle_at_least` gives a lower bound.
    idle: float | None
    #: The task has not run for at least these seconds (equal to `idle` when that is known).
    idle_at_least: float
    #: The tasks it awaits, directly or through a `gather()` or a `TaskGroup`.
    awaiting: tuple[TaskNode, ...]

    def walk(self, depth: int = 0) -> Iterator[tuple[int, TaskNode]]:
        """This node and those below it, depth first, with their depth."""
        yield depth, self
        for child in self.awaiting:
            yield from child.walk(depth + 1)


def coroutine_stack(coro: Any) -> list[Frame]:
    """The chain of coroutines (and generators) `coro` is suspended in, outermost first."""
    frames: list[Frame] = []
    while coro is not None:
        attrs = next((a for a in _CORO_ATTRS if hasattr(coro, a[1])), None)
        if attrs is None:
            # A future's iterator or another awaitable without a frame: the chain ends.
            return frames
        frame_attr, code_attr, await_attr = attrs
        frame = getattr(coro, frame_attr)
        if frame is None:
            # Finished (or running, for the current task's own chain).
            return frames
        code = getattr(coro, code_attr)
        frames.append(Frame(code.co_filename, frame.f_lineno, _qualname(code, coro)))
        coro = getattr(coro, await_attr, None)
    return frames


# Per kind of awaitable: its frame, its code, what it awaits.
_CORO_ATTRS = (
    ("cr_frame", "cr_code", "cr_await"),
    ("ag_frame", "ag_code", "ag_await"),
    ("gi_frame", "gi_code", "gi_yieldfrom"),
)


def _qualname(code: Any, coro: Any) -> str:
    # `co_qualname` is new in 3.11; a coroutine's own `__qualname__` says the same before.
    return str(getattr(code, "co_qualname", None) or getattr(coro, "__qualname__", code.co_name))


def describe_task(task: Any) -> str:
    """A task as `loop.stats()` names a slow step of it: its name, its coroutine, and where
    it is suspended now."""
    coro = task.get_coro()
    stack = coroutine_stack(coro)
    what = stack[0].name if stack else getattr(coro, "__qualname__", type(coro).__qualname__)
    where = f" at {_suspended_at(stack)}" if stack else ""
    return f"Task {task.get_name()!r} {what}{where}"


_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep


def own_frame(stack: list[Frame] | tuple[Frame, ...]) -> Frame:
    """Where the task's own code waits: the innermost frame outside asyncio's package (an
    `await asyncio.sleep()` names the line of the `await`, not asyncio's)."""
    for frame in reversed(stack):
        if not frame.filename.startswith(_ASYNCIO_DIR):
            return frame
    return stack[-1]


def _suspended_at(stack: list[Frame]) -> str:
    frame = own_frame(stack)
    return f"{frame.filename}:{frame.lineno}"


def _awaited_through(fut: Any) -> Iterable[Any]:
    """What a task suspended on `fut` awaits: `fut` itself, or a gather's children."""
    children = getattr(fut, "_children", None)
    if children is None or isinstance(fut, asyncio.Task):
        return (fut,)
    return [c for child in children for c in _awaited_through(child)]


def _edges(tasks: list[Any]) -> dict[int, list[Any]]:
    """For each task (by id), the tasks and futures that await it."""
    awaited_by: dict[int, list[Any]] = {id(t): [] for t in tasks}
    if tasks and hasattr(tasks[0], "_asyncio_awaited_by"):
        for t in tasks:
            awaited_by[id(t)].extend(t._asyncio_awaited_by or ())
        return awaited_by
    for t in tasks:
        waiter = getattr(t, "_fut_waiter", None)
        if waiter is not None:
            for awaited in _awaited_through(waiter):
                awaited_by.setdefault(id(awaited), []).append(t)
        for entry in getattr(t, "_callbacks", None) or ():
            callback = entry[0] if isinstance(entry, tuple) else entry
            group = getattr(callback, "__self__", None)
            parent = getattr(group, "_parent_task", None)
            if parent is not None and _is_task_group(group):
                awaited_by[id(t)].append(parent)
    return awaited_by


def _is_task_group(obj: Any) -> bool:
    group_type = getattr(asyncio, "TaskGroup", None)
    return group_type is not None and isinstance(obj, group_type)


def build_tree(loop: Any) -> list[TaskNode]:
    """The pending tasks of `loop` as a forest: each root is awaited by no other task."""
    tasks = sorted(asyncio.all_tasks(loop), key=id)
    awaited_by = _edges(tasks)
    by_id = {id(t): t for t in tasks}

    def parents(fut: Any, seen: set[int]) -> set[int]:
        # A task's own id, or the tasks that await a plain future (a gather, a shield).
        if id(fut) in by_id:
            return {id(fut)}
        if id(fut) in seen:
            return set()
        seen.add(id(fut))
        found: set[int] = set()
        for p in awaited_by.get(id(fut), ()):
            found |= parents(p, seen)
        for p in getattr(fut, "_asyncio_awaited_by", None) or ():
            found |= parents(p, seen)
        return found

    children: dict[int, list[int]] = {id(t): [] for t in tasks}
    has_parent: set[int] = set()
    for t in tasks:
        ups: set[int] = set()
        for p in awaited_by[id(t)]:
            ups |= parents(p, set())
        ups.discard(id(t))
        for up in ups:
            children[up].append(id(t))
            has_parent.add(id(t))

    # Only an oxloop loop marks its tasks; on another loop no age is known.
    task_clock = getattr(loop, "_task_clock", None)
    now, rate, watched_since = task_clock() if task_clock is not None else (0, 1.0, 0)
    current = asyncio.current_task(loop) if loop.is_running() else None

    def node(tid: int, path: frozenset[int]) -> TaskNode:
        t = by_id[tid]
        below = tuple(
            sorted(
                (node(c, path | {c}) for c in children[tid] if c not in path),
                key=_oldest_first,
            )
        )
        created = getattr(t, CREATED, None)
        ran = getattr(t, RAN, None)
        age = None if created is None else max(0.0, (now - created) / rate)
        idle = None if ran is None else max(0.0, (now - ran) / rate)
        if t is current and task_clock is not None:
            # The task asking is running now.
            idle = 0.0
        floor = idle if idle is not None else max(0.0, (now - watched_since) / rate)
        if idle is None and age is not None:
            floor = min(floor, age)
        return TaskNode(
            task=t,
            name=t.get_name(),
            stack=tuple(coroutine_stack(t.get_coro())),
            age=age,
            idle=idle,
            idle_at_least=floor,
            awaiting=below,
        )

    roots = [tid for tid in children if tid not in has_parent]
    # Tasks that await each other in a circle have no root: each such circle is shown from
    # one of its tasks.
    reached: set[int] = set()
    forest = []
    for tid in roots:
        n = node(tid, frozenset({tid}))
        forest.append(n)
        reached.update(id(x.task) for _, x in n.walk())
    for tid in children:
        if tid not in reached:
            n = node(tid, frozenset({tid}))
            forest.append(n)
            reached.update(id(x.task) for _, x in n.walk())
    forest.sort(key=_oldest_first)
    return forest


def _oldest_first(n: TaskNode) -> tuple[bool, float]:
    return (n.age is None, -(n.age or 0.0))


def task_tree(loop: Any = None) -> list[TaskNode]:
    """Every pending task of `loop` (by default the running loop), as a forest of who awaits
    whom, the oldest first; see `TaskNode`. On an oxloop loop, the first call starts marking
    the tasks' steps, so that later trees say how long each task has been idle; on another
    loop the tree comes without ages."""
    if loop is None:
        loop = asyncio.get_running_loop()
    return build_tree(loop)


def format_tree(forest: Iterable[TaskNode]) -> str:
    """The forest as indented text, one task per line, with its age and idle time."""
    lines = []
    for root in forest:
        for depth, n in root.walk():
            where = f"  {n.stack[-1]}" if n.stack else ""
            idle = f"{n.idle:.3f}s" if n.idle is not None else f">={n.idle_at_least:.3f}s"
            age = f"{n.age:.3f}s" if n.age is not None else "?"
            lines.append(f"{'  ' * depth}{n.name}  age {age}  idle {idle}{where}")
    return "\n".join(lines)
