"""The floor of the pipe workload of benches/processes.py: no event loop, no streams.

It pipes the same bytes through ``cat`` as that workload (256 KiB blocks, 1 GiB by default),
over pipes grown to 1 MiB as oxloop grows a child's, with a bare epoll loop: ``os.write`` of
the block, ``os.read`` into a new ``bytes`` object, and that object through the running
interpreter's own ``asyncio.StreamReader`` (``feed_data``, then ``read(256 KiB)``, stepped by
hand since its buffer is never empty), so that every copy it makes of a byte counts: one into
its buffer and, on 3.10 and 3.11, two out of it (a slice, then ``bytes``), one from 3.12. What
a loop spends beyond this is its own work and the rest of asyncio's stream machinery.

    .venv/bin/python benches/pipe_floor.py            # 5 runs of 1 GiB
    .venv/bin/python benches/pipe_floor.py --size 268435456 --runs 3

Prints the parent's CPU time (user + system, children excluded) per GiB for each run.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import resource
import selectors
import subprocess
import time
from collections.abc import Coroutine
from typing import Any

from benchutil import settle_malloc

BLOCK = bytes(range(256)) * 1024
READ_SIZE = 256 * 1024
PIPE_SIZE = 1 << 20


def take(step: Coroutine[Any, Any, bytes]) -> bytes:
    """The result of a coroutine that finishes without waiting."""
    try:
        step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("StreamReader.read waited with data in its buffer")


def one_run(size: int) -> tuple[float, float]:
    """Pipes `size` bytes through cat; returns (wall seconds, parent CPU seconds)."""
    child = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    to_child, from_child = child.stdin.fileno(), child.stdout.fileno()
    for fd in (to_child, from_child):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(fd, False)
    selector = selectors.EpollSelector()
    selector.register(from_child, selectors.EVENT_READ)
    selector.register(to_child, selectors.EVENT_WRITE)
    block = memoryview(BLOCK)
    sent = received = offset = 0
    idle_loop = asyncio.new_event_loop()  # the reader's futures' loop; never run
    reader = asyncio.StreamReader(loop=idle_loop)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    while received < size:
        for key, _ in selector.select():
            if key.fd == to_child:
                try:
                    n = os.write(to_child, block[offset:])
                except BlockingIOError:
                    continue
                offset = (offset + n) % len(BLOCK)
                sent += n
                if sent >= size:
                    selector.unregister(to_child)
                    child.stdin.close()
            else:
                try:
                    data = os.read(from_child, READ_SIZE)
                except BlockingIOError:
                    continue
                reader.feed_data(data)
                chunk = take(reader.read(READ_SIZE))
                received += len(chunk)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    selector.close()
    idle_loop.close()
    child.stdout.close()
    if child.wait() != 0:
        raise SystemExit("cat failed")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 30, help="bytes (default: 1 GiB)")
    parser.add_argument("--runs", type=int, default=5, help="runs (default: 5)")
    args = parser.parse_args()
    settle_malloc()  # as the benchmark's workers do
    per_gib = (1 << 30) / args.size
    for i in range(args.runs):
        wall, cpu = one_run(args.size)
        print(
            f"run {i + 1}: {wall * 1000:.1f} ms wall, parent CPU {cpu * per_gib * 1000:.1f} ms/GiB"
        )


if __name__ == "__main__":
    main()
