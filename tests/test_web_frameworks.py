"""The README's FastAPI and Flask apps, as written, under real servers (uvicorn and
gunicorn) against a stand-in exchange: refusals answer 429/503 with Retry-After and a
small JSON body, never a 500 or a traceback; the health endpoints answer beside.

Also ``install`` on apps built here, in-process, for what the README apps do not show.
"""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import free_port

from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.testing import fresh_resilience

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def readme_app(framework: str) -> str:
    (block,) = [b for b in BLOCKS if f"from {framework} import" in b and "install(app)" in b]
    return block


class Exchange(http.server.BaseHTTPRequestHandler):
    """Quotes tickers; its order endpoint is down (503)."""

    def do_GET(self) -> None:
        self._answer(200, b"42000.5")

    def do_POST(self) -> None:
        self._answer(503, b"order gateway down")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def exchange() -> Iterator[str]:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Exchange) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> object:
        return json.loads(self.body)


def ask(port: int, method: str, path: str) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path)
        reply = connection.getresponse()
        headers = {k.lower(): v for k, v in reply.getheaders()}
        return Answer(reply.status, headers, reply.read())
    finally:
        connection.close()


def serve(command: list[str], app: str, tmp_path: Path, exchange: str) -> subprocess.Popen[str]:
    (tmp_path / "app.py").write_text(app)
    (tmp_path / "config.toml").write_text((ROOT / "config.toml").read_text())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PEAK_TRADE_")},
        "EXCHANGE_URL": exchange,
        "PEAK_TRADE_MARKET_DATA__RATE_LIMIT_REQUESTS": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate(timeout=30)
    return stderr


def wait_for_health(port: int, process: subprocess.Popen[str]) -> Answer:
    deadline = time.monotonic() + 60
    while True:
        try:
            return ask(port, "GET", "/health")
        except OSError:
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.1)


SERVERS = {
    "fastapi": ["uvicorn", "app:app", "--host", "127.0.0.1", "--log-level", "warning", "--port"],
    "flask": ["gunicorn", "app:app", "--workers", "1", "--log-level", "warning", "--bind"],
}


@pytest.mark.parametrize("framework", ["fastapi", "flask"])
def test_the_readme_app_answers_429_and_503_with_retry_after_under_a_real_server(
    framework: str, tmp_path: Path, exchange: str
) -> None:
    port = free_port()
    where = str(port) if framework == "fastapi" else f"127.0.0.1:{port}"
    process = serve([*SERVERS[framework], where], readme_app(framework), tmp_path, exchange)
    try:
        health = wait_for_health(port, process)
        assert (health.status, health.json()) == (200, {"status": "healthy"})

        tickers = [ask(port, "GET", "/ticker/BTC-EUR") for _ in range(3)]
        assert [t.status for t in tickers] == [200, 200, 429]
        assert tickers[0].json() == {"symbol": "BTC-EUR", "last": 42000.5}
        limited = tickers[2]
        assert limited.headers["retry-after"] == "30"  # 2 per 60 s: the next in 30 s
        assert limited.headers["content-type"] == "application/json"
        assert limited.json() == {
            "error": "rate limit exceeded",
            "retry_after": 30,
            "limiter": "market_data",
            "endpoint": None,
        }

        orders = [ask(port, "POST", "/orders/BTC-EUR") for _ in range(3)]
        assert [o.status for o in orders] == [500, 500, 503]  # the exchange's failures, then
        opened = orders[2]
        assert opened.headers["retry-after"] == "120"  # [resilience.live] timeout
        assert opened.json() == {
            "error": "circuit open",
            "retry_after": 120,
            "breaker": "live.submit_order",
        }
        readiness = ask(port, "GET", "/readyz")
        assert readiness.status == 200, "an open breaker degrades, it does not unready"
    finally:
        stderr = stop(process)
    # The exchange's own failures are the app's errors to log; a refusal never is.
    assert "RateLimitExceeded" not in stderr
    assert "CircuitBreakerError" not in stderr


def asgi_get(app: object, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET through an ASGI app, as a server would send it."""
    import asyncio

    sent: list[dict[str, object]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[operator]
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}  # type: ignore[attr-defined]
    return int(start["status"]), headers, body  # type: ignore[call-overload]


def test_a_refusal_is_logged_at_debug_with_the_path(caplog: pytest.LogCaptureFixture) -> None:
    from starlette.applications import Starlette

    from peak_resilience.integrations.starlette import install

    app = Starlette()

    async def refuse(request: object) -> None:
        raise RateLimitExceeded("orders", "create_order", 0.2)

    app.add_route("/orders", refuse)
    install(app, health=False)
    with caplog.at_level(logging.DEBUG, logger="peak_resilience.http"):
        status, headers, body = asgi_get(app, "/orders")
    assert status == 429
    assert headers["retry-after"] == "1"  # 0.2 s rounded up
    assert json.loads(body)["endpoint"] == "create_order"
    assert asgi_get(app, "/health")[0] == 404  # health=False: not mounted
    (record,) = [r for r in caplog.records if r.name == "peak_resilience.http"]
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == (
        "/orders answered 429: rate limit of 'orders' (create_order) exceeded: retry in 0.200s"
    )


def test_flask_serves_the_health_endpoints_under_a_prefix() -> None:
    import flask

    from peak_resilience.integrations.flask import install

    app = flask.Flask("trading")

    @app.get("/orders")
    def orders() -> str:
        raise CircuitBreakerError("exchange", 2.5)

    install(app, prefix="/ops")
    with fresh_resilience():
        client = app.test_client()
        assert client.get("/ops/livez").get_json() == {"status": "alive"}
        assert client.get("/health").status_code == 404
        refused = client.get("/orders")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "3"
    assert refused.get_json() == {"error": "circuit open", "retry_after": 3, "breaker": "exchange"}


def test_a_prefix_that_is_not_a_path_is_refused_naming_it() -> None:
    import flask

    from peak_resilience.integrations.flask import install

    with pytest.raises(ValueError, match="prefix must be '' or start with '/', got 'ops'"):
        install(flask.Flask("trading"), prefix="ops")


def test_starlette_serves_the_health_endpoints_under_a_prefix() -> None:
    from starlette.applications import Starlette

    from peak_resilience.integrations.starlette import install

    app = Starlette()
    install(app, prefix="/ops/")  # a trailing slash is the same prefix
    status, headers, body = asgi_get(app, "/ops/livez")
    assert (status, json.loads(body)) == (200, {"status": "alive"})
    assert headers["content-length"] == str(len(body))
    assert asgi_get(app, "/livez")[0] == 404
