"""Child processes: create_subprocess_exec / create_subprocess_shell and loop.subprocess_exec /
loop.subprocess_shell with a SubprocessProtocol.

Pins down how the standard streams are wired (PIPE, DEVNULL, STDOUT, an fd, a file object), the
Popen keywords the loop passes through (cwd, env, executable, close_fds, pass_fds,
start_new_session, process_group, restore_signals, umask, preexec_fn, user/group/extra_groups)
and the ones asyncio refuses, the subprocess transport's API and the order of its protocol's
callbacks, when wait() returns, and the faults: a missing program or cwd, a child killed by a
signal or ignoring SIGTERM, a child that stops reading its stdin, 100 MB of output, 500 children
at once, and children the application reaps itself, which the loop must leave alone.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import zlib
from asyncio.subprocess import DEVNULL, PIPE, STDOUT

import pytest

PY = sys.executable
SH = "/bin/sh"
TRUE = shutil.which("true") or "/bin/true"
SLEEP = shutil.which("sleep") or "/bin/sleep"
CAT = shutil.which("cat") or "/bin/cat"

requires_process_group = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Popen(process_group=) is 3.11+"
)


def run(loop, coro, timeout=30.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def assert_no_zombie():
    """No child of this process has exited without being reaped."""
    try:
        pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return
    assert (pid, status) == (0, 0), f"child {pid} had exited and was still waiting to be reaped"


async def stdin_close_error(proc):
    """The exception stdin's transport was lost with (None if it closed cleanly).

    Awaiting it also marks it retrieved: 3.10 would otherwise report the unretrieved
    BrokenPipeError to the loop's exception handler when the future is collected.
    """
    try:
        await proc.stdin.wait_closed()
    except OSError as exc:
        return exc
    return None


class Recorder(asyncio.SubprocessProtocol):
    """Records the protocol's callbacks in order; consecutive chunks of one fd count once."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.transport = None
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.pipe_lost = {fd: loop.create_future() for fd in (0, 1, 2)}
        self.exited = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("connection_made")

    def pipe_data_received(self, fd, data):
        self.data[fd] += data
        if self.events[-1] != ("data", fd):
            self.events.append(("data", fd))

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd))
        self.pipe_lost[fd].set_result(exc)

    def process_exited(self):
        self.events.append("process_exited")
        self.exited.set_result(self.transport.get_returncode())

    def connection_lost(self, exc):
        self.events.append("connection_lost")
        self.lost.set_result(exc)


# -- the standard streams ---------------------------------------------------------------------


def test_exec_pipes_all_three_streams(loop):
    code = "import sys; data = sys.stdin.read(); print(data.upper()); print('err', file=sys.stderr)"

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", code, stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        assert proc.returncode is None
        out, err = await proc.communicate(b"hello")
        assert (out, err) == (b"HELLO\n", b"err\n")
        assert proc.returncode == 0

    run(loop, main())


def test_shell_runs_the_command_line_through_sh(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo out; echo err >&2; exit 3", stdout=PIPE, stderr=PIPE
        )
        assert await proc.communicate() == (b"out\n", b"err\n")
        assert proc.returncode == 3

    run(loop, main())


def test_streams_not_asked_for_are_none(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(TRUE)
        assert (proc.stdin, proc.stdout, proc.stderr) == (None, None, None)
        assert await proc.wait() == 0

    run(loop, main())


def test_devnull_gives_the_child_an_empty_stdin_and_discards_output(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(CAT, stdin=DEVNULL, stdout=PIPE)
        assert proc.stdin is None
        assert await proc.communicate() == (b"", None)

        proc = await asyncio.create_subprocess_shell(
            "echo out; echo err >&2", stdout=DEVNULL, stderr=DEVNULL
        )
        assert (proc.stdout, proc.stderr) == (None, None)
        assert await proc.communicate() == (None, None)
        assert proc.returncode == 0

    run(loop, main())


def test_stderr_to_stdout_shares_one_pipe(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "echo one; echo two >&2; echo three", stdout=PIPE, stderr=STDOUT
        )
        assert proc.stderr is None
        assert await proc.communicate() == (b"one\ntwo\nthree\n", None)

        transport, proto = await loop.subprocess_exec(
            Recorder, SH, "-c", "echo out; echo err >&2", stdin=DEVNULL, stderr=STDOUT
        )
        assert transport.get_pipe_transport(2) is None
        await proto.lost
        assert bytes(proto.data[1]) == b"out\nerr\n"
        assert ("data", 2) not in proto.events
        transport.close()

    run(loop, main())


def test_stdout_to_a_file_descriptor(loop, tmp_path):
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)

    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "echo to-fd", stdout=fd)
        assert proc.stdout is None
        assert await proc.wait() == 0

    try:
        run(loop, main())
    finally:
        os.close(fd)
    assert path.read_bytes() == b"to-fd\n"


