"""A TCP server on a free loopback port that answers every Redis command with one error.

For the refusals a single real redis-server cannot be brought to give on demand
(``LOADING`` needs a dataset large enough to load for seconds, ``CLUSTERDOWN`` and
``TRYAGAIN`` a cluster mid-resharding): the client sees the same bytes on the wire.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from types import TracebackType

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


class RefusingRedis:
    """``with RefusingRedis("LOADING Redis is loading") as url:``: every command answered
    with ``-LOADING Redis is loading``."""

    def __init__(self, error: str) -> None:
        self.port = free_port()
        self._server = _Server(("127.0.0.1", self.port), _Answer)
        self._server.error = b"-" + error.encode() + b"\r\n"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5):
            pass  # listening
        return f"redis://127.0.0.1:{self.port}/0"

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
