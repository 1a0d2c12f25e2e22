"""`oxloop.task_tree()`: the pending tasks of a loop as a forest of who awaits whom.

The tree is built from what asyncio's own tasks record, so it comes out the same on both
loops; ages are oxloop's alone (asyncio's loop marks no task), and are checked there.
"""

from __future__ import annotations

import asyncio
import sys
import time

import oxloop
import pytest

py311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is new in 3.11")


def shape(forest):
    """The forest as nested (name, [children]) pairs, children sorted by name."""

    def one(node):
        return (node.name, sorted((one(c) for c in node.awaiting), key=lambda x: x[0]))

    return sorted((one(n) for n in forest), key=lambda x: x[0])


async def wait_for(event):
    await event.wait()


async def await_task(task):
    return await task


def with_parent_and_child(loop, look):
    """`look()`, while a task "parent" awaits a task "child" that waits for an event."""

    async def main():
        event = asyncio.Event()
        child = asyncio.create_task(wait_for(event), name="child")
        parent = asyncio.create_task(await_task(child), name="parent")
        await asyncio.sleep(0.01)
        seen = look()
        event.set()
        await parent
        return seen

    return loop.run_until_complete(main())


def test_a_task_awaiting_another_is_above_it(loop):
    forest = with_parent_and_child(loop, oxloop.task_tree)
    names = shape(forest)
    assert ("parent", [("child", [])]) in names, names
    # The main task waits for neither.
    assert any(name.startswith("Task-") and not kids for name, kids in names), names
    parent = next(n for n in forest if n.name == "parent")
    [child] = parent.awaiting
    # Where each waits: the innermost coroutine outside asyncio is this file's.
    assert parent.stack[0].name.endswith("await_task")
    assert child.stack[0].name.endswith("wait_for")
    assert child.stack[0].filename == __file__
    assert child.stack[-1].name.endswith("Event.wait")


def test_gather_children_hang_under_the_task_that_gathers(loop):
    async def gatherer(event):
        await asyncio.gather(
            asyncio.create_task(wait_for(event), name="g1"),
            asyncio.create_task(wait_for(event), name="g2"),
        )

    async def main():
        event = asyncio.Event()
        top = asyncio.create_task(gatherer(event), name="gatherer")
        await asyncio.sleep(0.01)
        forest = oxloop.task_tree(loop)
        event.set()
        await top
        return forest

    names = shape(loop.run_until_complete(main()))
    assert ("gatherer", [("g1", []), ("g2", [])]) in names, names


@py311
def test_task_group_children_hang_under_the_task_that_opened_it(loop):
    async def group(event, started):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(wait_for(event), name="tg1")
            tg.create_task(wait_for(event), name="tg2")
            started.set()
            # The body itself waits: its tasks are the group's, not this await's.
            await asyncio.sleep(0.05)

    async def main():
        event, started = asyncio.Event(), asyncio.Event()
        top = asyncio.create_task(group(event, started), name="group")
        await started.wait()
        in_body = oxloop.task_tree()
        await asyncio.sleep(0.08)
        in_exit = oxloop.task_tree()
        event.set()
        await top
        return in_body, in_exit

    in_body, in_exit = loop.run_until_complete(main())
    for forest in (in_body, in_exit):
        names = shape(forest)
        assert ("group", [("tg1", []), ("tg2", [])]) in names, names


def test_ages_and_idle_times(loop, loop_name):
    def by_name():
        return {n.name: n for root in oxloop.task_tree() for _, n in root.walk()}

    async def main():
        event = asyncio.Event()
        early = asyncio.create_task(wait_for(event), name="early")
        await asyncio.sleep(0)
        by_name()  # the loop watches its tasks from here on
        stuck = asyncio.create_task(wait_for(event), name="stuck")
        await asyncio.sleep(0.05)
        first = by_name()
        await asyncio.sleep(0.05)
        busy = asyncio.create_task(asyncio.sleep(0), name="busy")
        second = by_name()
        event.set()
        await asyncio.gather(early, stuck, busy)
        return first, second

    started = time.monotonic()
    first, second = loop.run_until_complete(main())
    elapsed = time.monotonic() - started
    if loop_name == "asyncio":
        # Only oxloop marks its tasks.
        assert first["stuck"].age is None and first["stuck"].idle is None
        assert second["stuck"].idle_at_least == 0.0
        return
    # Made and last run once the loop watched: both known.
    assert 0.05 <= first["stuck"].age <= elapsed
    assert 0.1 <= second["stuck"].age <= elapsed
    assert first["stuck"].idle >= 0.045 and second["stuck"].idle >= 0.095
    assert second["stuck"].idle_at_least == second["stuck"].idle
    # Made and last run before: unknown, but idle at least since the watch began.
    assert second["early"].age is None and second["early"].idle is None
    assert second["early"].idle_at_least >= 0.095
    # The task asking is running.
    main_task = next(n for name, n in second.items() if name.startswith("Task-"))
    assert main_task.idle == 0.0
    # A task made and not run yet has been idle all its life.
    assert second["busy"].idle is None and second["busy"].idle_at_least <= second["busy"].age


def test_format_tree_lists_each_task_with_where_it_waits(loop):
    text = with_parent_and_child(loop, lambda: oxloop.format_tree(oxloop.task_tree()))
    lines = text.splitlines()
    parent = next(i for i, line in enumerate(lines) if line.startswith("parent "))
    assert lines[parent + 1].startswith("  child "), lines
    assert "Event.wait at " in lines[parent + 1]
