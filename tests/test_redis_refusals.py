"""Every way Redis refuses a call goes through on_backend_error; a call that ran keeps its
result through a failover."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress

import pytest
import redis
from redis_server import RedisServer, free_port
from refusing_redis import refusing_redis

from peak_resilience import CircuitBreaker, RateLimiter
from peak_resilience._backends.choice import OnBackendError, backend_error_counts
from peak_resilience._guard import guard

NAME = "venue"

#: What three acquires on a budget of 2 give while Redis refuses every call.
POLICIES = [
    ("local", [True, True, False]),  # the in-process bucket of the same settings
    ("fail_open", [True, True, True]),
    ("fail_closed", [False, False, False]),
]

#: A refusal made on a real redis-server: yields the URL to use while it lasts.
Refusal = Callable[[RedisServer, redis.Redis], AbstractContextManager[str]]


@contextmanager
def replica_of_a_gone_master(server: RedisServer, admin: redis.Redis) -> Iterator[str]:
    """READONLY: a failover demoted this node (its new master is unreachable, too)."""
    admin.replicaof("127.0.0.1", free_port())
    yield server.url


@contextmanager
def replica_cut_from_its_master(server: RedisServer, admin: redis.Redis) -> Iterator[str]:
    """MASTERDOWN: a replica that must not serve stale data has lost its master."""
    admin.config_set("replica-serve-stale-data", "no")
    admin.replicaof("127.0.0.1", free_port())
    yield server.url


@contextmanager
def out_of_memory(server: RedisServer, admin: redis.Redis) -> Iterator[str]:
    """OOM: maxmemory reached with no eviction."""
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    yield server.url


@contextmanager
def busy_with_a_script(server: RedisServer, admin: redis.Redis) -> Iterator[str]:
    """BUSY: another client's script has run past busy-reply-threshold."""
    admin.config_set("busy-reply-threshold", 10)
    looping = redis.Redis.from_url(server.url, socket_timeout=30)
    runner = threading.Thread(
        target=lambda: _ignore_errors(lambda: looping.eval("while true do end", 0))
    )
    runner.start()
    probe = redis.Redis.from_url(server.url, socket_timeout=5)
    for _ in range(500):  # bounded: the script is busy within a few ms
        try:
            probe.ping()
        except redis.ResponseError as exc:
            if str(exc).startswith("BUSY"):
                break
        threading.Event().wait(0.01)
    else:
        raise AssertionError("the looping script never made Redis busy")
    try:
        yield server.url
    finally:
        probe.script_kill()
        runner.join(timeout=10)


def _ignore_errors(call: Callable[[], object]) -> None:
    with suppress(redis.RedisError):  # the script killed: what the test expects
        call()


@contextmanager
def user_without_scripts(server: RedisServer, admin: redis.Redis) -> Iterator[str]:
    """NOPERM: an ACL user allowed everything but running scripts."""
    admin.acl_setuser(
        "trader",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        commands=["+@all", "-evalsha", "-eval", "-script"],
    )
    yield f"redis://trader:secret@127.0.0.1:{server.port}/0"


@contextmanager
def budget_key_of_another_type(server: RedisServer, admin: redis.Redis) -> Iterator[str]:
    """A script error: the budget's key holds a string (WRONGTYPE inside the script)."""
    admin.set(f"peak-resilience:{{limiter:{NAME}}}:default", "not a hash")
    yield server.url


REAL = [
    pytest.param(replica_of_a_gone_master, "ReadOnlyError", id="READONLY"),
    pytest.param(replica_cut_from_its_master, "MasterDownError", id="MASTERDOWN"),
    pytest.param(out_of_memory, "OutOfMemoryError", id="OOM"),
    pytest.param(busy_with_a_script, "BUSY", id="BUSY"),
    pytest.param(user_without_scripts, "NoPermissionError", id="NOPERM"),
    pytest.param(budget_key_of_another_type, "WRONGTYPE", id="script-error"),
]


def answering(error: str) -> Refusal:
    """A refusal a real server cannot be brought to give on demand: a server answering
    every command with ``error``."""

    @contextmanager
    def refusal(server: RedisServer, admin: redis.Redis) -> Iterator[str]:
        with refusing_redis(error) as url:
            yield url

    return refusal


