"""The health and metrics endpoints over HTTP: a background server, an ASGI app and a
WSGI app, all three answering through the same ``HealthEndpoints``.

- ``GET /health``: 200 ``{"status": "healthy" | "degraded"}`` or 503 ``{"status":
  "unhealthy"}`` (a critical check failed).
- ``GET /health/detailed``: every check with its outcome and duration.
- ``GET /health/metrics``: the metrics summary and recent events, as JSON.
- ``GET /health/prometheus``: the Prometheus exposition (OpenMetrics when asked for).
- ``GET /livez``: the process answers; ``GET /readyz``: the critical checks pass.

A bearer token (``token=``, else config ``health_token``, else the environment variable
``PEAK_TRADE_HEALTH_TOKEN``) guards everything but ``/health``, ``/livez`` and
``/readyz``. No response ever carries a traceback or an exception's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from peak_resilience import config
from peak_resilience._health import HealthCheckRegistry, health_check
from peak_resilience.metrics import Metrics
from peak_resilience.metrics import metrics as _process_metrics

__all__ = [
    "HealthEndpoints",
    "HealthServer",
    "Response",
    "asgi_app",
    "health_token",
    "start_health_server",
    "wsgi_app",
]

logger = logging.getLogger("peak_resilience.http")

TOKEN_ENV = "PEAK_TRADE_HEALTH_TOKEN"
#: Paths a load balancer or an orchestrator probes: never behind the token.
PUBLIC_PATHS = frozenset({"/health", "/livez", "/readyz"})
ALLOWED_METHODS = "GET, HEAD"

ASGIScope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]
WSGIStartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], WSGIStartResponse], Iterable[bytes]]


def health_token() -> str | None:
    """The configured bearer token: ``health_token`` from the configuration in force
    (``config.toml`` or ``PEAK_TRADE_HEALTH_TOKEN``), None (or empty) for none."""
    token = config.active().globals.health_token
    # The config layers the same variable over the file; reading it here as well covers
    # a configuration loaded before the variable was set.
    return token or os.environ.get(TOKEN_ENV) or None


@dataclass(frozen=True)
class Response:
    """What an endpoint answers, before a server adapter writes it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status_line(self) -> str:
        """E.g. ``"503 Service Unavailable"`` (as WSGI wants it)."""
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def _json(status: int, payload: object) -> Response:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(status, [("Content-Type", "application/json")], body)


