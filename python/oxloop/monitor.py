"""A live view into a running program's loops, read-only, over a Unix socket.

A program opts in with `oxloop.monitor.serve(path)` (or `OXLOOP_MONITOR=path` in its
environment, read when oxloop is imported); `python -m oxloop top PATH` shows what it serves.

The socket is created with mode 0600 in a directory that only its owner can write, and is
served by a thread of its own, so a loop that is stuck can still be looked at. A client sends
one request per line, ``snapshot``; the reply is one line of JSON: for every oxloop loop of
the process, its `loop.stats()` and its oldest tasks. Nothing a client sends is executed. A
request that is not ``snapshot``, or longer than `MAX_REQUEST` bytes, gets an error reply and
the connection is closed; a client that sends nothing, or stops reading, is dropped after
`CLIENT_TIMEOUT` seconds. None of this touches the served loops beyond reading them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
import time
import warnings
from typing import Any

from oxloop import _stats
from oxloop._stats import live_loops
from oxloop._tasks import build_tree, own_frame

#: The longest request line accepted, in bytes.
MAX_REQUEST = 1024
#: Seconds a client may stay silent, or leave a reply unread, before it is dropped.
CLIENT_TIMEOUT = 5.0
#: The most a refused client's remaining request is read, in bytes, before the connection
#: is closed on it.
DRAIN_LIMIT = 1 << 20
#: Clients served at once; more wait to be accepted.
MAX_CLIENTS = 8
#: Tasks listed per loop: the forest of `task_tree()`, oldest first, depth first.
TASKS_SHOWN = 20


def snapshot() -> dict[str, Any]:
    """What the monitor serves: every open oxloop loop's statistics and oldest tasks."""
    loops = []
    for loop in live_loops():
        if loop.is_closed():
            continue
        stats = loop.stats().as_dict()
        stats["lag"].pop("buckets")
        tasks: list[dict[str, Any]] = []
        for root in build_tree(loop):
            for depth, node in root.walk():
                where = str(own_frame(node.stack)) if node.stack else ""
                tasks.append(
                    {
                        "name": node.name,
                        "depth": depth,
                        "age": node.age,
                        "idle": node.idle,
                        "idle_at_least": node.idle_at_least,
                        "where": where,
                    }
                )
        loops.append(
            {
                "loop": f"{id(loop):#x}",
                "running": loop.is_running(),
                "stats": stats,
                "tasks_total": len(tasks),
                "tasks": tasks[:TASKS_SHOWN],
            }
        )
    return {"pid": os.getpid(), "time": time.time(), "loops": loops}


def check_directory(path: str) -> None:
    """Refuses a socket path whose directory another user could write to (and so replace or
    move the socket)."""
    directory = os.path.dirname(os.path.abspath(path))
    st = os.stat(directory)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"{directory!r} must belong to this user and be writable by it alone "
            "(the monitor socket would be open to others)"
        )


def remove_stale_socket(path: str) -> None:
    """Removes a socket left at `path` by a process that is gone (nothing answers on it)."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
    raise FileExistsError(f"another monitor serves {path!r}")


class Monitor:
    """The monitor's listening socket and the thread that serves it."""

    def __init__(self, path: str) -> None:
        check_directory(path)
        self.path = path
        remove_stale_socket(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Created 0600: no moment at which another user could connect.
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._sock.listen(MAX_CLIENTS)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="oxloop-monitor", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            self._slots.acquire()
            try:
                conn, _ = self._sock.accept()
            except OSError:
                self._slots.release()
                return
            threading.Thread(
                target=self._serve, args=(conn,), name="oxloop-monitor-client", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(CLIENT_TIMEOUT)
                pending = b""
                while True:
                    line, sep, pending = pending.partition(b"\n")
                    if not sep:
                        if len(line) > MAX_REQUEST:
                            self._refuse(conn, "request too long")
                            return
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        pending = line + chunk
                        continue
                    request = line.strip()
                    if request != b"snapshot":
                        self._refuse(conn, "unknown request; send: snapshot")
                        return
                    self._reply(conn, snapshot())
        except OSError:
            # Gone, silent or not reading: dropped.
            pass
        finally:
            self._slots.release()

    @staticmethod
    def _reply(conn: socket.socket, message: dict[str, Any]) -> None:
        conn.sendall(json.dumps(message).encode() + b"\n")

    @classmethod
    def _refuse(cls, conn: socket.socket, error: str) -> None:
        """Replies `error`, then reads what the client still sends (a bounded amount, for a
        bounded time) before closing, so the reply is not lost to a reset."""
        cls._reply(conn, {"error": error})
        conn.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + CLIENT_TIMEOUT
        drained = 0
        while drained < DRAIN_LIMIT and time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                return
            drained += len(chunk)

    def close(self) -> None:
        """Stops serving and removes the socket; loops made from now on do not mark their
        tasks' steps."""
        _stats.watch_tasks(False)
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self._thread.join(5)


def serve(path: str) -> Monitor:
    """Serves this process's loops at `path` until `close()` (or the process's end). From
    now on every oxloop loop marks its tasks' steps, so that the first view already tells
    how long each task has been idle."""
    monitor = Monitor(path)
    _stats.watch_tasks()
    return monitor


def serve_from_environment() -> Monitor | None:
    """`serve(os.environ["OXLOOP_MONITOR"])` when it is set; a monitor that cannot start is
    reported as a warning, not an error, so that the program runs on without it."""
    path = os.environ.get("OXLOOP_MONITOR")
    if not path:
        return None
    try:
        return serve(path)
    except OSError as exc:
        warnings.warn(f"OXLOOP_MONITOR: cannot serve {path!r}: {exc}", RuntimeWarning, stacklevel=2)
        return None


def request(path: str, timeout: float = 5.0) -> dict[str, Any]:
    """One snapshot from the monitor at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(b"snapshot\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply
