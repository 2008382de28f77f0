"""Backends side by side: where a budget lives, and what an acquire costs there.

Groups (ours vs the floor / peers it is compared to):
- ``acquire-shared``: a shared-memory acquire against the in-process one (bar: <= 2x).
- ``acquire-redis``: our Redis acquire against a redis-py PING over the same client
  (bar: <= 1.15x), against the bare round trip (a pre-packed PING sent the way our acquire
  sends its script: what is left is the script's own time on the server), and against
  limits' RedisStorage moving window and pyrate-limiter's RedisBucket on the same server
  (bar: faster than both).
- ``guarded-redis`` (issue 12): a call guarded by a Redis breaker and a Redis limiter,
  admitted (the admission and the token in one script, the success sent without waiting
  for its reply) and refused for want of a token (one script, its wait in the reply), against
  the same PING (targets 1.3x and 1.2x of one PING).
- ``guarded-redis-async`` (issue 12): an ``async def`` call guarded by the same breaker
  and limiter on redis.asyncio, alone and fifty at once on one loop, against a
  redis.asyncio PING alone and fifty at once (redis.asyncio's own pool: a connection
  each) on the same loop and server.

Every limiter has a budget it never exhausts, so each call does the full admit path.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import RedisServer

from peak_resilience import CircuitBreaker, RateLimiter
from peak_resilience._guard import guard

BIG = 10**9  # requests per second: never runs out during a benchmark
REDIS_BIG = 10**6  # the finest rate Redis counts (one per microsecond), still never runs out


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis-bench"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


# Shared memory -------------------------------------------------------------------------


@pytest.mark.benchmark(group="acquire-shared")
def test_in_process_acquire(benchmark: Any) -> None:
    limiter = RateLimiter(BIG, 1.0, name="bench-memory")
    benchmark(limiter.acquire)


@pytest.mark.benchmark(group="acquire-shared")
def test_shared_memory_acquire(benchmark: Any, tmp_path: Path) -> None:
    limiter = RateLimiter(BIG, 1.0, name="bench-shared", backend="shared", shared_dir=tmp_path)
    benchmark(limiter.acquire)


# Redis ---------------------------------------------------------------------------------


@pytest.mark.benchmark(group="acquire-redis")
def test_redis_py_ping_floor(benchmark: Any, redis_url: str) -> None:
    limiter = RateLimiter(REDIS_BIG, 1.0, name="bench-ping", backend="redis", redis_url=redis_url)
    client = limiter.store.link.client  # the same connection
    client.ping()
    benchmark(client.ping)


@pytest.mark.benchmark(group="acquire-redis")
def test_redis_bare_round_trip_floor(benchmark: Any, redis_url: str) -> None:
    limiter = RateLimiter(REDIS_BIG, 1.0, name="bench-bare", backend="redis", redis_url=redis_url)
    conn = limiter.store.link.pool.unconnected()
    ping = conn.pack_command("PING")

    def bare_ping() -> None:
        conn.send_packed_command(ping, check_health=False)
        conn.read_response()

    bare_ping()
    benchmark(bare_ping)


@pytest.mark.benchmark(group="acquire-redis")
def test_redis_acquire(benchmark: Any, redis_url: str) -> None:
    limiter = RateLimiter(REDIS_BIG, 1.0, name="bench-redis", backend="redis", redis_url=redis_url)
    assert limiter.acquire()
    benchmark(limiter.acquire)


@pytest.mark.benchmark(group="acquire-redis")
def test_limits_redis_moving_window(benchmark: Any, redis_url: str) -> None:
    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    limiter = MovingWindowRateLimiter(RedisStorage(redis_url))
    item = RateLimitItemPerSecond(BIG)
    assert limiter.hit(item, "bench")
    benchmark(limiter.hit, item, "bench")


@pytest.mark.benchmark(group="acquire-redis")
def test_pyrate_limiter_redis_bucket(benchmark: Any, redis_url: str) -> None:
    import redis
    from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

    client = redis.Redis.from_url(redis_url)
    bucket = RedisBucket.init([Rate(BIG, Duration.SECOND)], client, "bench")
    limiter = Limiter(bucket)
    assert limiter.try_acquire("bench", blocking=False)
    benchmark(limiter.try_acquire, "bench", 1, False)


# Guarded calls on Redis (issue 12) ------------------------------------------------------


@pytest.mark.benchmark(group="guarded-redis")
def test_redis_guarded_call_admitted(benchmark: Any, redis_url: str) -> None:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(5, 60, "bench-guarded", **on_redis)
    limiter = RateLimiter(REDIS_BIG, 1.0, name="bench-guarded", **on_redis)
    call = guard(lambda: None, breaker=breaker, limiter=limiter)
    call()
    benchmark(call)


@pytest.mark.benchmark(group="guarded-redis")
def test_redis_guarded_call_refused(benchmark: Any, redis_url: str) -> None:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(5, 60, "bench-refused", **on_redis)
    limiter = RateLimiter(1, 3600, name="bench-refused", **on_redis)
    call = guard(lambda: "sent", breaker=breaker, limiter=limiter, fallback="refused")
    assert call() == "sent"
    assert call() == "refused"
    benchmark(call)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for a benchmark, as in a running process (its connections stay open)."""
    running = asyncio.new_event_loop()
    try:
        yield running
    finally:
        running.close()


def _async_guarded(redis_url: str, name: str) -> Callable[[], Awaitable[None]]:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(5, 60, name, **on_redis)
    limiter = RateLimiter(REDIS_BIG, 1.0, name=name, **on_redis)

    async def send() -> None:
        return None

    return guard(send, breaker=breaker, limiter=limiter)  # type: ignore[no-any-return]


FIFTY = 50


@pytest.mark.benchmark(group="guarded-redis-async")
def test_redis_asyncio_ping_floor(
    benchmark: Any, redis_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    loop.run_until_complete(client.ping())
    benchmark(lambda: loop.run_until_complete(client.ping()))


@pytest.mark.benchmark(group="guarded-redis-async")
def test_redis_async_guarded_call_admitted(
    benchmark: Any, redis_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    call = _async_guarded(redis_url, "bench-async")
    loop.run_until_complete(call())
    benchmark(lambda: loop.run_until_complete(call()))


@pytest.mark.benchmark(group="guarded-redis-async")
def test_redis_asyncio_fifty_pings_floor(
    benchmark: Any, redis_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url, max_connections=FIFTY)

    async def fifty() -> None:
        await asyncio.gather(*(client.ping() for _ in range(FIFTY)))

    loop.run_until_complete(fifty())  # every connection open
    benchmark(lambda: loop.run_until_complete(fifty()))


@pytest.mark.benchmark(group="guarded-redis-async")
def test_redis_async_fifty_guarded_calls(
    benchmark: Any, redis_url: str, loop: asyncio.AbstractEventLoop
) -> None:
    call = _async_guarded(redis_url, "bench-async-fifty")

    async def fifty() -> None:
        await asyncio.gather(*(call() for _ in range(FIFTY)))

    loop.run_until_complete(fifty())
    benchmark(lambda: loop.run_until_complete(fifty()))