class HealthEndpoints:
    """The endpoint logic, shared by the threaded server, the ASGI and the WSGI apps."""

    def __init__(
        self,
        token: str | None = None,
        *,
        checks: HealthCheckRegistry | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``token``: the bearer token for the detailed endpoints (None: open);
        ``checks`` and ``metrics`` default to the process-wide ones."""
        self._token = token.encode() if token else None
        self._checks = health_check if checks is None else checks
        self._metrics = _process_metrics if metrics is None else metrics
        self._routes: dict[str, Callable[[Mapping[str, str]], Response]] = {
            "/health": self._health,
            "/health/detailed": self._detailed,
            "/health/metrics": self._metrics_json,
            "/health/prometheus": self._prometheus,
            "/livez": self._livez,
            "/readyz": self._readyz,
        }

    @property
    def guarded(self) -> bool:
        """Whether a bearer token is required for the detailed endpoints."""
        return self._token is not None

    def handle(self, method: str, path: str, headers: Mapping[str, str]) -> Response:
        """Answers one request. ``headers`` are keyed in lower case; ``path`` may carry a
        query string, which is ignored."""
        if not isinstance(method, str) or not isinstance(path, str):
            # A malformed ASGI scope or WSGI environ: refused, never a traceback.
            response = _json(400, {"error": "bad request"})
            response.headers.append(("Content-Length", str(len(response.body))))
            return response
        route = self._routes.get(path.partition("?")[0])
        if route is None:
            response = _json(404, {"error": "not found"})
        elif method not in ("GET", "HEAD"):
            response = _json(405, {"error": "method not allowed"})
            response.headers.append(("Allow", ALLOWED_METHODS))
        elif not self._authorized(path.partition("?")[0], headers):
            response = _json(401, {"error": "unauthorized"})
            response.headers.append(("WWW-Authenticate", 'Bearer realm="peak-resilience"'))
        else:
            try:
                response = route(headers)
            except Exception:
                # The details go to the log; the client learns only that it failed.
                logger.exception("health endpoint %s failed", path)
                response = _json(500, {"error": "internal error"})
        response.headers.append(("Content-Length", str(len(response.body))))
        response.headers.append(("Cache-Control", "no-store"))
        if method == "HEAD":
            return Response(response.status, response.headers, b"")
        return response

    def _authorized(self, path: str, headers: Mapping[str, str]) -> bool:
        if self._token is None or path in PUBLIC_PATHS:
            return True
        authorization = headers.get("authorization", "")
        if not isinstance(authorization, str):
            return False
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant time: how much of a guess matches must not show in the answer's timing.
        # (surrogateescape: a header that is not valid text is a wrong token, not an error)
        return hmac.compare_digest(
            credentials.strip().encode("utf-8", "surrogateescape"), self._token
        )

    def _health(self, headers: Mapping[str, str]) -> Response:
        status = self._checks.status()
        return _json(503 if status == "unhealthy" else 200, {"status": status})

    def _detailed(self, headers: Mapping[str, str]) -> Response:
        results = self._checks.run_all()
        status = self._checks.status_of(results)
        return _json(503 if status == "unhealthy" else 200, {"status": status, "checks": results})

    def _metrics_json(self, headers: Mapping[str, str]) -> Response:
        summary = self._metrics.get_summary()
        summary["events"] = self._metrics.get_snapshots(limit=100)
        return _json(200, summary)

    def _prometheus(self, headers: Mapping[str, str]) -> Response:
        body, content_type = self._metrics.exposition(headers.get("accept"), checks=self._checks)
        return Response(200, [("Content-Type", content_type)], body)

    def _livez(self, headers: Mapping[str, str]) -> Response:
        return _json(200, {"status": "alive"})

    def _readyz(self, headers: Mapping[str, str]) -> Response:
        ready = all(r["healthy"] for r in self._checks.run_all(critical_only=True).values())
        return _json(200 if ready else 503, {"status": "ready" if ready else "not ready"})


def _endpoints(token: str | None) -> HealthEndpoints:
    return HealthEndpoints(token if token is not None else health_token())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the threaded server -----------------------------------------------------------------


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
        """Stops serving and closes the socket; returns once the server thread ended."""
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
    endpoints = _endpoints(token)
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


# -- ASGI --------------------------------------------------------------------------------


def _route_path(scope: ASGIScope) -> str:
    # Mounted under a prefix (Starlette's Mount, uvicorn --root-path), the path still
    # starts with root_path: strip it, as Starlette's own routing does.
    path = scope.get("path", "") or "/"
    root = scope.get("root_path", "") or ""
    if not isinstance(path, str) or not isinstance(root, str):
        raise TypeError("path and root_path must be str")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :] or "/"
    return path


def asgi_app(*, token: str | None = None) -> ASGIApp:
    """The endpoints as an ASGI app, to run under uvicorn or to mount in FastAPI or
    Starlette (``app.mount("/ops", asgi_app())``). Checks run in the default executor,
    never on the event loop."""
    endpoints = _endpoints(token)

    async def app(scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope.get("type") != "http":
            return
        try:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1")
                for k, v in scope.get("headers", ())
            }
            path = _route_path(scope)
        except (AttributeError, TypeError, ValueError):
            # A malformed scope (a server bug, not a client's): 400, never a traceback.
            headers, path = {}, None
        method = scope.get("method")
        if not isinstance(path, str) or not isinstance(method, str):
            response = endpoints.handle(None, "", headers)  # type: ignore[arg-type]
        elif path == "/livez":
            response = endpoints.handle(method, path, headers)
        else:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(None, endpoints.handle, method, path, headers)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in response.headers],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    return app


# -- WSGI --------------------------------------------------------------------------------


def wsgi_app(*, token: str | None = None) -> WSGIApp:
    """The endpoints as a WSGI app, for gunicorn or mounting beside Flask
    (``DispatcherMiddleware(app.wsgi_app, {"/ops": wsgi_app()})``)."""
    endpoints = _endpoints(token)

    def app(environ: dict[str, Any], start_response: WSGIStartResponse) -> Iterable[bytes]:
        headers = {
            "authorization": environ.get("HTTP_AUTHORIZATION", ""),
            "accept": environ.get("HTTP_ACCEPT", ""),
        }
        path = environ.get("PATH_INFO", "") or "/"
        response = endpoints.handle(environ.get("REQUEST_METHOD", "GET"), path, headers)
        start_response(response.status_line, response.headers)
        return [response.body]

    return app