def test_stdin_and_stderr_as_file_descriptors(loop, tmp_path):
    (tmp_path / "in").write_bytes(b"from an fd\n")
    fd_in = os.open(tmp_path / "in", os.O_RDONLY)
    fd_err = os.open(tmp_path / "err", os.O_WRONLY | os.O_CREAT, 0o600)

    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "cat >&2", stdin=fd_in, stderr=fd_err)
        assert (proc.stdin, proc.stderr) == (None, None)
        assert await proc.wait() == 0

    try:
        run(loop, main())
    finally:
        os.close(fd_in)
        os.close(fd_err)
    assert (tmp_path / "err").read_bytes() == b"from an fd\n"


def test_file_objects_as_stdin_and_stdout(loop, tmp_path):
    (tmp_path / "in").write_bytes(b"from a file\n")

    async def main():
        with open(tmp_path / "in", "rb") as stdin, open(tmp_path / "out", "wb") as stdout:
            proc = await asyncio.create_subprocess_exec(CAT, stdin=stdin, stdout=stdout)
            assert await proc.wait() == 0

    run(loop, main())
    assert (tmp_path / "out").read_bytes() == b"from a file\n"


def test_child_stdin_is_a_pipe_it_can_reopen(loop):
    # A socketpair would do for reading, but /dev/stdin could not be opened on it.
    code = (
        "import os, stat, sys\n"
        "print(stat.S_ISFIFO(os.fstat(0).st_mode))\n"
        "with open('/dev/stdin', 'rb') as f:\n"
        "    sys.stdout.buffer.write(f.read())\n"
    )

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", code, stdin=PIPE, stdout=PIPE)
        out, _ = await proc.communicate(b"through /dev/stdin")
        assert out == b"True\nthrough /dev/stdin"
        assert proc.returncode == 0

    run(loop, main())


def test_child_stdout_and_stderr_are_pipes_it_can_reopen(loop):
    # On a socketpair, `> /dev/stdout` fails with ENXIO ("No such device or address").
    script = "echo out > /dev/stdout; echo err > /dev/stderr; test -p /dev/stdout"

    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", script, stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate()
        assert (out, err, proc.returncode) == (b"out\n", b"err\n", 0)

    run(loop, main())


def test_large_input_and_output_at_once(loop):
    data = os.urandom(1 << 20) * 8

    async def main():
        proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
        out, _ = await proc.communicate(data)
        assert len(out) == len(data)
        assert out == data
        assert proc.returncode == 0

    run(loop, main())


def test_childs_pipes_grow_once_bulk_data_flows(loop, loop_name):
    # A documented difference: oxloop grows a child's pipes to 1 MiB once one is seen full,
    # asyncio leaves them at the kernel's 64 KiB. Small exchanges never grow them.
    fcntl = pytest.importorskip("fcntl")
    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
    if get_size is None:
        pytest.skip("no F_GETPIPE_SZ here")

    def sizes(proc):
        pipes = (proc._transport.get_pipe_transport(fd) for fd in (0, 1))
        return [fcntl.fcntl(p.get_extra_info("pipe").fileno(), get_size) for p in pipes]

    async def main():
        small = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
        small.stdin.write(b"x" * 1000)
        assert await small.stdout.readexactly(1000) == b"x" * 1000
        small_sizes = sizes(small)
        small.stdin.close()
        await small.wait()

        bulk = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
        data = os.urandom(1 << 20) * 4
        bulk.stdin.write(data)
        assert await bulk.stdout.readexactly(len(data)) == data
        bulk_sizes = sizes(bulk)
        bulk.stdin.close()
        await bulk.wait()
        return small_sizes, bulk_sizes

    small_sizes, bulk_sizes = run(loop, main())
    assert small_sizes == [64 * 1024] * 2
    assert bulk_sizes == ([1 << 20] * 2 if loop_name == "oxloop" else [64 * 1024] * 2)


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="before 3.12, communicate() leaves stdin open without input"
)
def test_communicate_without_input_closes_stdin(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(CAT, stdin=PIPE, stdout=PIPE)
        assert await proc.communicate() == (b"", None)
        assert proc.returncode == 0

    run(loop, main())


# -- what the loop passes on to Popen ---------------------------------------------------------


def test_cwd(loop, tmp_path):
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "pwd -P", stdout=PIPE, cwd=tmp_path)
        out, _ = await proc.communicate()
        assert out.decode().rstrip("\n") == os.path.realpath(tmp_path)

    run(loop, main())


