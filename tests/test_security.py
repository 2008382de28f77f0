"""Security: the health server listens on loopback unless told otherwise, the bearer token
is compared in constant time, and no secret (the health token, a password in redis_url)
shows in a log line, a metric, an endpoint's answer or ``config show``."""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peak_resilience import CircuitBreaker, RateLimiter
from peak_resilience.__main__ import main
from peak_resilience._config.secrets import redact
from peak_resilience._health import HealthCheckRegistry
from peak_resilience._http import endpoints as health_endpoints
from peak_resilience._http import server as health_server
from peak_resilience.config import ConfigError, configure, load_config
from peak_resilience.http import HealthEndpoints, start_health_server
from peak_resilience.metrics import metrics
from peak_resilience.resilience_helpers import with_resilience

TOKEN = "tok-SECRET-1f2e3d"
PASSWORD = "pw-SECRET-9a8b7c"
REDIS_URL = f"redis://trader:{PASSWORD}@127.0.0.1:6379/0"
SECRETS = (TOKEN, PASSWORD)


def request(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        head = "".join(f"{k}: {v}\n" for k, v in response.getheaders()).encode()
        return response.status, head + response.read()
    finally:
        connection.close()


# -- where the server listens --------------------------------------------------------------


def test_the_health_server_listens_on_loopback_by_default() -> None:
    running = start_health_server(port=0)
    try:
        assert running.host == "127.0.0.1"
        assert running._server.socket.getsockname()[0] == "127.0.0.1"
    finally:
        running.stop()


class NotListening:
    """Stands in for HealthServer so that no test opens a port beyond loopback."""

    def __init__(self, host: str, port: int, endpoints: HealthEndpoints, **_: Any) -> None:
        self.url = f"http://{host}:{port}"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_listening_beyond_loopback_without_a_token_logs_a_warning(
    host: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh: object
) -> None:
    monkeypatch.setattr(health_server, "HealthServer", NotListening)

    with caplog.at_level(logging.WARNING, logger="peak_resilience.http"):
        start_health_server(host, 9108)

    assert any(
        r.levelno == logging.WARNING and "without a token" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    ("host", "token"), [("0.0.0.0", TOKEN), ("127.0.0.1", None), ("::1", None)]
)
def test_no_warning_with_a_token_or_on_loopback(
    host: str,
    token: str | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh: object,
) -> None:
    monkeypatch.setattr(health_server, "HealthServer", NotListening)

    with caplog.at_level(logging.WARNING, logger="peak_resilience.http"):
        start_health_server(host, 9108, token=token)

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- the token -----------------------------------------------------------------------------


@pytest.fixture
def guarded() -> Iterator[int]:
    running = start_health_server("127.0.0.1", 0, token=TOKEN)
    try:
        yield running.port
    finally:
        running.stop()


@pytest.mark.parametrize(
    "token",
    [None, "", "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), " " + TOKEN[1:], "\u00e9" * 8],
    ids=["missing", "empty", "wrong", "prefix", "longer", "case", "shifted", "non-ascii"],
)
def test_a_missing_or_wrong_token_is_401(guarded: int, token: str | None) -> None:
    status, body = request(guarded, "/health/detailed", token)

    assert status == 401
    assert TOKEN.encode() not in body


def test_the_right_token_is_200(guarded: int) -> None:
    assert request(guarded, "/health/detailed", TOKEN)[0] in (200, 503)
    assert request(guarded, "/health/metrics", TOKEN)[0] == 200


def test_a_token_in_another_scheme_is_401(guarded: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", guarded, timeout=10)
    connection.request("GET", "/health/metrics", headers={"Authorization": f"Basic {TOKEN}"})

    assert connection.getresponse().status == 401
    connection.close()


def test_the_token_is_compared_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(health_endpoints.hmac, "compare_digest", spy)
    endpoints = HealthEndpoints(TOKEN, checks=HealthCheckRegistry())

    wrong = endpoints.handle("GET", "/health/metrics", {"authorization": "Bearer guess"})
    right = endpoints.handle("GET", "/health/metrics", {"authorization": f"Bearer {TOKEN}"})

    assert (wrong.status, right.status) == (401, 200)
    assert calls == [(b"guess", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


# -- no secret anywhere --------------------------------------------------------------------


def test_no_secret_appears_in_logs_metrics_responses_or_config_show(
    fresh: object,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[resilience]\nhealth_token = "{TOKEN}"\nredis_url = "{REDIS_URL}"\n'
        "circuit_breaker_threshold = 2\n[resilience.live]\nrate_limit_requests = 3\n"
    )
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        configure(path, environ={})

        @with_resilience("live", "orders")
        def place(fail: bool) -> str:
            if fail:
                raise ConnectionError(f"cannot reach {REDIS_URL}")  # a careless error text
            return "ok"

        for fail in (False, True, True, False, False, False):
            try:
                seen.append(place(fail))
            except Exception as err:
                seen.append(type(err).__name__)

        running = start_health_server("127.0.0.1", 0)  # the token from the config
        try:
            for endpoint in (
                "/health",
                "/livez",
                "/readyz",
                "/health/detailed",
                "/health/metrics",
                "/health/prometheus",
            ):
                for token in (None, TOKEN, "wrong"):
                    status, body = request(running.port, endpoint, token)
                    seen.append(f"{endpoint} {status} {body.decode('latin-1')}")
        finally:
            running.stop()
        seen.append(json.dumps(metrics.get_summary(), default=str))
        seen.append(metrics.exposition(None)[0].decode())
        for argv in (
            ["config", "show", str(path)],
            ["config", "show", str(path), "--json"],
            ["config", "validate", str(path)],
        ):
            assert main(argv) == 0
            out = capsys.readouterr()
            seen += [out.out, out.err]
    seen += [caplog.text] + [r.getMessage() for r in caplog.records]
    seen += [repr(load_config(path, environ={}))]

    # The run did what it should: the token guarded, the breaker opened.
    assert any(s.startswith("/health/metrics 401") for s in seen)
    assert any(s.startswith("/health/metrics 200") for s in seen)
    assert "CircuitBreakerError" in seen or "RateLimitExceeded" in seen
    everything = "\n".join(seen)
    for secret in SECRETS:
        # The careless ConnectionError text is the application's own: it reaches the log
        # (with the traceback of the failed call) only if something logs the exception.
        assert secret not in everything, f"{secret} leaked"


@pytest.mark.parametrize(
    "document",
    [
        f"health_token = {12345678}",
        "health_token = ['tok-SECRET-1f2e3d']",
        "redis_url = ['pw-SECRET-9a8b7c']",
        "redis_url = 42",
    ],
)
def test_a_mistyped_secret_is_refused_without_echoing_it(document: str, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[resilience]\n{document}\n")

    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})

    # (The message names the file: its temp path may hold any digits, e.g. pytest-242.)
    message = str(refused.value).replace(str(path), "<path>")
    assert "must be a string" in message
    assert "SECRET" not in message and "12345678" not in message and "42" not in message


@settings(max_examples=300, deadline=None)
@given(
    user=st.text(alphabet=st.characters(blacklist_characters="@:/?#"), max_size=8),
    password=st.text(alphabet=st.characters(blacklist_characters="@/?#&"), min_size=4, max_size=16),
    host=st.sampled_from(["127.0.0.1", "[::1]", "h", "h:6379", "h:notaport", ""]),
    tail=st.sampled_from(["", "/0", "/0?db=1", "?ssl=true"]),
    scheme=st.sampled_from(["redis", "rediss", "unix"]),
)
def test_config_show_masks_any_redis_password(
    user: str, password: str, host: str, tail: str, scheme: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}{tail}"
    query_url = f"unix:///run/redis.sock?db=0&password={password}"

    shown, shown_query = redact("redis_url", url), redact("redis_url", query_url)

    assert shown == f"{scheme}://{user}:***@{host}{tail}"
    assert shown_query == "unix:///run/redis.sock?db=0&password=***"


def closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("policy", ["local", "fail_open", "fail_closed"])
def test_an_unreachable_redis_logs_and_reports_without_its_password(
    policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://trader:{PASSWORD}@127.0.0.1:{closed_loopback_port()}/0"
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        limiter = RateLimiter(
            3, 60, name=f"secret-{policy}", backend="redis", redis_url=url, on_backend_error=policy
        )
        breaker = CircuitBreaker(
            3, 60, name=f"secret-{policy}", backend="redis", redis_url=url, on_backend_error=policy
        )
        for call in (limiter.acquire, breaker.allow, breaker.call(lambda: "ok")):
            try:
                seen.append(repr(call()))
            except Exception as err:
                seen.append(f"{type(err).__name__}: {err} {err!r}")
        seen += [repr(limiter), repr(breaker), json.dumps(limiter.get_stats(), default=str)]
        seen.append(json.dumps(metrics.get_summary(), default=str))
        seen.append(metrics.exposition(None)[0].decode())
    seen += [caplog.text]

    assert "unreachable" in caplog.text  # the outage was logged, with the URL masked
    assert PASSWORD not in "\n".join(seen)


def test_a_malformed_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError) as refused:
        RateLimiter(
            3,
            60,
            name="bad-url",
            backend="redis",
            redis_url=f"redis://trader:{PASSWORD}@127.0.0.1:notaport/0",
        )

    assert "trader:***@" in str(refused.value)
    assert PASSWORD not in str(refused.value)
