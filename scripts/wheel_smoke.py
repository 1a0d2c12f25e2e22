"""What `make wheel-check` runs in a fresh environment holding only the oxloop wheel: TCP,
TLS, a subprocess and a process pool, on oxloop, with no Rust toolchain or compiler on PATH."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import ssl
import sys
import tempfile

import oxloop
import trustme


def square(x: int) -> int:
    return x * x


async def echo_once(ssl_server: ssl.SSLContext | None, ssl_client: ssl.SSLContext | None) -> bytes:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_server)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_client, server_hostname="localhost" if ssl_client else None
        )
        writer.write(b"ping\n")
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
    return answer


async def main() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, oxloop.Loop), loop
    assert await echo_once(None, None) == b"ping\n"

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    assert await echo_once(server_ctx, client_ctx) == b"ping\n"

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print(6 * 7)", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert (proc.returncode, out.strip()) == (0, b"42"), (proc.returncode, out)

    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        results = await asyncio.gather(*(loop.run_in_executor(pool, square, i) for i in range(8)))
    assert results == [i * i for i in range(8)], results

    assert oxloop.stats().callbacks > 0


if __name__ == "__main__":
    missing = [tool for tool in ("cargo", "rustc", "cc", "gcc") if shutil.which(tool)]
    assert not missing, f"the check must run without a toolchain on PATH: {missing}"
    with tempfile.TemporaryDirectory():
        oxloop.run(main())
    print(f"wheel smoke: ok ({oxloop.__file__})")
