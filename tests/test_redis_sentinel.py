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


def _certificates(where: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (ca, certificate, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca, ca_key = where / "ca.crt", where / "ca.key"
    cert, key, request = where / "server.crt", where / "server.key", where / "server.csr"
    san = where / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-subj", "/CN=peak-resilience test CA", "-days", "1"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request,
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", san],
    ):  # fmt: skip
        subprocess.run([openssl, *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


def test_a_rediss_sentinel_url_speaks_tls_to_the_sentinels_and_the_master(
    tmp_path: Path,
) -> None:
    ca, cert, key = _certificates(tmp_path)
    tls = [
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
    ]  # fmt: skip
    master_tls = free_port()
    master = RedisServer(tmp_path / "master", "--tls-port", str(master_tls), *tls)
    master.workdir.mkdir()
    master.start()
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n"
        "tls-auth-clients no\ntls-replication yes\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master_tls} 1\n"
    )
    binary = shutil.which("redis-server")
    assert binary is not None
    sentinel = subprocess.Popen(
        [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        tls_client = redis.Redis(
            host="127.0.0.1", port=sentinel_port, ssl=True, ssl_ca_certs=str(ca), socket_timeout=5
        )

        def answers() -> bool:
            try:
                return bool(tls_client.ping())
            except redis.ConnectionError:
                return False

        wait_until("the sentinel up, over TLS", answers)
        url = f"rediss+sentinel://127.0.0.1:{sentinel_port}/{MASTER}/0?ssl_ca_certs={ca}"
        limiter = RateLimiter(3, 3600, name="tls", backend="redis", redis_url=url)
        assert [limiter.acquire() for _ in range(2)] == [True, True]
        assert asyncio.run(limiter.acquire_async(timeout=0))
        assert not limiter.acquire()
        # Over TLS indeed: the master's count, read on its TLS port.
        on_master = redis.Redis(
            host="127.0.0.1", port=master_tls, ssl=True, ssl_ca_certs=str(ca), socket_timeout=5
        )
        assert int(on_master.hget("peak-resilience:{limiter:tls}:default", "allowed") or 0) == 3
        # The sentinel's only port is a TLS one: a plain URL cannot reach it.
        plain = f"redis+sentinel://127.0.0.1:{sentinel_port}/{MASTER}/0"
        refused = RateLimiter(
            3, 3600, name="tls", backend="redis", redis_url=plain, on_backend_error="fail_closed"
        )
        assert not refused.acquire()
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)
        master.stop()


def test_a_sentinel_url_names_an_option_it_does_not_take() -> None:
    url = f"rediss+sentinel://127.0.0.1:{free_port()}/{MASTER}?ssl_ca_cert=/etc/ca.pem"
    with pytest.raises(ValueError, match="'ssl_ca_cert'"):
        RateLimiter(3, 3600, name="typo", backend="redis", redis_url=url).acquire()
    plain = f"redis+sentinel://127.0.0.1:{free_port()}/{MASTER}?ssl_ca_certs=/etc/ca.pem"
    with pytest.raises(ValueError, match="must be rediss"):
        RateLimiter(3, 3600, name="typo", backend="redis", redis_url=plain).acquire()