FAKED = [
    pytest.param(
        answering("LOADING Redis is loading the dataset in memory"),
        "BusyLoadingError",
        id="LOADING",
    ),
    pytest.param(
        answering("CLUSTERDOWN The cluster is down"), "ClusterDownError", id="CLUSTERDOWN"
    ),
    pytest.param(
        answering("TRYAGAIN Multiple keys request during rehashing of slot"),
        "TryAgainError",
        id="TRYAGAIN",
    ),
]


def three_acquires(url: str, policy: OnBackendError) -> list[bool]:
    limiter = RateLimiter(
        2, 3600, name=NAME, backend="redis", redis_url=url, on_backend_error=policy
    )
    limiter.store.link.retry_interval = 0.0  # ask Redis on every call
    return [limiter.acquire() for _ in range(3)]


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "peak_resilience.redis"]


def three_async_calls(url: str, policy: OnBackendError) -> list[bool]:
    limiter = RateLimiter(
        2, 3600, name=NAME, backend="redis", redis_url=url, on_backend_error=policy
    )
    limiter.store.link.retry_interval = 0.0  # ask Redis on every call

    async def send() -> bool:
        return True

    guarded = guard(send, limiter=limiter, fallback=False)

    async def calls() -> list[bool]:
        return [await guarded() for _ in range(3)]

    return asyncio.run(calls())


@pytest.mark.parametrize("calls", [three_acquires, three_async_calls], ids=["sync", "async"])
@pytest.mark.parametrize(("policy", "admitted"), POLICIES)
@pytest.mark.parametrize(("refusal", "shown"), REAL + FAKED)
def test_a_refusing_redis_gives_what_on_backend_error_says(
    own_redis: RedisServer,
    refusal: Refusal,
    shown: str,
    policy: OnBackendError,
    admitted: list[bool],
    calls: Callable[[str, OnBackendError], list[bool]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Async calls on redis.asyncio as sync ones: same policy, same count, one warning.
    admin = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    before = backend_error_counts()["redis"]
    with refusal(own_redis, admin) as url, caplog.at_level(logging.WARNING):
        assert calls(url, policy) == admitted
    assert backend_error_counts()["redis"] - before == 3
    (warning,) = outage_warnings(caplog)  # once per outage, not once per call
    assert "refused the call" in warning and shown in warning
    assert f"on_backend_error={policy!r}" in warning


class InsufficientFunds(Exception):
    pass


@pytest.mark.parametrize("policy", ["local", "fail_open", "fail_closed"])
def test_an_order_filled_while_redis_fails_over_returns_its_value(
    own_redis: RedisServer, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    on_redis = {"backend": "redis", "redis_url": own_redis.url, "on_backend_error": policy}
    breaker = CircuitBreaker(3, 60, NAME, **on_redis)  # type: ignore[arg-type]
    limiter = RateLimiter(10, 3600, name=NAME, **on_redis)  # type: ignore[arg-type]

    def place_order() -> str:
        admin.replicaof("127.0.0.1", free_port())  # demoted while the order is out
        return "filled"

    before = backend_error_counts()["redis"]
    order = guard(place_order, breaker=breaker, limiter=limiter, fallback="queued")
    with caplog.at_level(logging.WARNING):
        assert order() == "filled"
        # Its success is carried by the breaker's next script (here a read), which the
        # demoted node refuses: an outage, counted and logged; the success is kept.
        breaker.get_stats()
    assert backend_error_counts()["redis"] - before == 1
    (warning,) = outage_warnings(caplog)
    assert "ReadOnlyError" in warning
    admin.replicaof("no", "one")  # a master again: the success reaches it
    deadline = time.monotonic() + 10
    while breaker.get_stats()["successes"] != 1:
        assert time.monotonic() < deadline, "the success of the filled order was lost"
        time.sleep(0.05)


def test_an_order_rejected_while_redis_fails_over_raises_its_own_error(
    own_redis: RedisServer,
) -> None:
    admin = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    breaker = CircuitBreaker(3, 60, NAME, backend="redis", redis_url=own_redis.url)

    @breaker.call
    def place_order() -> str:
        admin.replicaof("127.0.0.1", free_port())
        raise InsufficientFunds("margin")

    with pytest.raises(InsufficientFunds, match="margin"):
        place_order()