def test_env_replaces_the_environment(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", 'echo "$OXLOOP_VAR:${HOME-unset}"', stdout=PIPE, env={"OXLOOP_VAR": "set"}
        )
        assert await proc.communicate() == (b"set:unset\n", None)

        proc = await asyncio.create_subprocess_shell(
            'echo "$OXLOOP_VAR"', stdout=PIPE, env={"OXLOOP_VAR": "shell"}
        )
        assert await proc.communicate() == (b"shell\n", None)

    run(loop, main())


def test_executable_runs_in_place_of_argv0(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "renamed-shell", "-c", 'echo "$0"', executable=SH, stdout=PIPE
        )
        assert await proc.communicate() == (b"renamed-shell\n", None)

    run(loop, main())


@pytest.mark.parametrize("close_fds", [True, False])
def test_close_fds(loop, close_fds):
    r, w = os.pipe()
    os.set_inheritable(w, True)

    async def main():
        # Exits 0 if fd w is open in the child, 1 (with a traceback) if not.
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", f"import os; os.fstat({w})", stderr=DEVNULL, close_fds=close_fds
        )
        return await proc.wait()

    try:
        assert run(loop, main()) == (1 if close_fds else 0)
    finally:
        os.close(r)
        os.close(w)


def test_pass_fds_lets_the_child_write_to_a_parent_pipe(loop):
    r, w = os.pipe()

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", f"import os; os.write({w}, b'passed')", pass_fds=(w,)
        )
        assert await proc.wait() == 0

    try:
        run(loop, main())
        os.close(w)
        w = None
        with open(r, "rb", closefd=False) as reader:
            assert reader.read() == b"passed"
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


SID_AND_PGID = "import os; print(os.getsid(0), os.getpgid(0))"


def test_start_new_session(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", SID_AND_PGID, stdout=PIPE, start_new_session=True
        )
        out, _ = await proc.communicate()
        assert [int(n) for n in out.split()] == [proc.pid, proc.pid]
        assert proc.pid != os.getsid(0)

    run(loop, main())


@requires_process_group
def test_process_group(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", SID_AND_PGID, stdout=PIPE, process_group=0
        )
        out, _ = await proc.communicate()
        # A group of its own, in this session.
        assert [int(n) for n in out.split()] == [os.getsid(0), proc.pid]
        assert proc.pid != os.getpgrp()

    run(loop, main())


def in_signal_mask(status: bytes, field: bytes, sig: int) -> bool:
    """Whether `sig` is in a signal mask of a /proc/PID/status text (SigIgn:, SigCgt:, ...)."""
    line = next(line for line in status.splitlines() if line.startswith(field))
    return bool(int(line.split()[1], 16) & (1 << (sig - 1)))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc/self/status")
@pytest.mark.parametrize("restore", [True, False])
def test_restore_signals(loop, restore):
    # The interpreter ignores SIGPIPE; an ignored signal stays ignored across exec unless
    # restore_signals (the default) puts it back.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN

    async def main():
        proc = await asyncio.create_subprocess_exec(
            CAT, "/proc/self/status", stdout=PIPE, restore_signals=restore
        )
        out, _ = await proc.communicate()
        assert in_signal_mask(out, b"SigIgn:", signal.SIGPIPE) == (not restore)

    run(loop, main())


def test_umask(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "umask", stdout=PIPE, umask=0o027)
        out, _ = await proc.communicate()
        assert int(out, 8) == 0o027

    run(loop, main())


def test_preexec_fn_runs_in_the_child(loop, tmp_path):
    marker = tmp_path / "marker"

    async def main():
        proc = await asyncio.create_subprocess_exec(
            TRUE, preexec_fn=lambda: marker.write_text(str(os.getpid()))
        )
        assert await proc.wait() == 0
        return proc.pid

    pid = run(loop, main())
    assert marker.read_text() == str(pid)


