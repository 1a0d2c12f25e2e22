"""Reference ownership of scheduled callbacks: queued work keeps what it needs alive across
garbage collections, and the usual owner <-> handle cycles are collectable once done.

(Loops dropped without close() are covered in test_run.py.)
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest


class Node:
    """A reference cycle: node <-> node.partner."""

    def __init__(self):
        self.partner = Partner(self)
        self.calls = []

    def method(self, *args):
        self.calls.append(args)


class Partner:
    def __init__(self, node):
        self.node = node


def run_until(loop, predicate, limit=2.0):
    deadline = loop.time() + limit
    while not predicate() and loop.time() < deadline:
        loop.call_later(0.001, loop.stop)
        loop.run_forever()


SCHEDULE = {
    "call_soon": lambda lp, cb, arg: lp.call_soon(cb, arg),
    "call_soon_threadsafe": lambda lp, cb, arg: lp.call_soon_threadsafe(cb, arg),
    "call_later": lambda lp, cb, arg: lp.call_later(0.005, cb, arg),
    "call_at": lambda lp, cb, arg: lp.call_at(lp.time() + 0.005, cb, arg),
}


@pytest.mark.parametrize("method", list(SCHEDULE))
def test_cycles_reachable_only_from_queued_callbacks_survive_gc(loop, method):
    results = []

    def schedule():
        owner, arg = Node(), Node()
        SCHEDULE[method](loop, owner.method, arg)
        return weakref.ref(owner), weakref.ref(arg)

    owner_ref, arg_ref = schedule()
    gc.collect()
    assert owner_ref() is not None and arg_ref() is not None
    run_until(loop, lambda: owner_ref() is None or owner_ref().calls)
    owner = owner_ref()
    assert owner is not None
    results.extend(owner.calls)
    assert len(results) == 1 and results[0][0].partner.node is results[0][0]
    del owner, results
    gc.collect()
    # Once run, the queue no longer holds them: the cycles are collectable.
    assert owner_ref() is None and arg_ref() is None


def test_pending_task_referenced_only_by_the_loop_survives_gc(loop):
    """asyncio keeps only weak references to tasks; a sleeping task lives on through its
    timer (sleep future -> task wakeup), which the loop's timer queue must keep alive."""
    done = []

    async def worker():
        await asyncio.sleep(0.01)
        done.append("finished")

    loop.create_task(worker())
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    loop.run_until_complete(asyncio.sleep(0.05))
    assert done == ["finished"]


@pytest.mark.parametrize("how", ["ran", "cancelled soon", "cancelled timer", "fired timer"])
def test_owner_handle_cycles_are_collected(loop, how):
    """obj.handle = loop.call_*(obj.method) is the common shape (asyncio.timeout does it):
    the handle <-> owner cycle must be collectable."""

    def make():
        node = Node()
        if how == "ran":
            node.handle = loop.call_soon(node.method)
        elif how == "cancelled soon":
            node.handle = loop.call_soon(node.method)
            node.handle.cancel()
        elif how == "cancelled timer":
            node.handle = loop.call_later(3600, node.method)
            node.handle.cancel()
        else:
            node.handle = loop.call_later(0, node.method)
        return weakref.ref(node)

    ref = make()
    run_until(loop, lambda: ref() is None or ref().calls or ref().handle.cancelled(), 0.05)
    gc.collect()
    assert ref() is None


def test_gc_collect_inside_a_callback_keeps_queued_work_intact(loop):
    checked = []

    def collect():
        gc.collect()

    def check(node):
        # A node whose cycle had been cleared by the collector would have lost its partner.
        checked.append(node.partner.node is node)

    def schedule():
        loop.call_soon(collect)
        for _ in range(100):
            loop.call_soon(check, Node())
        loop.call_later(0, check, Node())

    schedule()
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert checked == [True] * 101


def test_gc_collect_in_another_thread_while_the_loop_waits(loop):
    """The collector may traverse the loop while its thread waits in the poller without the
    GIL: neither may block the other."""
    import threading

    stop = threading.Event()
    collections = []

    def collector():
        while not stop.is_set():
            gc.collect()
            collections.append(1)

    def schedule_nodes():
        for i in range(20):
            loop.call_later(0.005 * i, Node().method, i)

    thread = threading.Thread(target=collector)
    thread.start()
    try:
        schedule_nodes()
        loop.run_until_complete(asyncio.sleep(0.2))
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert collections
