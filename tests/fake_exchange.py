"""A fake Binance REST server on loopback for the ccxt integration's tests.

It answers ``GET /api/v3/time`` and counts request weight per calendar minute as Binance
does, sending ``X-MBX-USED-WEIGHT-1M`` back; ``refuse_with`` makes it answer the next
requests with a 429, 418 or 503 instead (with ``Retry-After`` when given).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Binance spot's weight of GET /api/v3/time.
TIME_WEIGHT = 1


class FakeExchange:
    """The server's state: what it counted and how it answers."""

    def __init__(self, used_before: int = 0) -> None:
        self.requests = 0
        self.used_weight = used_before
        self.refuse_with: tuple[int, str | None] | None = None
        self.lock = threading.Lock()
        self.url = ""

    def answer(self) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        with self.lock:
            self.requests += 1
            if self.refuse_with is not None:
                status, retry_after = self.refuse_with
                headers = {} if retry_after is None else {"Retry-After": retry_after}
                if status in (418, 429):
                    return status, headers, {"code": -1003, "msg": "Too many requests."}
                return status, headers, None  # an outage: no JSON body
            self.used_weight += TIME_WEIGHT
            headers = {
                "X-MBX-USED-WEIGHT": str(self.used_weight),
                "X-MBX-USED-WEIGHT-1M": str(self.used_weight),
            }
            return 200, headers, {"serverTime": int(time.time() * 1000)}


@contextmanager
def fake_exchange(used_before: int = 0) -> Iterator[FakeExchange]:
    """A running fake exchange on 127.0.0.1 (a port of its own), stopped afterwards."""
    state = FakeExchange(used_before)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = state.answer()
            data = b"Service Unavailable" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the tests read the state, not the log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api/v3"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
