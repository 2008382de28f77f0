"""The health server under bad and hostile clients, on 127.0.0.1 only: malformed request
lines, huge and broken headers, binary garbage, slowloris clients and many connections.
After each, ``/health`` still answers 200, no response carries a traceback, and the
server's memory stays bounded. Every loop is bounded in count and in time.

The ASGI and WSGI apps, given malformed scopes and environs, answer 4xx/5xx too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from stress import scaled

from peak_resilience._health import HealthCheckRegistry
from peak_resilience.http import (
    HealthEndpoints,
    HealthServer,
    asgi_app,
    start_health_server,
    wsgi_app,
)

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@pytest.fixture
def server() -> Iterator[HealthServer]:
    running = start_health_server("127.0.0.1", 0, token="s3cret-token")
    try:
        yield running
    finally:
        running.stop()


def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether ``condition`` holds within ``seconds`` (a server thread finishing up)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def get_health(server: HealthServer) -> int:
    """GET /health on a new connection (bounded by a 10 s socket timeout)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def exchange(server: HealthServer, raw: bytes, *, read_timeout: float = 10.0) -> bytes:
    """Sends ``raw`` on a new connection, half-closes, and returns all that comes back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_timeout) as sock:
        with contextlib.suppress(OSError):  # the server may hang up mid-send
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def assert_no_traceback(reply: bytes) -> None:
    assert b"Traceback" not in reply
    assert b'File "' not in reply


MALFORMED = {
    "empty line": b"\r\n\r\n",
    "no path": b"GET\r\n\r\n",
    "no version": b"GET /health\r\n\r\n",
    "bad version": b"GET /health HTTP/9.9\r\n\r\n",
    "version garbage": b"GET /health HTTP/x.y\r\n\r\n",
    "http/0.9 style": b"GET /health HTTP/0.9\r\n\r\n",
    "too many words": b"GET /health HTTP/1.1 extra words\r\n\r\n",
    "lower-case method": b"get /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown method": b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute uri": b"GET http://evil/health HTTP/1.1\r\nHost: x\r\n\r\n",
    "path traversal": b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "percent garbage": b"GET /health/%ff%00%zz HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul in path": b"GET /hea\x00lth HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-ascii path": "GET /h\u00e9alth HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "header without colon": b"GET /health HTTP/1.1\r\nthis is not a header\r\n\r\n",
    "header folding": b"GET /health HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n",
    "bad content-length": b"GET /health HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    "huge content-length": b"GET /health HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n",
    "chunked without body": b"POST /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "bad bearer": b"GET /health/detailed HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    "only lf": b"GET /health HTTP/1.1\nHost: x\n\n",
    "request line of 70 KB": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
    "header of 64 KB": b"GET /health HTTP/1.1\r\nX-Big: " + b"b" * 65_536 + b"\r\n\r\n",
    "200 headers": b"GET /health HTTP/1.1\r\n" + b"X-H: v\r\n" * 200 + b"\r\n",
    "binary garbage": bytes(range(256)) * 8,
    "tls hello": bytes.fromhex("16030100a1010000") + os.urandom(160),
    "pipelined mix": b"GET /health HTTP/1.1\r\n\r\nGARBAGE\r\n\r\nGET /livez HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_gets_no_traceback_and_health_still_answers(
    server: HealthServer, raw: bytes
) -> None:
    reply = exchange(server, raw)

    assert_no_traceback(reply)
    if reply:
        status_line = reply.split(b"\r\n", 1)[0]
        # Either a well-formed answer to what could be read, or a 4xx refusal.
        assert status_line.startswith(b"HTTP/1."), status_line
    assert get_health(server) == 200


def test_random_bytes_never_break_the_server(server: HealthServer) -> None:
    rng = __import__("random").Random(7)
    count = scaled(200, slow=False)
    for _ in range(count):
        size = rng.choice([1, 10, 100, 1000, 20_000])
        prefix = rng.choice([b"", b"GET / HTTP/1.1\r\n", b"GET /health HTTP/1.1\r\nX: "])
        assert_no_traceback(exchange(server, prefix + rng.randbytes(size)))

    assert get_health(server) == 200


def test_a_request_line_over_64_kb_is_refused_with_414(server: HealthServer) -> None:
    reply = exchange(server, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")

    assert reply.startswith(b"HTTP/1.1 414") or reply.startswith(b"HTTP/1.0 414")


def test_more_than_a_hundred_headers_are_refused_with_431(server: HealthServer) -> None:
    reply = exchange(server, b"GET /health HTTP/1.1\r\n" + b"X-H: v\r\n" * 200 + b"\r\n")

    assert b" 431 " in reply.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("version", [b"HTTP/9.9", b"HTTP/2.0", b"HTTP/0.9"])
def test_an_unsupported_http_version_is_refused_with_505(
    server: HealthServer, version: bytes
) -> None:
    reply = exchange(server, b"GET /health " + version + b"\r\n\r\n")

    assert reply.startswith(b"HTTP/1.0 505 ") or reply.startswith(b"HTTP/1.1 505 ")
    assert reply.endswith(b'{"error":"bad request","code":505}')


class Slowloris:
    """``count`` connections that each send a request line and then one header byte now
    and then, never finishing their request."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            self.sockets.append(sock)

    def dribble(self) -> int:
        """One more byte on every connection; returns how many the server has closed."""
        closed = 0
        for sock in self.sockets:
            try:
                sock.sendall(b"a")
            except OSError:
                closed += 1
        return closed

    def closed_by_server(self) -> int:
        closed = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            finally:
                sock.setblocking(True)
        return closed

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def test_health_answers_while_a_hundred_slowloris_clients_hold_connections(
    server: HealthServer,
) -> None:
    slow = Slowloris(server.port, 100)
    try:
        for _ in range(3):
            slow.dribble()
            assert get_health(server) == 200
            time.sleep(0.2)
    finally:
        slow.close()


def test_slowloris_clients_past_the_connection_cap_do_not_lock_health_out() -> None:
    # The cap: past it the server drops the connection that has waited longest for its
    # request, so clients that never finish one cannot take every slot.
    running = start_health_server("127.0.0.1", 0, max_connections=20)
    slow = Slowloris(running.port, 60)
    try:
        slow.dribble()
        assert get_health(running) == 200
        assert eventually(lambda: running.open_connections <= 20)
        # The forty that waited longest were dropped, not the server.
        assert eventually(lambda: slow.closed_by_server() >= 40)
    finally:
        slow.close()
        running.stop()


def test_a_request_that_takes_longer_than_request_timeout_is_dropped() -> None:
    running = start_health_server("127.0.0.1", 0, request_timeout=0.5)
    slow = Slowloris(running.port, 5)
    try:
        deadline = time.monotonic() + 10
        dropped = 0
        while time.monotonic() < deadline and dropped < 5:
            time.sleep(0.2)
            slow.dribble()
            dropped = slow.closed_by_server()
        assert dropped == 5
        assert get_health(running) == 200
        assert eventually(lambda: running.open_connections == 0)
    finally:
        slow.close()
        running.stop()


def test_a_keep_alive_client_is_served_request_after_request_within_the_timeout() -> None:
    running = start_health_server("127.0.0.1", 0, request_timeout=5.0)
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    try:
        for _ in range(20):
            connection.request("GET", "/livez")
            response = connection.getresponse()
            assert response.status == 200
            response.read()
    finally:
        connection.close()
        running.stop()


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("max_connections", 0),
        ("max_connections", 1.5),
        ("request_timeout", 0),
        ("request_timeout", float("nan")),
    ],
)
def test_bad_connection_limits_are_refused_by_name(argument: str, value: Any) -> None:
    with pytest.raises(ValueError, match=argument):
        start_health_server("127.0.0.1", 0, **{argument: value})