def test_preexec_fn_that_raises(loop):
    def fail():
        raise RuntimeError("in the child")

    async def main():
        with pytest.raises(subprocess.SubprocessError, match="preexec_fn"):
            await asyncio.create_subprocess_exec(
                TRUE, stdin=PIPE, stdout=PIPE, stderr=PIPE, preexec_fn=fail
            )
        with pytest.raises(subprocess.SubprocessError, match="preexec_fn"):
            await loop.subprocess_exec(Recorder, TRUE, preexec_fn=fail)

    run(loop, main())
    assert_no_zombie()


IDS = "import os; print(os.getuid(), os.getgid(), sorted(os.getgroups()))"


def test_user_and_group_as_the_current_ids(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", IDS, stdout=PIPE, user=os.getuid(), group=os.getgid()
        )
        out, _ = await proc.communicate()
        uid, gid, _ = out.decode().split(" ", 2)
        assert (int(uid), int(gid)) == (os.getuid(), os.getgid())
        assert proc.returncode == 0

    run(loop, main())


def test_extra_groups_as_the_current_groups(loop):
    groups = os.getgroups()

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", IDS, stdout=PIPE, extra_groups=groups)
        out, _ = await proc.communicate()
        assert out.decode().split(" ", 2)[2] == f"{sorted(groups)}\n"

    if os.geteuid() == 0:
        run(loop, main())
    else:
        # setgroups(2) needs CAP_SETGID even to set the groups already held.
        with pytest.raises(PermissionError):
            run(loop, main())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bufsize": 1}, "bufsize must be 0"),
        ({"text": True}, "text must be False"),
        ({"universal_newlines": True}, "universal_newlines must be False"),
        ({"encoding": "utf-8"}, "encoding must be None"),
        ({"errors": "strict"}, "errors must be None"),
        ({"shell": True}, "shell must be False"),
    ],
    ids=["bufsize", "text", "universal_newlines", "encoding", "errors", "shell"],
)
def test_exec_refuses_text_mode_buffering_and_shell(loop, kwargs, message):
    async def main():
        with pytest.raises(ValueError, match=message):
            await asyncio.create_subprocess_exec(TRUE, stdout=PIPE, **kwargs)
        with pytest.raises(ValueError, match=message):
            await loop.subprocess_exec(Recorder, TRUE, **kwargs)

    run(loop, main())
    assert_no_zombie()


@pytest.mark.parametrize(
    "cmd, kwargs, message",
    [
        ("true", {"bufsize": 1}, "bufsize must be 0"),
        ("true", {"text": True}, "text must be False"),
        ("true", {"encoding": "utf-8"}, "encoding must be None"),
        ("true", {"shell": False}, "shell must be True"),
        (["true"], {}, "cmd must be a string"),
    ],
    ids=["bufsize", "text", "encoding", "shell", "list"],
)
def test_shell_refuses_text_mode_buffering_and_argument_lists(loop, cmd, kwargs, message):
    async def main():
        with pytest.raises(ValueError, match=message):
            await asyncio.create_subprocess_shell(cmd, **kwargs)
        with pytest.raises(ValueError, match=message):
            await loop.subprocess_shell(Recorder, cmd, **kwargs)

    run(loop, main())


def test_bufsize_zero_is_accepted(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "echo ok", stdout=PIPE, bufsize=0)
        assert await proc.communicate() == (b"ok\n", None)

    run(loop, main())


OPEN_FDS = (
    "import os\n"
    "def is_open(fd):\n"
    "    try:\n"
    "        os.fstat(fd)\n"
    "    except OSError:\n"
    "        return False\n"
    "    return True\n"
    "print(*[fd for fd in map(int, os.listdir('/proc/self/fd')) if fd > 2 and is_open(fd)])\n"
)


