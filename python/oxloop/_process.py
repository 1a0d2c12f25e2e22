"""Child processes: knowing when a child of the loop exits, without a thread per child.

`ChildWatcher` belongs to one loop. Where the kernel has pidfds (Linux 5.3+), each child gets
one, watched by the loop like any fd: when it becomes readable the child has exited, and
`waitpid` on that one pid collects it, so children the application reaps itself are never
touched and no SIGCHLD handler is installed. Without pidfds, a thread per child waits in
`waitpid` (asyncio's `ThreadedChildWatcher` strategy).

A child still running when its loop closes is handed to such a thread, which reaps it when it
exits (and warns that its loop is closed, as the thread watcher does), so it is not left a
zombie. In a process forked from the loop's, the parent's children stay the parent's: their
exits are left to the parent, and their transports there never learn a return code. Children
the forked process starts itself are its own.

The subprocess transport itself is asyncio's (`unix_events._UnixSubprocessTransport`), over
oxloop's native pipe transports (`_transports.py`), which grow a child's pipes to 1 MiB once
bulk data flows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from oxloop._helpers import unix_logger


def _exit_status(pid: int) -> int:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # Reaped elsewhere (the application called waitpid itself).
        unix_logger().warning(
            "child process pid %d exit status already read:  will report returncode 255", pid
        )
        return 255
    return os.waitstatus_to_exitcode(status)


class ChildWatcher:
    """Calls `callback(pid, returncode, *args)` on the loop once a child exits."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        # By child pid: its pidfd, its parent (this process, or the one it was forked from),
        # and the callback with its arguments.
        self._pidfds: dict[int, tuple[int, int, Callable[..., object], tuple[Any, ...]]] = {}
        self._use_pidfd = hasattr(os, "pidfd_open")
        # Children waited for by a thread each (without pidfds).
        self._threads: set[int] = set()

    def __len__(self) -> int:
        """How many children are still waited for."""
        return len(self._pidfds) + len(self._threads)

    def add_child_handler(self, pid: int, callback: Callable[..., object], *args: Any) -> None:
        if self._use_pidfd:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                # No pidfds in this kernel (or not permitted): threads from now on.
                self._use_pidfd = False
            else:
                self._loop._add_reader(pidfd, self._pidfd_ready, pid)
                self._pidfds[pid] = (pidfd, os.getpid(), callback, args)
                return
        self._threads.add(pid)
        self._start_thread(pid, self._waitpid, pid, callback, args)

    @staticmethod
    def _start_thread(pid: int, target: Callable[..., object], *args: Any) -> None:
        name = f"oxloop-waitpid-{pid}"
        threading.Thread(target=target, name=name, args=args, daemon=True).start()

    def _pidfd_ready(self, pid: int) -> None:
        pidfd, parent, callback, args = self._pidfds.pop(pid)
        self._loop._remove_reader(pidfd)
        if parent != os.getpid():
            os.close(pidfd)
            return
        try:
            returncode = _exit_status(pid)
        finally:
            os.close(pidfd)
        callback(pid, returncode, *args)

    def _waitpid(self, pid: int, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        returncode = _exit_status(pid)
        self._threads.discard(pid)
        if self._loop.is_closed():
            self._orphaned(pid)
        else:
            callback(pid, returncode, *args)

    def _reap_orphan(self, pid: int) -> None:
        _exit_status(pid)
        self._orphaned(pid)

    def _orphaned(self, pid: int) -> None:
        unix_logger().warning("Loop %r that handles pid %r is closed", self._loop, pid)

    def close(self) -> None:
        """Stops watching (the loop is closing); children still running go to threads."""
        for pid, (pidfd, parent, _, _) in self._pidfds.items():
            self._loop._remove_reader(pidfd)
            os.close(pidfd)
            if parent == os.getpid():
                self._start_thread(pid, self._reap_orphan, pid)
        self._pidfds.clear()
