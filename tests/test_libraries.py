"""The libraries people run on a drop-in loop: aiohttp (client, server, websockets), the
websockets package, uvicorn and asyncpg, over real sockets on 127.0.0.1, on both loops.

They exercise the transports the way production code does: aiohttp's server tunes write
buffer limits and pauses reading, its client pools connections, websockets frames messages
over streams, uvicorn serves through its httptools protocol with flow control, asyncpg runs
its own protocol against a real PostgreSQL server (the `postgres` fixture starts one).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os

import aiohttp
import asyncpg
import pytest
import uvicorn
from aiohttp import web as aiohttp_web
from websockets.asyncio import client as websockets_asyncio_client
from websockets.asyncio import server as websockets_asyncio_server

BODY = os.urandom(3 << 20)


def run(loop, coro, timeout=30.0):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def start_aiohttp_app():
    async def hello(request):
        return aiohttp_web.Response(text=f"hello {request.query.get('name', '')}")

    async def digest(request):
        h = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            h.update(chunk)
            size += len(chunk)
        return aiohttp_web.json_response({"size": size, "sha256": h.hexdigest()})

    async def stream(request):
        response = aiohttp_web.StreamResponse()
        await response.prepare(request)
        for i in range(0, len(BODY), 100_000):
            await response.write(BODY[i : i + 100_000])
        await response.write_eof()
        return response

    async def ws(request):
        sock = aiohttp_web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data.upper())
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
        return sock

    app = aiohttp_web.Application(client_max_size=16 << 20)
    app.add_routes(
        [
            aiohttp_web.get("/hello", hello),
            aiohttp_web.post("/digest", digest),
            aiohttp_web.get("/stream", stream),
            aiohttp_web.get("/ws", ws),
        ]
    )
    runner = aiohttp_web.AppRunner(app)
    await runner.setup()
    site = aiohttp_web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def test_aiohttp_client_and_server(loop):
    async def main():
        runner, base = await start_aiohttp_app()
        try:
            async with aiohttp.ClientSession() as session:
                # Many requests over the pooled keep-alive connections, concurrently.
                async def get(i):
                    async with session.get(f"{base}/hello", params={"name": str(i)}) as r:
                        assert r.status == 200
                        return await r.text()

                texts = await asyncio.gather(*(get(i) for i in range(200)))
                assert texts == [f"hello {i}" for i in range(200)]

                async with session.post(f"{base}/digest", data=io.BytesIO(BODY)) as r:
                    assert await r.json() == {
                        "size": len(BODY),
                        "sha256": hashlib.sha256(BODY).hexdigest(),
                    }

                async with session.get(f"{base}/stream") as r:
                    got = bytearray()
                    async for chunk in r.content.iter_chunked(32 * 1024):
                        got += chunk
                    assert bytes(got) == BODY

                async with session.ws_connect(f"{base}/ws") as sock:
                    for i in range(50):
                        await sock.send_str(f"message {i}")
                        assert (await sock.receive_str()) == f"MESSAGE {i}"
                    await sock.send_bytes(b"\x00\x01" * 100_000)
                    assert (await sock.receive_bytes()) == (b"\x00\x01" * 100_000)[::-1]
        finally:
            await runner.cleanup()

    run(loop, main())


def test_websockets_echo(loop):
    async def echo(connection):
        async for message in connection:
            await connection.send(message)

    async def main():
        async with websockets_asyncio_server.serve(echo, "127.0.0.1", 0, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            async with websockets_asyncio_client.connect(
                f"ws://127.0.0.1:{port}", max_size=None
            ) as client:
                for size in (0, 1, 125, 126, 65535, 65536, 1 << 20):
                    payload = os.urandom(size)
                    await client.send(payload)
                    assert await client.recv() == payload
                await client.send("text ünïcode")
                assert await client.recv() == "text ünïcode"

    run(loop, main())


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    digest = hashlib.sha256(body).hexdigest().encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": digest, "more_body": True})
    await send({"type": "http.response.body", "body": b"\n" + bytes(body[:16])})


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_uvicorn_serves_on_the_running_loop(loop, http):
    async def main():
        config = uvicorn.Config(
            asgi_app, host="127.0.0.1", port=0, loop="none", http=http, log_level="warning"
        )
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            assert not serving.done(), serving
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session:

                async def post(body):
                    async with session.post(f"http://127.0.0.1:{port}/", data=body) as r:
                        assert r.status == 200
                        return await r.read()

                bodies = [os.urandom(n) for n in (0, 10, 70_000, 1 << 20)] * 5
                answers = await asyncio.gather(*(post(b) for b in bodies))
                for body, answer in zip(bodies, answers, strict=True):
                    assert answer == hashlib.sha256(body).hexdigest().encode() + b"\n" + body[:16]
        finally:
            server.should_exit = True
            await serving

    run(loop, main())


def test_asyncpg(loop, postgres):
    where = {
        "host": postgres.host,
        "port": postgres.port,
        "user": postgres.user,
        "database": postgres.database,
    }

    async def main():
        conn = await asyncpg.connect(**where)
        try:
            assert await conn.fetchval("select $1::int + 1", 41) == 42
            await conn.execute("create temporary table t (id int primary key, s text)")
            rows = [(i, f"row {i}" * 10) for i in range(50_000)]
            await conn.copy_records_to_table("t", records=rows)
            got = await conn.fetch("select id, s from t order by id")
            assert [tuple(r) for r in got] == rows

            # A transaction rolled back leaves nothing behind.
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await conn.execute("delete from t")
                    raise ZeroDivisionError
            assert await conn.fetchval("select count(*) from t") == len(rows)

            # A query cut short by its timeout is cancelled on the server (asyncpg opens a
            # second connection for that) and the connection stays usable.
            with pytest.raises(asyncio.TimeoutError):
                await conn.execute("select pg_sleep(30)", timeout=0.2)
            assert await conn.fetchval("select 'still here'") == "still here"

            # Notifications arrive unasked, between queries.
            heard = asyncio.Queue()
            await conn.add_listener("news", lambda *args: heard.put_nowait(args[-1]))
            other = await asyncpg.connect(**where)
            try:
                for i in range(20):
                    await other.execute(f"notify news, 'item {i}'")
            finally:
                await other.close()
            assert [await heard.get() for _ in range(20)] == [f"item {i}" for i in range(20)]
        finally:
            await conn.close()

        pool = await asyncpg.create_pool(**where, min_size=2, max_size=8)
        try:
            doubled = await asyncio.gather(
                *(pool.fetchval("select $1::int * 2", i) for i in range(1_000))
            )
            assert doubled == [2 * i for i in range(1_000)]
        finally:
            await pool.close()

    run(loop, main())