def is_inheritable(fd):
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc/self/fd")
def test_close_fds_false_passes_only_inheritable_fds(loop):
    # With close_fds=False a child gets every inheritable fd; the loop's own (epoll, wakeup,
    # pidfds of running children, pipes of other children) must not be among them.
    r, w = os.pipe()
    os.set_inheritable(w, True)

    async def main():
        sleeper = await asyncio.create_subprocess_exec(SLEEP, "60", stdin=PIPE, stdout=PIPE)
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", OPEN_FDS, stdout=PIPE, close_fds=False
        )
        out, _ = await proc.communicate()
        inheritable = {
            fd for fd in map(int, os.listdir("/proc/self/fd")) if fd > 2 and is_inheritable(fd)
        }
        sleeper.kill()
        await sleeper.communicate()
        return {int(fd) for fd in out.split()}, inheritable

    try:
        in_child, inheritable = run(loop, main())
    finally:
        os.close(r)
        os.close(w)
    assert w in in_child
    assert in_child <= inheritable


# -- the subprocess transport -----------------------------------------------------------------


def test_transport_api(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(Recorder, CAT, stderr=DEVNULL)
        assert isinstance(transport, asyncio.SubprocessTransport)
        assert proto.transport is transport
        assert transport.get_protocol() is proto
        popen = transport.get_extra_info("subprocess")
        assert isinstance(popen, subprocess.Popen)
        assert transport.get_pid() == popen.pid > 0
        assert transport.get_returncode() is None
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        assert isinstance(transport.get_pipe_transport(1), asyncio.ReadTransport)
        assert transport.get_pipe_transport(2) is None
        assert transport.get_pipe_transport(3) is None

        stdin.write(b"echoed")
        stdin.write_eof()
        assert await proto.exited == 0
        await proto.lost
        assert bytes(proto.data[1]) == b"echoed"
        assert transport.get_returncode() == 0
        assert not transport.is_closing()
        transport.close()
        assert transport.is_closing()
        transport.close()
        # Once connection_lost has run there is no process left to signal.
        with pytest.raises(ProcessLookupError):
            transport.send_signal(signal.SIGTERM)
        with pytest.raises(ProcessLookupError):
            transport.kill()

    run(loop, main())


def test_subprocess_shell_with_a_protocol(loop):
    async def main():
        transport, proto = await loop.subprocess_shell(Recorder, "echo $((6 * 7)); exit 4")
        assert await proto.exited == 4
        await proto.lost
        assert bytes(proto.data[1]) == b"42\n"
        assert transport.get_returncode() == 4
        transport.close()

    run(loop, main())


def test_send_signal_reaches_the_child(loop):
    code = (
        "import signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
        "print('ready', flush=True)\n"
        "print('got', int(signal.sigwait({signal.SIGUSR1})), flush=True)\n"
    )

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", code, stdout=PIPE)
        assert await proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGUSR1)
        assert await proc.stdout.read() == f"got {int(signal.SIGUSR1)}\n".encode()
        assert await proc.wait() == 0

    run(loop, main())


def test_terminate_and_kill(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SLEEP, "60")
        proc.terminate()
        assert await proc.wait() == -signal.SIGTERM

        proc = await asyncio.create_subprocess_exec(SLEEP, "60")
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL

        transport, proto = await loop.subprocess_exec(Recorder, SLEEP, "60", stdin=DEVNULL)
        transport.terminate()
        assert await proto.exited == -signal.SIGTERM
        await proto.lost
        transport.close()

    run(loop, main())


