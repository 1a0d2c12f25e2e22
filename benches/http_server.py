"""A hello-world HTTP server on a chosen event loop and framework, for benches/echo.py.

    python benches/http_server.py --loop oxloop --app uvicorn --tcp 127.0.0.1:0
    python benches/http_server.py --loop uvloop --app aiohttp --tcp 127.0.0.1:0

``uvicorn``: an ASGI app answering every request with ``Hello, world!`` on uvicorn with its
httptools parser; ``aiohttp``: the same through ``aiohttp.web``. Neither logs requests. Once
listening it prints its address (``HOST:PORT``) on stdout, then serves until SIGTERM or
SIGINT. As echo_server.py, it checks that it runs on the loop asked for and settles malloc
first.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from typing import Any

from benchutil import settle_malloc
from echo_server import LOOPS, check_loop, format_address, host_port, loop_factory, run

BODY = b"Hello, world!"


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    check_loop(loop, args.loop, "http_server")
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stop.done() or stop.set_result(None))
    host, port = host_port(args.tcp)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    if args.app == "uvicorn":
        import uvicorn

        config = uvicorn.Config(
            asgi_app,
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        # uvicorn's own signal handling would replace ours.
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = loop.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        print(format_address(sock), flush=True)
        await stop
        server.should_exit = True
        await task
    else:
        from aiohttp import web

        async def hello(request: web.Request) -> web.Response:
            return web.Response(body=BODY, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        print(format_address(sock), flush=True)
        await stop
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Hello-world HTTP server on a chosen loop.")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--app", choices=("uvicorn", "aiohttp"), required=True)
    parser.add_argument("--tcp", metavar="HOST:PORT", required=True)
    args = parser.parse_args(argv)
    settle_malloc()
    run(serve(args), loop_factory(args.loop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
