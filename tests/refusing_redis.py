"""A TCP server on a free loopback port that answers every Redis command with one error.

For the refusals a single real redis-server cannot be brought to give on demand
(``LOADING`` needs a dataset large enough to load for seconds, ``CLUSTERDOWN`` and
``TRYAGAIN`` a cluster mid-resharding): the client sees the same bytes on the wire.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from redis_server import free_port


class _Answer(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.settimeout(10)
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            # One reply per command: each starts with a RESP array header ("*<n>\r\n");
            # no argument the clients under test send starts with "*".
            commands = sum(1 for line in data.split(b"\r\n") if line.startswith(b"*"))
            self.request.sendall(self.server.error * commands)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    error: bytes


@contextmanager
def refusing_redis(error: str) -> Iterator[str]:
    """``with refusing_redis("LOADING Redis is loading") as url:``: every command answered
    with ``-LOADING Redis is loading``."""
    port = free_port()
    server = _Server(("127.0.0.1", port), _Answer)
    server.error = b"-" + error.encode() + b"\r\n"
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()
        server.server_close()
        serving.join(timeout=10)
