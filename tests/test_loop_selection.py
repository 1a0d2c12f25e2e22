"""Every way a user picks a loop, each with the real package and real traffic.

Each test serves or exchanges something over 127.0.0.1 on the loop the user picked and checks
which loop answered: oxloop when oxloop was picked, asyncio's own when the same program picks
asyncio's, so that each way is shown to select the loop and nothing else.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import oxloop
import pytest

py312 = pytest.mark.skipif(sys.version_info < (3, 12), reason="loop_factory= is new in 3.12")

# An ASGI app that answers with the module of the loop serving it.
ASGI_APP = textwrap.dedent(
    """
    import asyncio

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        name = type(asyncio.get_running_loop()).__module__.split(".")[0]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name.encode()})
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_until_up(url: str, proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The body at `url`, retried until the server `proc` starts answering."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fetch(url)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.communicate(timeout=5)[0] if proc.poll() is not None else ""
                raise AssertionError(f"server did not answer at {url}: {out}") from None
            time.sleep(0.1)


def serve_and_get(args: list[str], cwd, port: int) -> str:
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        return get_until_up(f"http://127.0.0.1:{port}/", proc)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def loop_spec(loop_name: str) -> str:
    return "oxloop:new_event_loop" if loop_name == "oxloop" else "asyncio"


def test_uvicorn_command_line_loop_option(loop_name, tmp_path):
    (tmp_path / "asgi.py").write_text(ASGI_APP)
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "asgi:app", "--port", str(port)]
    args += ["--loop", loop_spec(loop_name), "--log-level", "warning"]
    assert serve_and_get(args, tmp_path, port) == loop_name


def test_uvicorn_run_loop_argument(loop_name, tmp_path):
    (tmp_path / "asgi.py").write_text(ASGI_APP)
    port = free_port()
    (tmp_path / "serve.py").write_text(
        "import uvicorn, asgi\n"
        f"uvicorn.run(asgi.app, port={port}, loop={loop_spec(loop_name)!r}, log_level='warning')\n"
    )
    assert serve_and_get([sys.executable, "serve.py"], tmp_path, port) == loop_name


def test_aiohttp_run_app_on_a_given_loop(loop_name, tmp_path):
    port = free_port()
    make = "oxloop.new_event_loop()" if loop_name == "oxloop" else "asyncio.new_event_loop()"
    (tmp_path / "serve.py").write_text(
        textwrap.dedent(
            f"""
            import asyncio
            import oxloop
            from aiohttp import web

            async def hello(request):
                loop = asyncio.get_running_loop()
                return web.Response(text=type(loop).__module__.split(".")[0])

            app = web.Application()
            app.router.add_get("/", hello)
            web.run_app(app, host="127.0.0.1", port={port}, loop={make}, print=None)
            """
        )
    )
    assert serve_and_get([sys.executable, "serve.py"], tmp_path, port) == loop_name


async def echo_round_trip() -> str:
    """One message through a server and a client of the running loop; its loop's module."""

    async def handle(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        assert await reader.readline() == b"ping\n"
        writer.close()
        await writer.wait_closed()
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


@py312
def test_asyncio_run_loop_factory(loop_name, loop_factory):
    assert asyncio.run(echo_round_trip(), loop_factory=loop_factory) == loop_name


def test_oxloop_run():
    assert oxloop.run(echo_round_trip()) == "oxloop"


def test_anyio_run_loop_factory(loop_name, loop_factory):
    anyio = pytest.importorskip("anyio")

    async def main():
        # anyio's own networking, on the loop it was given.
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)

        async def serve_one(stream):
            async with stream:
                await stream.send(await stream.receive())

        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve_one)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"ping")
                assert await client.receive() == b"ping"
            tg.cancel_scope.cancel()
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    got = anyio.run(main, backend="asyncio", backend_options={"loop_factory": loop_factory})
    assert got == loop_name


# Worker classes as a user of asyncio's own loop would write them.
ASYNCIO_WORKERS = textwrap.dedent(
    """
    from uvicorn.workers import UvicornWorker

    class AsyncioUvicornWorker(UvicornWorker):
        CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "loop": "asyncio"}
    """
)