def test_close_kills_a_running_child_and_callbacks_still_arrive(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(Recorder, SLEEP, "60")
        transport.close()
        assert transport.is_closing()
        assert await proto.exited == -signal.SIGKILL
        assert await proto.lost is None
        assert transport.get_returncode() == -signal.SIGKILL
        assert proto.events[0] == "connection_made"
        assert proto.events[-2:] == ["process_exited", "connection_lost"]
        assert sorted(e for e in proto.events if e[0] == "pipe_lost") == [
            ("pipe_lost", 0),
            ("pipe_lost", 1),
            ("pipe_lost", 2),
        ]

    run(loop, main())


def test_wait_from_several_tasks(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "exit 9")
        assert await asyncio.gather(proc.wait(), proc.wait(), proc.wait()) == [9, 9, 9]
        assert await proc.wait() == 9

    run(loop, main())


def test_cancelled_wait_leaves_the_child_running(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SLEEP, "60")
        waiter = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert proc.returncode is None
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL

    run(loop, main())


# -- the order of the protocol's callbacks ----------------------------------------------------


def check_pipe_events(events, fds):
    """Each fd's data comes before its pipe_connection_lost, which comes exactly once."""
    for fd in fds:
        lost = [i for i, event in enumerate(events) if event == ("pipe_lost", fd)]
        assert len(lost) == 1, events
        assert all(i < lost[0] for i, event in enumerate(events) if event == ("data", fd)), events


def test_callbacks_when_the_pipes_close_before_the_child_exits(loop):
    # The child closes stdout and stderr, then waits for stdin's end before exiting.
    script = "echo out; echo err >&2; exec >&- 2>&-; read -r line"

    async def main():
        transport, proto = await loop.subprocess_exec(Recorder, SH, "-c", script)
        await proto.pipe_lost[1]
        await proto.pipe_lost[2]
        assert "process_exited" not in proto.events
        transport.get_pipe_transport(0).close()
        assert await proto.exited == 1
        assert await proto.lost is None
        transport.close()
        return proto

    proto = run(loop, main())
    assert (bytes(proto.data[1]), bytes(proto.data[2])) == (b"out\n", b"err\n")
    events = proto.events
    assert events[0] == "connection_made"
    assert events[-3:] == [("pipe_lost", 0), "process_exited", "connection_lost"]
    assert sorted(events[1:-3]) == [("data", 1), ("data", 2), ("pipe_lost", 1), ("pipe_lost", 2)]
    check_pipe_events(events, (1, 2))


def test_callbacks_when_the_child_exits_before_the_pipes_close(loop):
    # A background subshell keeps stdout and stderr (and stdin, as fd 3) after the child exits,
    # and writes only once it has read a line.
    script = 'exec 3<&0; (read -r line <&3; echo "$line"; echo "$line" >&2) & exit 0'

    async def main():
        transport, proto = await loop.subprocess_exec(Recorder, SH, "-c", script)
        assert await proto.exited == 0
        assert proto.events == ["connection_made", "process_exited"]
        stdin = transport.get_pipe_transport(0)
        stdin.write(b"late\n")
        stdin.close()
        assert await proto.lost is None
        transport.close()
        return proto

    proto = run(loop, main())
    assert (bytes(proto.data[1]), bytes(proto.data[2])) == (b"late\n", b"late\n")
    events = proto.events
    assert events[:3] == ["connection_made", "process_exited", ("pipe_lost", 0)]
    assert events[-1] == "connection_lost"
    assert sorted(events[3:-1]) == [("data", 1), ("data", 2), ("pipe_lost", 1), ("pipe_lost", 2)]
    check_pipe_events(events, (1, 2))


def test_wait_returns_once_the_pipes_are_closed_too(loop):
    # From 3.11, a wait() begun before the child exits answers after the transport's
    # connection_lost, so a grandchild holding stdout delays it; 3.10 answered as soon as the
    # child exited. The child exits only once told to, after wait() has begun.
    script = 'read -r go; exec 3<&0; (read -r line <&3; echo "$line") & exit 5'

    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", script, stdin=PIPE, stdout=PIPE)
        waiter = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0)
        proc.stdin.write(b"go\n")
        while proc.returncode is None:
            await asyncio.sleep(0.01)
        assert proc.returncode == 5
        for _ in range(5):
            await asyncio.sleep(0)
        assert waiter.done() == (sys.version_info < (3, 11))
        proc.stdin.write(b"late\n")
        proc.stdin.close()
        assert await proc.stdout.read() == b"late\n"
        assert await waiter == 5

    run(loop, main())


# -- faults -----------------------------------------------------------------------------------


