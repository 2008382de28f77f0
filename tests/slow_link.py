"""A TCP proxy on a free loopback port that delays every packet: a slow network link.

``slow_link`` runs it in a process of its own (``python slow_link.py PORT TARGET DELAY``),
so that the bytes it moves take no time from the process under test, as a real network's
would not. Each chunk read from either side is forwarded ``delay`` seconds later, in
order, without holding up the chunks behind it.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis_server import free_port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def deliver() -> None:
        while data := await queue.get():
            writer.write(data)
            await writer.drain()
        writer.close()

    delivering = asyncio.ensure_future(deliver())
    data = b"-"
    while data:
        try:
            data = await reader.read(65536)
        except OSError:
            data = b""
        loop.call_later(delay, queue.put_nowait, data)
    await delivering


async def _serve(port: int, target: int, delay: float) -> None:
    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            _pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay), return_exceptions=True
        )

    server = await asyncio.start_server(connected, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


@contextmanager
def slow_link(target_port: int, delay: float) -> Iterator[int]:
    """``with slow_link(redis_port, 0.02) as port:``: connect to ``port`` to reach
    ``redis_port`` with 20 ms added to every packet each way."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, str(port), str(target_port), str(delay)])
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the slow link on port {port} did not start within 10 s")
            time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    port, target, delay = sys.argv[1:4]
    asyncio.run(_serve(int(port), int(target), float(delay)))