AIOHTTP_APP = textwrap.dedent(
    """
    import asyncio
    from aiohttp import web

    async def hello(request):
        loop = asyncio.get_running_loop()
        return web.Response(text=type(loop).__module__.split(".")[0])

    async def make_app():
        app = web.Application()
        app.router.add_get("/", hello)
        return app
    """
)


@pytest.mark.parametrize("framework", ["uvicorn", "aiohttp"])
def test_gunicorn_worker_classes(loop_name, tmp_path, framework):
    pytest.importorskip("gunicorn")
    (tmp_path / "asgi.py").write_text(ASGI_APP)
    (tmp_path / "workers.py").write_text(ASYNCIO_WORKERS)
    (tmp_path / "aioapp.py").write_text(AIOHTTP_APP)
    worker, app = {
        ("uvicorn", "oxloop"): ("oxloop.gunicorn.UvicornWorker", "asgi:app"),
        ("uvicorn", "asyncio"): ("workers.AsyncioUvicornWorker", "asgi:app"),
        ("aiohttp", "oxloop"): ("oxloop.gunicorn.AiohttpWorker", "aioapp:make_app"),
        ("aiohttp", "asyncio"): ("aiohttp.GunicornWebWorker", "aioapp:make_app"),
    }[framework, loop_name]
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", app, "-k", worker, "-w", "1"]
    args += ["-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    assert serve_and_get(args, tmp_path, port) == loop_name


PYTEST_ASYNCIO_CONFTEST = textwrap.dedent(
    """
    import asyncio
    import oxloop

    # pytest-asyncio's way to choose the loop: every asyncio test runs on each factory.
    def pytest_asyncio_loop_factories(config, item):
        return {{"chosen": {factory}}}
    """
)

PYTEST_ASYNCIO_TEST = textwrap.dedent(
    """
    import pytest
    from roundtrip import echo_round_trip

    @pytest.mark.asyncio
    async def test_echo():
        print("LOOP", await echo_round_trip())
    """
)


def test_pytest_asyncio_loop_factories_hook(loop_name, tmp_path):
    pytest.importorskip("pytest_asyncio")
    factory = "oxloop.new_event_loop" if loop_name == "oxloop" else "asyncio.new_event_loop"
    (tmp_path / "conftest.py").write_text(PYTEST_ASYNCIO_CONFTEST.format(factory=factory))
    (tmp_path / "test_echo.py").write_text(PYTEST_ASYNCIO_TEST)
    # The same round trip as the other tests', in the temporary project.
    roundtrip = "import asyncio\n\n" + inspect.getsource(echo_round_trip)
    (tmp_path / "roundtrip.py").write_text(roundtrip)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-q", "-p", "asyncio", "test_echo.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"LOOP {loop_name}" in done.stdout, done.stdout
    assert "1 passed" in done.stdout, done.stdout


def test_hypercorn_run_through_python_m_oxloop(loop_name, tmp_path):
    # hypercorn's command line has no loop option beyond its worker classes (asyncio,
    # uvloop, trio); its asyncio worker makes its loop through asyncio, so `python -m oxloop`
    # runs it on oxloop unmodified, in its own process (`--workers 0`: the worker processes
    # it spawns otherwise start a fresh interpreter, without oxloop's policy).
    pytest.importorskip("hypercorn")
    (tmp_path / "asgi.py").write_text(ASGI_APP)
    port = free_port()
    launcher = [sys.executable, "-m", "oxloop"] if loop_name == "oxloop" else [sys.executable]
    args = [*launcher, "-m", "hypercorn", "asgi:app", "--bind", f"127.0.0.1:{port}", "-w", "0"]
    assert serve_and_get(args, tmp_path, port) == loop_name


def test_hypercorn_serve_on_a_chosen_loop(loop, loop_name):
    pytest.importorskip("hypercorn")
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    namespace: dict[str, object] = {}
    exec(ASGI_APP, namespace)
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]

    async def main():
        stop = asyncio.Event()
        app = namespace["app"]
        serving = asyncio.ensure_future(serve(app, config, shutdown_trigger=stop.wait))
        loop = asyncio.get_running_loop()
        try:
            for _ in range(300):
                try:
                    return await loop.run_in_executor(None, fetch, f"http://127.0.0.1:{port}/")
                except OSError:
                    await asyncio.sleep(0.05)
            raise AssertionError("hypercorn did not answer")
        finally:
            stop.set()
            await serving

    assert loop.run_until_complete(main()) == loop_name


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())