def test_missing_program(loop):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(
                "/nonexistent/oxloop-program", stdin=PIPE, stdout=PIPE, stderr=PIPE
            )
        with pytest.raises(FileNotFoundError):
            await loop.subprocess_exec(Recorder, "oxloop-no-such-program")
        # Through the shell it is the shell that fails: "not found", status 127.
        proc = await asyncio.create_subprocess_shell("oxloop-no-such-program", stderr=PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 127
        assert b"not found" in err

    run(loop, main())
    assert_no_zombie()


def test_missing_cwd(loop, tmp_path):
    missing = str(tmp_path / "missing")

    async def main():
        with pytest.raises(FileNotFoundError) as info:
            await asyncio.create_subprocess_exec(TRUE, stdout=PIPE, cwd=missing)
        assert info.value.filename == missing

    run(loop, main())
    assert_no_zombie()


def test_child_killed_by_a_signal_has_a_negative_returncode(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "kill -KILL $$")
        assert await proc.wait() == -signal.SIGKILL

        transport, proto = await loop.subprocess_exec(Recorder, SH, "-c", "kill -TERM $$")
        assert await proto.exited == -signal.SIGTERM
        await proto.lost
        assert transport.get_returncode() == -signal.SIGTERM
        transport.close()

    run(loop, main())


def test_child_ignoring_sigterm_survives_terminate_but_not_kill(loop):
    script = "trap '' TERM; echo ready; while read -r line; do echo \"$line\"; done"

    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", script, stdin=PIPE, stdout=PIPE)
        assert await proc.stdout.readline() == b"ready\n"
        proc.terminate()
        # An ignored signal is discarded when sent: the child still answers afterwards.
        proc.stdin.write(b"still here\n")
        assert await proc.stdout.readline() == b"still here\n"
        assert proc.returncode is None
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL
        assert await stdin_close_error(proc) is None

    run(loop, main())


def test_drain_raises_broken_pipe_when_the_child_stops_reading(loop):
    async def main():
        # The child reads one line and exits, leaving megabytes unread in the transport: more
        # than the pipe holds, even grown.
        proc = await asyncio.create_subprocess_exec(SH, "-c", "read -r line", stdin=PIPE)
        proc.stdin.write(b"line\n" + b"x" * (4 << 20))
        with pytest.raises(BrokenPipeError):
            await proc.stdin.drain()
        assert proc.stdin.is_closing()
        assert isinstance(await stdin_close_error(proc), BrokenPipeError)
        assert await proc.wait() == 0

    run(loop, main())


def test_drain_raises_connection_reset_once_the_child_closed_its_stdin(loop):
    async def main():
        # The child closes its stdin but keeps running; the parent writes only once the loop
        # has seen the pipe's reader go (a write end turns readable), with nothing buffered.
        script = "exec 0<&-; echo closed; exec sleep 5"
        proc = await asyncio.create_subprocess_exec(SH, "-c", script, stdin=PIPE, stdout=PIPE)
        assert await proc.stdout.readline() == b"closed\n"
        for _ in range(50):
            if proc.stdin.is_closing():
                break
            await asyncio.sleep(0.01)
        assert proc.stdin.is_closing()
        proc.stdin.write(b"too late")
        with pytest.raises(ConnectionResetError):
            await proc.stdin.drain()
        assert await stdin_close_error(proc) is None
        proc.kill()
        assert await proc.stdout.read() == b""
        assert await proc.wait() == -signal.SIGKILL

    run(loop, main())


def test_communicate_ignores_a_child_that_does_not_read_its_input(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "echo bye", stdin=PIPE, stdout=PIPE)
        assert await proc.communicate(b"x" * (4 << 20)) == (b"bye\n", None)
        assert proc.returncode == 0
        # Lost cleanly if the child was gone before the first write, else BrokenPipeError.
        exc = await stdin_close_error(proc)
        assert exc is None or isinstance(exc, BrokenPipeError)

    run(loop, main())


HUGE_BLOCKS = 100
BLOCK_WORDS = 1 << 18  # 1 MiB blocks, each its own 4-byte index repeated.
HUGE_WRITER = (
    "import struct, sys\n"
    "out = sys.stdout.buffer\n"
    f"for i in range({HUGE_BLOCKS}):\n"
    f"    out.write(struct.pack('>I', i) * {BLOCK_WORDS})\n"
)


def test_100_mb_through_communicate(loop):
    expected_crc = 0
    for i in range(HUGE_BLOCKS):
        expected_crc = zlib.crc32(struct.pack(">I", i) * BLOCK_WORDS, expected_crc)

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", HUGE_WRITER, stdout=PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out

    out = run(loop, main(), timeout=60.0)
    assert len(out) == HUGE_BLOCKS * BLOCK_WORDS * 4
    assert zlib.crc32(out) == expected_crc


def test_500_concurrent_children_are_all_reaped(loop):
    async def one():
        proc = await asyncio.create_subprocess_exec(TRUE)
        return await proc.wait()

    async def main():
        return await asyncio.gather(*(one() for _ in range(500)))

    assert run(loop, main(), timeout=120.0) == [0] * 500
    assert_no_zombie()


def sigchld_caught() -> bool:
    """Whether any SIGCHLD handler is installed, at the C level too (/proc's SigCgt mask)."""
    with open("/proc/self/status", "rb") as f:
        return in_signal_mask(f.read(), b"SigCgt:", signal.SIGCHLD)


def test_children_reaped_by_the_application_are_left_alone(loop):
    sigchld = signal.getsignal(signal.SIGCHLD)
    assert not sigchld_caught()
    # One child has exited before the loop starts, one exits while it runs; waitid(WNOWAIT)
    # waits for each to exit without collecting its status.
    exited_before = subprocess.Popen([SH, "-c", "exit 7"])
    os.waitid(os.P_PID, exited_before.pid, os.WEXITED | os.WNOWAIT)
    exits_during = subprocess.Popen([SLEEP, "60"])

    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "exit 3")
        exits_during.kill()
        os.waitid(os.P_PID, exits_during.pid, os.WEXITED | os.WNOWAIT)
        assert await proc.wait() == 3
        proc = await asyncio.create_subprocess_exec(TRUE)
        assert await proc.wait() == 0
        assert not sigchld_caught()

    try:
        run(loop, main())
    finally:
        exits_during.kill()
        statuses = (exited_before.wait(), exits_during.wait())
    assert statuses == (7, -signal.SIGKILL)
    assert signal.getsignal(signal.SIGCHLD) == sigchld
    assert not sigchld_caught()


