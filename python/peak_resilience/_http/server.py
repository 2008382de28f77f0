"""The health server: the endpoints served from a background thread.

One thread per connection, bounded against slow and idle clients; loopback by default.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from peak_resilience._http.endpoints import HealthEndpoints, endpoints_for

__all__ = ["HealthServer", "start_health_server"]

logger = logging.getLogger("peak_resilience.http")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a scraper reuses its connection
    timeout = 60  # per read; the server's request_timeout bounds a whole request
    # HTTP/0.9 (a request line without a version) would be answered without a status
    # line: answer it as HTTP/1.0, and errors as JSON naming only the status.
    default_request_version = "HTTP/1.0"
    error_message_format = '{"error":"bad request","code":%(code)d}'
    error_content_type = "application/json"
    endpoints: HealthEndpoints
    server: _Server

    def handle_one_request(self) -> None:
        # From here until its headers are in, the connection is waiting for a request:
        # the server may drop it when it waits too long or when slots run out.
        self.server.waiting(self.connection)
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            # Answered as 1.0 (0.9 has no status line), with a refusal.
            self.request_version = "HTTP/1.0"
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
            return False
        return True

    def _serve(self) -> None:
        self.server.serving(self.connection)
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.endpoints.handle(self.command, self.path, headers)
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            # A request with a body we do not read: close rather than misparse the next.
            self.close_connection = True
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)

    def __getattr__(self, name: str) -> Any:
        # Every method reaches the endpoints, which answer 405 to all but GET and HEAD.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """One thread per connection, but bounded against slow and idle clients (slowloris):
    a connection must deliver each request within ``request_timeout`` seconds of starting
    to wait for it (an idle keep-alive connection is closed after as long), and past
    ``max_connections`` the connection that has waited longest for a request is dropped
    to make room, so clients that never finish a request cannot lock ``/health`` out."""

    daemon_threads = True
    request_queue_size = 128  # 50 clients connecting at once must not overflow the backlog

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        max_connections: int,
        request_timeout: float,
    ) -> None:
        super().__init__(address, handler)
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        # Each open connection -> since when it waits for a request (None: being served).
        self._open: dict[socket.socket, float | None] = {}
        self._open_lock = threading.Lock()

    def open_count(self) -> int:
        with self._open_lock:
            return len(self._open)

    def waiting(self, connection: socket.socket) -> None:
        with self._open_lock:
            if connection in self._open:
                self._open[connection] = time.monotonic()

    def serving(self, connection: socket.socket) -> None:
        with self._open_lock:
            if connection in self._open:
                self._open[connection] = None

    def process_request(self, request: Any, client_address: Any) -> None:
        evict: socket.socket | None = None
        with self._open_lock:
            if len(self._open) >= self.max_connections:
                waiting = [(since, c) for c, since in self._open.items() if since is not None]
                if not waiting:
                    # Every slot is serving a request: this client comes back later.
                    refuse = True
                else:
                    refuse = False
                    evict = min(waiting, key=lambda item: item[0])[1]
                    del self._open[evict]
            else:
                refuse = False
            if not refuse:
                self._open[request] = time.monotonic()
        if refuse:
            logger.warning("health server: %d connections open, refusing one", len(self._open))
            super().shutdown_request(request)
            return
        if evict is not None:
            logger.debug("health server: connection limit reached, dropping the longest waiting")
            self._hang_up(evict)
        super().process_request(request, client_address)

    def service_actions(self) -> None:
        # Called by serve_forever between polls: drop the connections whose request is
        # overdue.
        deadline = time.monotonic() - self.request_timeout
        with self._open_lock:
            overdue = [
                c for c, since in self._open.items() if since is not None and since < deadline
            ]
        for connection in overdue:
            self._hang_up(connection)

    @staticmethod
    def _hang_up(connection: socket.socket) -> None:
        # Its thread, blocked reading, sees the end of the stream and finishes.
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a client hanging up is routine.
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("health server: client %s went away", client_address)
        else:
            logger.exception("health server: error serving %s", client_address)

    def close_connections(self) -> None:
        """Ends the keep-alive connections still open, so that nothing answers after
        ``stop()``."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            self._hang_up(connection)


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """A running health server: ``.port``, ``.url``, ``.stop()`` (also a context
    manager). Made by ``start_health_server``."""

    def __init__(
        self,
        host: str,
        port: int,
        endpoints: HealthEndpoints,
        *,
        max_connections: int = 256,
        request_timeout: float = 30.0,
    ) -> None:
        handler = type("HealthHandler", (_Handler,), {"endpoints": endpoints})
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class(
            (host, port),
            handler,
            max_connections=max_connections,
            request_timeout=request_timeout,
        )
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"peak-resilience-health-{self.port}",
            daemon=True,
        )
        self._thread.start()
        #: The process whose thread serves: a forked child has the object, not the thread.
        self._pid = os.getpid()

    @property
    def open_connections(self) -> int:
        """How many client connections are open now (at most ``max_connections``)."""
        return self._server.open_count()

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stops serving and closes the socket; returns once the server thread ended.
        In a forked child (whose copy of the server has no thread to wait for) it closes
        the child's copy of the socket only; the parent keeps serving."""
        if os.getpid() != self._pid:
            self._server.server_close()
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"HealthServer(url={self.url!r})"


def start_health_server(
    host: str = "127.0.0.1",
    port: int = 9108,
    *,
    token: str | None = None,
    max_connections: int = 256,
    request_timeout: float = 30.0,
) -> HealthServer:
    """Serves the endpoints from a background thread (one thread per connection).

    ``port=0`` picks a free port (read it back from ``.port``). Loopback by default: to
    listen elsewhere, set a token (``token=`` or config ``health_token``), or accept that
    the detailed endpoints are open to whoever reaches the port.

    Against slow or stuck clients: at most ``max_connections`` connections are open at
    once (past that, the one that has waited longest for its request is dropped), and a
    connection that takes more than ``request_timeout`` seconds to send a request (or
    stays idle that long between keep-alive requests) is closed.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ValueError(f"max_connections must be a positive int, got {max_connections!r}")
    if (
        isinstance(request_timeout, bool)
        or not isinstance(request_timeout, int | float)
        or not (request_timeout > 0 and math.isfinite(request_timeout))
    ):
        raise ValueError(
            f"request_timeout must be a positive number of seconds, got {request_timeout!r}"
        )
    endpoints = endpoints_for(token)
    if not _is_loopback(host) and not endpoints.guarded:
        logger.warning(
            "health server on %s without a token: /health/detailed, /health/metrics and "
            "/health/prometheus are open to anyone who reaches it (set health_token)",
            host,
        )
    server = HealthServer(
        host, port, endpoints, max_connections=max_connections, request_timeout=request_timeout
    )
    logger.info("health server listening on %s", server.url)
    return server
