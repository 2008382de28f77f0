"""The HTTP endpoints under real servers: the built-in threaded server, the ASGI app under
uvicorn (alone and mounted in Starlette), the WSGI app under wsgiref (alone and mounted
beside Flask) and gunicorn."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from peak_resilience._health import (
    HealthCheckRegistry,
    check_circuit_breakers,
    check_critical_circuit_breakers,
)
from peak_resilience.http import (
    HealthEndpoints,
    asgi_app,
    health_token,
    start_health_server,
    wsgi_app,
)
from peak_resilience.metrics import metrics
from peak_resilience.resilience import CircuitBreaker, health_check
from peak_resilience.testing import ManualClock

TOKEN = "s3cret-token"
_names = itertools.count()


def unique(stem: str) -> str:
    return f"{stem}-{next(_names)}-{id(_names)}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    base: tuple[str, int], method: str, path: str, headers: dict[str, str] | None = None
) -> Reply:
    connection = http.client.HTTPConnection(*base, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_answering(base: tuple[str, int], path: str = "/livez") -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            request(base, "GET", path)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- the built-in server -------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    running = start_health_server(port=0)
    yield ("127.0.0.1", running.port)
    running.stop()


@pytest.fixture
def guarded_server() -> Iterator[tuple[str, int]]:
    running = start_health_server(port=0, token=TOKEN)
    yield ("127.0.0.1", running.port)
    running.stop()


@pytest.fixture
def isolated_checks() -> HealthCheckRegistry:
    return HealthCheckRegistry()


@pytest.fixture
def isolated_server(isolated_checks: HealthCheckRegistry) -> Iterator[tuple[str, int]]:
    """A server whose checks are only the test's own: statuses do not depend on breakers
    other tests left open."""
    from peak_resilience.http import HealthServer

    running = HealthServer("127.0.0.1", 0, HealthEndpoints(checks=isolated_checks))
    yield ("127.0.0.1", running.port)
    running.stop()


def test_start_health_server_reports_its_port_and_url_and_stops() -> None:
    running = start_health_server(port=0)
    assert running.port > 0
    assert running.url == f"http://127.0.0.1:{running.port}"
    assert request(("127.0.0.1", running.port), "GET", "/livez").status == 200
    running.stop()
    with pytest.raises(OSError):
        request(("127.0.0.1", running.port), "GET", "/livez")


def test_stop_also_ends_open_keep_alive_connections() -> None:
    running = start_health_server(port=0)
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    connection.request("GET", "/livez")
    assert connection.getresponse().read() == b'{"status":"alive"}'
    running.stop()
    with pytest.raises((OSError, http.client.HTTPException)):
        connection.request("GET", "/livez")
        connection.getresponse()
    connection.close()


def test_the_server_listens_on_ipv6_loopback_too() -> None:
    running = start_health_server(host="::1", port=0)
    try:
        assert running.url == f"http://[::1]:{running.port}"
        assert request(("::1", running.port), "GET", "/livez").status == 200
    finally:
        running.stop()


def test_health_is_200_healthy_when_every_check_passes(
    isolated_server: tuple[str, int], isolated_checks: HealthCheckRegistry
) -> None:
    isolated_checks.register("exchange", lambda: (True, "ok"))
    reply = request(isolated_server, "GET", "/health")
    assert (reply.status, reply.json()) == (200, {"status": "healthy"})
    assert reply.headers["content-type"] == "application/json"


def test_health_is_200_degraded_when_a_non_critical_check_fails(
    isolated_server: tuple[str, int], isolated_checks: HealthCheckRegistry
) -> None:
    isolated_checks.register("cache", lambda: (False, "cold"), critical=False)
    reply = request(isolated_server, "GET", "/health")
    assert (reply.status, reply.json()) == (200, {"status": "degraded"})


def test_health_is_503_unhealthy_when_a_critical_check_fails(
    isolated_server: tuple[str, int], isolated_checks: HealthCheckRegistry
) -> None:
    isolated_checks.register("exchange", lambda: (False, "down"))
    reply = request(isolated_server, "GET", "/health")
    assert (reply.status, reply.json()) == (503, {"status": "unhealthy"})
    assert request(isolated_server, "GET", "/readyz").status == 503
    assert request(isolated_server, "GET", "/livez").status == 200


@pytest.fixture
def breaker_checks(isolated_checks: HealthCheckRegistry) -> HealthCheckRegistry:
    """The built-in breaker checks, registered as on import, and nothing else."""
    isolated_checks.register("circuit_breakers", check_circuit_breakers, critical=False)
    isolated_checks.register(
        "critical_circuit_breakers", check_critical_circuit_breakers, critical=True
    )
    return isolated_checks


def test_one_open_breaker_degrades_health_but_keeps_it_200(
    breaker_checks: HealthCheckRegistry, isolated_server: tuple[str, int], clock: ManualClock
) -> None:
    server = isolated_server
    breaker = CircuitBreaker(failure_threshold=1, name=unique("exchange"), clock=clock)
    breaker.record_failure()
    reply = request(server, "GET", "/health")
    assert reply.status == 200
    assert reply.json() == {"status": "degraded"}
    assert request(server, "GET", "/readyz").status == 200


def test_an_open_breaker_marked_critical_makes_health_503(
    breaker_checks: HealthCheckRegistry, isolated_server: tuple[str, int], clock: ManualClock
) -> None:
    server = isolated_server
    name = unique("orders")
    breaker = CircuitBreaker(failure_threshold=1, name=name, clock=clock)
    health_check.mark_breaker_critical(name)
    try:
        breaker.record_failure()
        assert request(server, "GET", "/health").status == 503
        assert request(server, "GET", "/readyz").json() == {"status": "not ready"}
    finally:
        health_check.mark_breaker_critical(name, critical=False)


def test_detailed_lists_every_check_with_outcome_and_duration(
    isolated_server: tuple[str, int], isolated_checks: HealthCheckRegistry
) -> None:
    isolated_checks.register("database", lambda: (True, "Database is healthy"))
    isolated_checks.register("cache", lambda: False, critical=False)
    detailed = request(isolated_server, "GET", "/health/detailed").json()
    assert isinstance(detailed, dict)
    assert detailed["status"] == "degraded"
    database = detailed["checks"]["database"]
    assert database["healthy"] is True and database["message"] == "Database is healthy"
    assert set(database) == {"healthy", "message", "duration_ms", "critical"}
    assert detailed["checks"]["cache"]["healthy"] is False


def test_health_metrics_serves_the_summary_as_json(server: tuple[str, int]) -> None:
    operation = unique("json_op")
    metrics.record_operation_failure(operation, "TimeoutError")
    body = request(server, "GET", "/health/metrics").json()
    assert isinstance(body, dict)
    assert body["operations"][operation]["failures_by_type"] == {"TimeoutError": 1}
    assert body["events"][-1]["operation"] == operation


def test_health_prometheus_serves_the_exposition(
    server: tuple[str, int], clock: ManualClock
) -> None:
    name = unique("scraped")
    breaker = CircuitBreaker(failure_threshold=1, name=name, clock=clock)
    breaker.record_failure()
    reply = request(server, "GET", "/health/prometheus")
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {
        s.labels.get("name"): s.value
        for f in text_string_to_metric_families(reply.body.decode())
        if f.name == "peak_trade_circuit_breaker_state"
        for s in f.samples
    }
    assert values[name] == 2


def test_health_prometheus_exports_the_servers_own_checks(
    isolated_server: tuple[str, int], isolated_checks: HealthCheckRegistry
) -> None:
    isolated_checks.register("exchange_link", lambda: False)
    text = request(isolated_server, "GET", "/health/prometheus").body.decode()
    statuses = {
        s.labels["check"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "peak_trade_health_check_status"
        for s in f.samples
    }
    assert statuses == {"exchange_link": 0}


def test_health_prometheus_negotiates_openmetrics(server: tuple[str, int]) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    reply = request(server, "GET", "/health/prometheus", {"Accept": accept})
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.body.endswith(b"# EOF\n")


def test_an_unknown_path_is_404(server: tuple[str, int]) -> None:
    reply = request(server, "GET", "/admin")
    assert (reply.status, reply.json()) == (404, {"error": "not found"})


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_are_405_with_allow(server: tuple[str, int], method: str) -> None:
    reply = request(server, method, "/health")
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"


def test_head_answers_the_headers_of_get_without_a_body(server: tuple[str, int]) -> None:
    get = request(server, "GET", "/livez")
    head = request(server, "HEAD", "/livez")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == get.headers["content-length"]


def test_a_query_string_is_ignored(server: tuple[str, int]) -> None:
    assert request(server, "GET", "/livez?probe=1").status == 200


def test_a_failing_endpoint_answers_500_without_details(
    server: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> dict[str, object]:
        raise RuntimeError("secret internals at /srv/app.py line 42")

    monkeypatch.setattr(metrics, "get_summary", broken)
    reply = request(server, "GET", "/health/metrics")
    assert (reply.status, reply.json()) == (500, {"error": "internal error"})
    assert b"secret" not in reply.body and b"Traceback" not in reply.body


def test_a_raising_check_never_puts_its_exception_text_in_a_response(
    isolated_server: tuple[str, int], isolated_checks: HealthCheckRegistry
) -> None:
    def leaky() -> bool:
        raise ValueError("api_key=AKIA-SECRET")

    isolated_checks.register("exchange", leaky)
    reply = request(isolated_server, "GET", "/health/detailed")
    assert reply.status == 503
    assert b"AKIA" not in reply.body and b"Traceback" not in reply.body


# -- the bearer token ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health/detailed", "/health/metrics", "/health/prometheus"])
def test_the_token_guards_the_detailed_endpoints(
    guarded_server: tuple[str, int], path: str
) -> None:
    assert request(guarded_server, "GET", path).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert request(guarded_server, "GET", path, wrong).status == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert request(guarded_server, "GET", path, right).status == 200


@pytest.mark.parametrize("path", ["/health", "/livez", "/readyz"])
def test_the_probes_stay_open_with_a_token(guarded_server: tuple[str, int], path: str) -> None:
    assert request(guarded_server, "GET", path).status in (200, 503)


def test_an_unauthorized_reply_asks_for_a_bearer_token(guarded_server: tuple[str, int]) -> None:
    reply = request(guarded_server, "GET", "/health/metrics")
    assert reply.headers["www-authenticate"].startswith("Bearer")


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEAK_TRADE_HEALTH_TOKEN", "from-env")
    assert health_token() == "from-env"
    monkeypatch.delenv("PEAK_TRADE_HEALTH_TOKEN")
    assert health_token() is None


def test_start_health_server_refuses_a_bad_port() -> None:
    with pytest.raises(ValueError, match="port"):
        start_health_server(port=70000)


# -- ASGI under uvicorn ----------------------------------------------------------------------


def serve_asgi(app: Callable[..., object]) -> Iterator[tuple[str, int]]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="auto")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = running.servers[0].sockets[0].getsockname()[1]
    yield ("127.0.0.1", port)
    running.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def asgi_server() -> Iterator[tuple[str, int]]:
    yield from serve_asgi(asgi_app(token=TOKEN))


@pytest.fixture
def starlette_server() -> Iterator[tuple[str, int]]:
    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("trading app")

    app = Starlette(routes=[Route("/", home), Mount("/ops", app=asgi_app())])
    yield from serve_asgi(app)


def test_the_asgi_app_serves_the_endpoints_under_uvicorn(asgi_server: tuple[str, int]) -> None:
    assert request(asgi_server, "GET", "/health").status in (200, 503)
    assert request(asgi_server, "GET", "/livez").json() == {"status": "alive"}
    assert request(asgi_server, "GET", "/health/prometheus").status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reply = request(asgi_server, "GET", "/health/prometheus", auth)
    assert b"peak_trade_circuit_breaker_state" in reply.body
    assert request(asgi_server, "GET", "/nope").status == 404
    assert request(asgi_server, "POST", "/health").status == 405
    head = request(asgi_server, "HEAD", "/livez")
    assert (head.status, head.body) == (200, b"")


def test_the_asgi_app_mounted_in_starlette_answers_under_its_prefix(
    starlette_server: tuple[str, int],
) -> None:
    assert request(starlette_server, "GET", "/").body == b"trading app"
    assert request(starlette_server, "GET", "/ops/livez").json() == {"status": "alive"}
    detailed = request(starlette_server, "GET", "/ops/health/detailed").json()
    assert isinstance(detailed, dict) and "resilience" in detailed["checks"]


# -- WSGI under wsgiref and gunicorn -----------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def wsgiref_server() -> Iterator[tuple[str, int]]:
    running = make_server("127.0.0.1", 0, wsgi_app(token=TOKEN), handler_class=_QuietHandler)
    thread = threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield ("127.0.0.1", running.server_port)
    running.shutdown()
    running.server_close()
    thread.join(timeout=30)


def test_the_wsgi_app_serves_the_endpoints_under_wsgiref(
    wsgiref_server: tuple[str, int],
) -> None:
    assert request(wsgiref_server, "GET", "/readyz").status in (200, 503)
    assert request(wsgiref_server, "GET", "/health/metrics").status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert "operations" in request(wsgiref_server, "GET", "/health/metrics", auth).json()  # type: ignore[operator]
    assert request(wsgiref_server, "DELETE", "/health").status == 405
    assert request(wsgiref_server, "GET", "/missing").status == 404


@pytest.fixture
def flask_server() -> Iterator[tuple[str, int]]:
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = Flask("trading")
    app.add_url_rule("/", "home", lambda: "trading app")
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/ops": wsgi_app()})  # type: ignore[method-assign]
    running = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield ("127.0.0.1", running.server_port)
    running.shutdown()
    running.server_close()
    thread.join(timeout=30)


def test_the_wsgi_app_mounted_beside_flask_answers_under_its_prefix(
    flask_server: tuple[str, int],
) -> None:
    assert request(flask_server, "GET", "/").body == b"trading app"
    assert request(flask_server, "GET", "/ops/livez").json() == {"status": "alive"}
    assert request(flask_server, "GET", "/ops/health").status in (200, 503)
    assert request(flask_server, "GET", "/ops/nope").status == 404


@pytest.fixture
def gunicorn_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {**os.environ, "PEAK_TRADE_HEALTH_TOKEN": TOKEN}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--log-level",
            "warning",
            "peak_resilience.http:wsgi_app()",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = ("127.0.0.1", port)
    try:
        wait_until_answering(base)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def test_the_wsgi_app_serves_the_endpoints_under_gunicorn_with_the_env_token(
    gunicorn_server: tuple[str, int],
) -> None:
    # A fresh process: only the built-in checks, no breaker, so "healthy".
    assert request(gunicorn_server, "GET", "/health").json() == {"status": "healthy"}
    assert request(gunicorn_server, "GET", "/health/detailed").status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    detailed = request(gunicorn_server, "GET", "/health/detailed", auth).json()
    assert isinstance(detailed, dict)
    assert set(detailed["checks"]) == {
        "metrics",
        "resilience",
        "circuit_breakers",
        "critical_circuit_breakers",
    }
    head = request(gunicorn_server, "HEAD", "/health")
    assert (head.status, head.body) == (200, b"")