def test_the_application_reaps_its_own_forked_children_while_the_loop_runs(loop):
    async def main():
        procs = [await asyncio.create_subprocess_exec(SH, "-c", f"exit {i}") for i in (1, 2, 3)]
        own = []
        for code in (5, 6):
            pid = os.fork()
            if pid == 0:
                os._exit(code)
            own.append(pid)
        # Collected on the loop's thread while the loop's own children exit around them.
        statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in own]
        return statuses, [await p.wait() for p in procs]

    assert run(loop, main()) == ([5, 6], [1, 2, 3])
    assert_no_zombie()


def test_without_pidfds_children_are_waited_for_in_threads(loop, monkeypatch):
    def no_pidfds(pid, flags=0):
        raise OSError(errno.ENOSYS, "pidfd_open is not implemented")

    # A kernel before 5.3: both loops fall back to a waitpid thread per child. asyncio's
    # policy picks its child watcher once (3.12+ tries a pidfd): a fresh policy picks again.
    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    monkeypatch.setattr(asyncio.events, "_event_loop_policy", None)
    waiters = set()

    async def one(code):
        # Each child waits for its stdin to close, so its waiting thread is there to be seen.
        script = f"read -r x; exit {code}"
        proc = await asyncio.create_subprocess_exec(SH, "-c", script, stdin=PIPE)
        waiters.update(t.name for t in threading.enumerate() if "waitpid" in t.name)
        proc.stdin.close()
        return await proc.wait()

    async def main():
        return await asyncio.gather(*(one(code) for code in range(20)))

    assert run(loop, main()) == list(range(20))
    assert waiters
    assert_no_zombie()


def test_subprocesses_of_a_loop_in_another_thread(loop):
    results = []

    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "echo from a thread", stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    thread = threading.Thread(target=lambda: results.append(run(loop, main())))
    thread.start()
    thread.join()
    assert results == [(b"from a thread\n", 0)]


def test_cancelled_while_starting_kills_and_collects_the_child(loop):
    r, w = os.pipe()
    os.set_blocking(r, False)

    async def main():
        # preexec_fn reports from the child that it was started before the cancellation.
        task = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                SLEEP, "60", stdout=PIPE, preexec_fn=lambda: os.write(w, b"started")
            )
        )
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        run(loop, main())
        assert os.read(r, 100) == b"started"
    finally:
        os.close(r)
        os.close(w)
    assert_no_zombie()


def test_two_loops_each_collect_their_own_children(loop, loop_factory):
    other = loop_factory()
    try:
        transport, proto = run(loop, loop.subprocess_exec(Recorder, SLEEP, "60"))
        # Killed while its loop is not running, the first loop's child has exited by the time
        # the other loop starts, waits for and collects a child of its own. Had the other loop
        # collected it too, the first would report 255 rather than -SIGKILL.
        os.kill(transport.get_pid(), signal.SIGKILL)

        async def other_child():
            proc = await asyncio.create_subprocess_exec(SH, "-c", "exit 6")
            return await proc.wait()

        assert run(other, other_child()) == 6
        assert run(loop, proto.exited) == -signal.SIGKILL
        run(loop, proto.lost)
        transport.close()
    finally:
        other.close()
    assert_no_zombie()