def hammer(port: int, clients: int, requests_each: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(requests_each):
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                with lock:
                    statuses.append(response.status)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def test_fifty_concurrent_clients_all_get_answers(server: HealthServer) -> None:
    statuses = hammer(server.port, 50, 4)

    assert statuses == [200] * 200


def test_memory_stays_bounded_under_abuse(server: HealthServer) -> None:
    # Warm up (threads, buffers), then measure a round of every kind of abuse.
    rounds = scaled(3, slow=False)
    for raw in MALFORMED.values():
        exchange(server, raw)
    gc.collect()
    before = rss_bytes()
    for _ in range(rounds):
        for raw in MALFORMED.values():
            exchange(server, raw)
        slow = Slowloris(server.port, 100)
        slow.dribble()
        slow.close()
        hammer(server.port, 20, 5)
    gc.collect()
    grown = rss_bytes() - before

    assert get_health(server) == 200
    assert grown < 32 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB"


@pytest.mark.slow
def test_long_abuse_run_leaves_health_answering_and_memory_bounded() -> None:
    running = start_health_server("127.0.0.1", 0, max_connections=256)
    try:
        rounds = scaled(50)
        for raw in MALFORMED.values():
            exchange(running, raw)
        gc.collect()
        before = rss_bytes()
        held = 0
        for _ in range(rounds):
            for raw in MALFORMED.values():
                assert_no_traceback(exchange(running, raw))
            slow = Slowloris(running.port, 300)
            held += 300
            slow.dribble()
            assert get_health(running) == 200
            slow.close()
            assert hammer(running.port, 50, 2) == [200] * 100
        gc.collect()
        grown = rss_bytes() - before
        assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB"
        print(
            f"http abuse: {rounds} rounds, {rounds * len(MALFORMED)} malformed requests, "
            f"{held} slowloris connections, {rounds * 100} concurrent requests; "
            f"RSS grew {grown / 1e6:.1f} MB"
        )
    finally:
        running.stop()


# -- the ASGI and WSGI apps ----------------------------------------------------------------


def run_asgi(scope: dict[str, Any]) -> list[dict[str, Any]]:
    app = asgi_app(token="s3cret-token")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(app(scope, receive, send))
    return sent


BAD_SCOPES: dict[str, dict[str, Any]] = {
    "no path": {"type": "http", "method": "GET", "headers": []},
    "no method": {"type": "http", "path": "/health", "headers": []},
    "no headers": {"type": "http", "method": "GET", "path": "/health"},
    "method not a str": {"type": "http", "method": 5, "path": "/health", "headers": []},
    "path not a str": {"type": "http", "method": "GET", "path": b"/health", "headers": []},
    "headers not pairs": {"type": "http", "method": "GET", "path": "/health", "headers": [b"x"]},
    "header values not bytes": {
        "type": "http",
        "method": "GET",
        "path": "/health/detailed",
        "headers": [("authorization", "Bearer s3cret-token")],
    },
    "non-latin-1 header": {
        "type": "http",
        "method": "GET",
        "path": "/health/detailed",
        "headers": [(b"authorization", "Bearer \u20ac".encode())],
    },
    "root_path longer than path": {
        "type": "http",
        "method": "GET",
        "path": "/h",
        "root_path": "/health/x",
        "headers": [],
    },
    "nul in path": {"type": "http", "method": "GET", "path": "/hea\x00lth", "headers": []},
}


@pytest.mark.parametrize("scope", BAD_SCOPES.values(), ids=BAD_SCOPES.keys())
def test_the_asgi_app_answers_a_malformed_scope_with_a_status_and_no_traceback(
    scope: dict[str, Any],
) -> None:
    sent = run_asgi(scope)

    start = next(m for m in sent if m["type"] == "http.response.start")
    assert 400 <= start["status"] < 600 or start["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert_no_traceback(body)
    assert b"s3cret-token" not in body


def test_the_asgi_app_refuses_a_wrong_typed_method_with_400() -> None:
    sent = run_asgi({"type": "http", "method": 5, "path": "/health", "headers": []})

    assert sent[0]["status"] == 400


def test_the_asgi_app_ignores_a_websocket_scope() -> None:
    assert run_asgi({"type": "websocket", "path": "/health", "headers": []}) == []


BAD_ENVIRONS: dict[str, dict[str, Any]] = {
    "empty": {},
    "no method": {"PATH_INFO": "/health"},
    "method not a str": {"REQUEST_METHOD": None, "PATH_INFO": "/health"},
    "path not a str": {"REQUEST_METHOD": "GET", "PATH_INFO": 42},
    "auth not a str": {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/health/detailed",
        "HTTP_AUTHORIZATION": 3,
    },
    "nul in path": {"REQUEST_METHOD": "GET", "PATH_INFO": "/hea\x00lth"},
    "latin-1 garbage auth": {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/health/detailed",
        "HTTP_AUTHORIZATION": "Bearer \xff\xfe",
    },
}


@pytest.mark.parametrize("environ", BAD_ENVIRONS.values(), ids=BAD_ENVIRONS.keys())
def test_the_wsgi_app_answers_a_malformed_environ_with_a_status_and_no_traceback(
    environ: dict[str, Any],
) -> None:
    app = wsgi_app(token="s3cret-token")
    started: list[str] = []

    body = b"".join(app(environ, lambda status, headers: started.append(status)))

    assert len(started) == 1
    assert int(started[0].split()[0]) in (200, 400, 401, 404, 405)
    assert_no_traceback(body)


def test_the_endpoints_refuse_a_non_str_method_or_path_with_400() -> None:
    endpoints = HealthEndpoints(checks=HealthCheckRegistry())

    assert endpoints.handle(None, "/health", {}).status == 400  # type: ignore[arg-type]
    assert endpoints.handle("GET", b"/health", {}).status == 400  # type: ignore[arg-type]
