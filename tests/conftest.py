"""Shared fixtures: a manual clock so that no test sleeps to see time pass."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer

from peak_resilience._native import SHARED_SUPPORTED
from peak_resilience.testing import ManualClock, fresh_resilience


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On a build without the shared backend (Windows, scripts/test-portable), its tests
    are skipped: every test of it says "shared" in its file, name or parameters, or is
    marked ``shared_backend``. Tests marked ``without_shared_backend`` run only there."""
    have = pytest.mark.skip(reason="this build has the shared backend")
    lack = pytest.mark.skip(reason="this build has no shared backend (backend='shared')")
    for item in items:
        if item.get_closest_marker("without_shared_backend"):
            if SHARED_SUPPORTED:
                item.add_marker(have)
        elif not SHARED_SUPPORTED and (
            "shared" in item.nodeid.lower() or item.get_closest_marker("shared_backend")
        ):
            item.add_marker(lack)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def fresh(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ManualClock]:
    """An unconfigured process with an empty module registry on the manual clock, no
    PEAK_TRADE_* variables and no ./config.toml (the working directory is a temp dir)."""
    for variable in list(os.environ):
        if variable.startswith("PEAK_TRADE_"):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    with fresh_resilience(clock):
        yield clock


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Writes a TOML file (dedented) into the temp dir and returns its path."""

    def write(text: str, name: str = "resilience.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session, on a free loopback port."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session server's URL, emptied before each test (after the successes an
    earlier test's breakers left to be carried are sent: they must not land in this one)."""
    import redis

    from peak_resilience._backends.redis import carried

    carried.send_all()
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and start again."""
    from peak_resilience._backends.redis import carried

    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        # The successes its breakers left to be carried, sent while it runs: else the
        # flusher would find it gone during a later test (an outage counted there).
        carried.send_all()
        server.stop()


# Issue 8 (rate limiting): one test, three backends -----------------------------------


def _limiter_factory(
    request: pytest.FixtureRequest, tmp_path: Path, where: str
) -> Callable[..., Any]:
    from peak_resilience import RateLimiter

    backend: dict[str, Any] = {"backend": where}
    if where == "shared":
        backend["shared_dir"] = str(tmp_path / "shm")
    elif where == "redis":
        backend["redis_url"] = request.getfixturevalue("redis_url")

    def make(*args: Any, name: str = "exchange", **kwargs: Any) -> RateLimiter:
        return RateLimiter(*args, name=name, **backend, **kwargs)

    return make


@pytest.fixture(params=["memory", "shared", "redis"])
def make_limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    """Builds RateLimiters on the parametrised backend, each of the budget ``name``
    ("exchange" unless given): a second one of that name reaches the same budget on the
    shared and redis backends."""
    return _limiter_factory(request, tmp_path, request.param)


@pytest.fixture(params=["shared", "redis"])
def make_shared_limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    """``make_limiter`` on the backends that share a budget between processes."""
    return _limiter_factory(request, tmp_path, request.param)
