"""backend="redis" through Redis Sentinel: one master, one replica, one sentinel, and a
forced failover; budgets stay exact and breakers shared across it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_server import RedisServer, free_port

from peak_resilience import CircuitBreaker, CircuitState, RateLimiter
from peak_resilience._config.errors import ConfigError
from peak_resilience.config import configure
from peak_resilience.resilience_helpers import create_module_rate_limiter
from peak_resilience.testing import ManualClock

MASTER = "exchange-budget"
WAIT = 30.0  # seconds any step of the setup or the failover may take, at most


def wait_until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT} s")
        time.sleep(0.05)


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)


def role(port: int) -> str:
    info: dict[str, Any] = client(port).info("replication")
    return str(info["role"])


class Sentinel:
    """``redis-server sentinel.conf --sentinel`` on a free port, watching ``master``."""

    def __init__(self, workdir: Path, master_port: int) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed: run `bash scripts/packages`"
        self.port = free_port()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 2000\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
        )
        self.process = subprocess.Popen(
            [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def ask(self, *command: str) -> Any:
        return client(self.port).execute_command("SENTINEL", *command)  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    master = RedisServer(tmp_path / "master")
    master.workdir.mkdir()
    master.start()
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    replica.workdir.mkdir()
    replica.start()
    (tmp_path / "sentinel").mkdir()
    sentinel = Sentinel(tmp_path / "sentinel", master.port)
    try:
        wait_until(
            "the replica in sync",
            lambda: client(replica.port).info("replication").get("master_link_status") == "up",
        )
        wait_until("the sentinel up", lambda: _answers(sentinel))
        wait_until(
            "the sentinel knowing the replica",
            lambda: any(
                "s_down" not in r["flags"] and r.get("master-link-status") == "ok"
                for r in sentinel.ask("REPLICAS", MASTER)
            ),
        )
        yield master, replica, sentinel
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()


def _answers(sentinel: Sentinel) -> bool:
    try:
        return bool(client(sentinel.port).ping())
    except redis.ConnectionError:
        return False


def sentinel_url(sentinel: Sentinel) -> str:
    return f"redis+sentinel://127.0.0.1:{sentinel.port}/{MASTER}/0"


def on(sentinel: Sentinel) -> dict[str, Any]:
    return {
        "backend": "redis",
        "redis_url": sentinel_url(sentinel),
        "on_backend_error": "fail_closed",  # a call Redis did not decide is refused
    }


def test_budgets_and_breakers_follow_a_failover(
    watched: tuple[RedisServer, RedisServer, Sentinel],
) -> None:
    master, replica, sentinel = watched
    on_sentinel = on(sentinel)
    limiter = RateLimiter(6, 3600, name="venue", **on_sentinel)
    breaker = CircuitBreaker(2, 3600, "venue", **on_sentinel)
    # Async calls too, on redis.asyncio: one loop throughout, its one connection to the
    # old master kept open across the failover.
    loop = asyncio.new_event_loop()
    threads_before = {t.name for t in threading.enumerate()}
    assert [limiter.acquire() for _ in range(2)] == [True, True]
    assert loop.run_until_complete(limiter.acquire_async(timeout=0))
    breaker.record_failure()
    # Every write on the replica before the failover, so that none is lost by it.
    assert client(master.port).execute_command("WAIT", 1, 5000) == 1  # type: ignore[no-untyped-call]

    sentinel.ask("FAILOVER", MASTER)
    wait_until(
        "the sentinel naming the replica master",
        lambda: int(sentinel.ask("GET-MASTER-ADDR-BY-NAME", MASTER)[1]) == replica.port,
    )
    wait_until("the old master demoted", lambda: role(master.port) == "slave")
    wait_until("the new master promoted", lambda: role(replica.port) == "master")

    # The same objects, their connections still open to the old master: 3 tokens left.
    try:
        assert loop.run_until_complete(limiter.acquire_async(timeout=0))
    finally:
        loop.close()
    assert [limiter.acquire() for _ in range(3)] == [True, True, False]
    started = {t.name for t in threading.enumerate()} - threads_before
    assert not [name for name in started if name.startswith("peak-resilience-redis")]
    another_host = CircuitBreaker(2, 3600, "venue", **on_sentinel)
    assert another_host.state is CircuitState.CLOSED
    breaker.record_failure()  # the second failure in a row, across the failover
    assert another_host.state is CircuitState.OPEN
    assert RateLimiter(6, 3600, name="venue", **on_sentinel).get_stats()["allowed"] == 6


def test_config_names_the_sentinels_and_the_master(
    fresh: ManualClock,
    write_config: Callable[..., Path],
    watched: tuple[RedisServer, RedisServer, Sentinel],
) -> None:
    _, _, sentinel = watched
    configure(
        write_config(
            "[resilience.live]\n"
            'rate_limit_backend = "redis"\n'
            f'redis_sentinels = ["127.0.0.1:{sentinel.port}"]\n'
            f'redis_sentinel_master = "{MASTER}"\n'
            "rate_limit_requests = 2\n"
            "rate_limit_window = 3600\n"
        )
    )
    configured = create_module_rate_limiter("live", "orders")
    assert configured.backend == "redis"
    assert configured.acquire()
    # The same budget as a limiter given the Sentinel URL directly.
    direct = RateLimiter(
        2,
        3600,
        name=configured.name,
        backend="redis",
        redis_url=sentinel_url(sentinel),
        clock=fresh,
    )
    assert [direct.acquire(), configured.acquire()] == [True, False]


def test_sentinels_without_a_master_name_are_refused(
    write_config: Callable[..., Path],
) -> None:
    with pytest.raises(ConfigError, match="redis_sentinels needs redis_sentinel_master"):
        configure(
            write_config(
                "[resilience.live]\n"
                'rate_limit_backend = "redis"\n'
                'redis_sentinels = ["127.0.0.1:26379"]\n'
            )
        )
