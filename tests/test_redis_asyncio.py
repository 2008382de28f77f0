"""backend="redis" under asyncio: the loop keeps running while Redis is slow or frozen.

The heartbeat bounds below (50 ms, 100 ms) are behaviours of the loop, not speed
benchmarks: a blocked loop misses its 1 ms heartbeat for a whole Redis round trip or
timeout (hundreds of ms here), while on this shared 2-core machine a healthy loop's
worst gap stays well under them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis
from redis_server import RedisServer
from slow_link import slow_link

from peak_resilience import Bulkhead, CircuitBreaker, CircuitState, RateLimiter
from peak_resilience._guard import guard
from peak_resilience.errors import BulkheadFull

DELAY = 0.02  # per packet, each way
CALLS = 50
#: Calls made first, as in a running process: the scripts loaded, the loop connected.
WARM = 16

T = TypeVar("T")


async def with_heartbeat(work: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    """``work()``'s result, and the longest the loop went without running a 1 ms
    heartbeat."""
    longest = 0.0
    done = False

    async def beat() -> None:
        nonlocal longest
        while not done:
            before = time.monotonic()
            await asyncio.sleep(0.001)
            longest = max(longest, time.monotonic() - before - 0.001)

    beating = asyncio.ensure_future(beat())
    await asyncio.sleep(0)
    try:
        result = await work()
    finally:
        done = True
        await beating
    return result, longest


async def batch(call: Callable[[int], Awaitable[T]], numbers: range) -> list[T]:
    return await asyncio.gather(*map(call, numbers))


def one_round_trip(url: str) -> float:
    client = redis.Redis.from_url(url, socket_timeout=5)
    client.ping()  # connected
    started = time.monotonic()
    client.ping()
    return time.monotonic() - started


def guarded_orders(
    url: str,
) -> tuple[CircuitBreaker, RateLimiter, Callable[[int], Awaitable[int]]]:
    """A breaker and a limiter on Redis at ``url``, and an async order they guard."""
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": url, "redis_timeout": 5.0}
    breaker = CircuitBreaker(5, 60, "venue", **on_redis)
    limiter = RateLimiter(1000, 3600, name="venue", **on_redis)

    async def place_order(n: int) -> int:
        await asyncio.sleep(0)
        return n

    return breaker, limiter, guard(place_order, breaker=breaker, limiter=limiter)


def test_fifty_async_guarded_calls_through_a_slow_link_leave_the_loop_running(
    own_redis: RedisServer,
) -> None:
    with slow_link(own_redis.port, DELAY) as port:
        url = f"redis://127.0.0.1:{port}/0"
        breaker, _, order = guarded_orders(url)
        trip = one_round_trip(url)

        async def warm_then_measure() -> tuple[list[int], float, float]:
            # As in a running process: the scripts loaded, the loop's connection open.
            assert await batch(order, range(-WARM, 0)) == list(range(-WARM, 0))
            started = time.monotonic()
            results, gap = await with_heartbeat(lambda: batch(order, range(CALLS)))
            return results, gap, time.monotonic() - started

        results, gap, elapsed = asyncio.run(warm_then_measure())
        assert breaker.get_stats()["successes"] == WARM + CALLS
    # What this machine's own load does to a loop that only sleeps as long: a loaded CI
    # machine stalls every loop now and then; the calls must add no more than 50 ms to it.
    _, idle_gap = asyncio.run(with_heartbeat(lambda: asyncio.sleep(elapsed)))
    assert results == list(range(CALLS))
    print(f"\none round trip {trip * 1000:.0f} ms; {CALLS} guarded calls {elapsed * 1000:.0f} ms")
    print(f"longest heartbeat gap {gap * 1000:.1f} ms (idle loop: {idle_gap * 1000:.1f} ms)")
    assert gap < 0.05 + idle_gap
    # On redis.asyncio every call's admission goes out on one connection at once, then
    # every outcome: two round trips (2.2-2.3 measured), not 50 x 2 of them one after the
    # other (nor 8-11, as with 16 threads).
    assert elapsed < 5 * trip


def test_a_frozen_redis_never_freezes_the_loop(own_redis: RedisServer) -> None:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": own_redis.url}
    breaker = CircuitBreaker(5, 60, "venue", redis_timeout=0.2, **on_redis)
    limiter = RateLimiter(3, 3600, name="venue", redis_timeout=0.2, **on_redis)

    async def place_order() -> str:
        return "sent"

    order = guard(place_order, breaker=breaker, limiter=limiter, fallback="queued")
    assert asyncio.run(order()) == "sent"  # connected
    assert own_redis.process is not None
    pid = own_redis.process.pid
    os.kill(pid, signal.SIGSTOP)  # connections stay open, no answer ever comes
    try:
        results, gap = asyncio.run(
            with_heartbeat(lambda: asyncio.gather(*(order() for _ in range(5))))
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    # on_backend_error="local": the in-process limiter of 3 tokens stands in.
    assert sorted(results) == ["queued", "queued", "sent", "sent", "sent"]
    print(f"\nlongest heartbeat gap with Redis stopped: {gap * 1000:.1f} ms")
    assert gap < 0.1


def test_acquire_async_on_a_slow_redis_takes_the_exact_budget_without_blocking(
    own_redis: RedisServer,
) -> None:
    with slow_link(own_redis.port, DELAY) as port:
        limiter = RateLimiter(
            10,
            3600,
            name="venue",
            backend="redis",
            redis_url=f"redis://127.0.0.1:{port}/0",
            redis_timeout=5.0,
        )
        taken, gap = asyncio.run(
            with_heartbeat(
                lambda: asyncio.gather(*(limiter.acquire_async(timeout=0) for _ in range(20)))
            )
        )
    assert sorted(taken) == [False] * 10 + [True] * 10
    assert gap < 0.05


def test_a_task_cancelled_while_admitted_gives_its_trial_back(own_redis: RedisServer) -> None:
    with slow_link(own_redis.port, DELAY) as port:
        breaker = CircuitBreaker(
            1, 3600, "venue", backend="redis", redis_url=f"redis://127.0.0.1:{port}/0"
        )
        breaker.open_for(0.001)  # half-open at once; a lost trial would hold it an hour

        async def place_order() -> str:
            return "sent"

        order = guard(place_order, breaker=breaker)

        async def cancel_then_call() -> str:
            first = asyncio.ensure_future(order())
            await asyncio.sleep(DELAY)  # its admission is on the wire
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            for _ in range(100):  # bounded: the give-back is one round trip
                await asyncio.sleep(DELAY)
                try:
                    sent: str = await order()
                    return sent
                except Exception:
                    continue
            return "never admitted"

        assert asyncio.run(cancel_then_call()) == "sent"
        assert breaker.state is CircuitState.CLOSED


def test_concurrent_async_calls_share_one_connection_and_no_thread(own_redis: RedisServer) -> None:
    breaker, limiter, order = guarded_orders(own_redis.url)
    admin = redis.Redis.from_url(own_redis.url)
    # The process' sync connection made first: the flusher, which sends successes no
    # call carried (it may run during the batch on a slow machine), reuses it.
    breaker.get_stats()
    before = len(admin.client_list())
    threads_before = {t.name for t in threading.enumerate()}

    async def calls_then_count() -> tuple[list[int], int]:
        done = await batch(order, range(CALLS))
        return done, len(admin.client_list())  # while the loop and its connection live

    results, during = asyncio.run(calls_then_count())
    assert results == list(range(CALLS))
    assert during - before == 1
    started = {t.name for t in threading.enumerate()} - threads_before
    assert not [name for name in started if name.startswith("peak-resilience-redis")]
    assert breaker.get_stats()["successes"] == CALLS
    assert limiter.get_stats()["allowed"] == CALLS


def test_an_async_failure_that_opens_the_circuit_is_told_to_its_listeners(
    own_redis: RedisServer,
) -> None:
    breaker = CircuitBreaker(2, 3600, "venue", backend="redis", redis_url=own_redis.url)
    heard: list[tuple[CircuitState, CircuitState]] = []
    breaker.add_listener(lambda event: heard.append((event.from_state, event.to_state)))

    async def place_order() -> str:
        raise ConnectionError("venue down")

    order = guard(place_order, breaker=breaker)

    async def fail_twice() -> None:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await order()

    asyncio.run(fail_twice())
    assert heard == [(CircuitState.CLOSED, CircuitState.OPEN)]
    assert breaker.state is CircuitState.OPEN


def test_an_async_call_on_an_unreachable_redis_applies_fail_closed(own_redis: RedisServer) -> None:
    limiter = RateLimiter(
        100,
        60,
        name="venue",
        backend="redis",
        redis_url=own_redis.url,
        redis_timeout=0.2,
        on_backend_error="fail_closed",
    )
    assert asyncio.run(limiter.acquire_async(timeout=0))
    own_redis.stop()
    started = time.monotonic()
    assert not asyncio.run(limiter.acquire_async(timeout=0))
    assert time.monotonic() - started < 1.0  # bounded by redis_timeout, not hung
    assert not limiter.redis_available


def test_a_trial_refused_a_bulkhead_slot_gives_its_permit_back(own_redis: RedisServer) -> None:
    breaker = CircuitBreaker(1, 3600, "venue", backend="redis", redis_url=own_redis.url)
    breaker.open_for(0.001)  # half-open at once; a lost trial would hold it an hour
    slots = Bulkhead(1)
    release = asyncio.Event()

    async def hold_the_slot() -> None:
        await release.wait()

    async def place_order() -> str:
        return "sent"

    holder = guard(hold_the_slot, bulkhead=slots)
    order = guard(place_order, breaker=breaker, bulkhead=slots)

    async def run() -> list[str]:
        time.sleep(0.002)  # past the open period
        holding = asyncio.ensure_future(holder())
        await asyncio.sleep(0)  # the slot taken
        with pytest.raises(BulkheadFull):
            await order()  # admitted as the trial, then refused the slot
        release.set()
        await holding
        return [await order(), await order()]

    assert asyncio.run(run()) == ["sent", "sent"]
    assert breaker.state is CircuitState.CLOSED


def test_async_calls_with_breaker_and_budget_on_two_redis_servers_never_ask_on_the_loop(
    own_redis: RedisServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peak_resilience._backends.redis.connection import RedisLink

    breaker = CircuitBreaker(2, 3600, "venue", backend="redis", redis_url=own_redis.url)
    limiter = RateLimiter(2, 3600, name="venue", backend="redis", redis_url=redis_url)

    async def send() -> str:
        return "filled"

    order = guard(send, breaker=breaker, limiter=limiter, fallback="queued")
    asked_on_the_loop: list[str] = []
    call_now = RedisLink.call_now

    def spy(link: RedisLink, *args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            asked_on_the_loop.append(link.what)
        except RuntimeError:
            pass
        return call_now(link, *args, **kwargs)

    monkeypatch.setattr(RedisLink, "call_now", spy)

    async def run() -> list[str]:
        return [await order() for _ in range(3)]

    assert asyncio.run(run()) == ["filled", "filled", "queued"]
    assert asked_on_the_loop == []  # each asked in turn on redis.asyncio, none blocking
    assert breaker.get_stats()["successes"] == 2
    assert limiter.get_stats()["allowed"] == 2


def test_a_take_asked_for_a_call_the_local_stand_in_refused_is_refunded(
    own_redis: RedisServer, redis_url: str
) -> None:
    breaker = CircuitBreaker(
        2, 3600, "venue", backend="redis", redis_url=own_redis.url, redis_timeout=0.2
    )
    breaker.store.link.retry_interval = 0.0
    limiter = RateLimiter(5, 3600, name="venue", backend="redis", redis_url=redis_url)
    own_redis.stop()
    breaker.record_failure()
    breaker.record_failure()  # counted by the in-process stand-in: open

    async def send() -> str:
        return "filled"

    order = guard(send, breaker=breaker, limiter=limiter, fallback="refused")

    async def run() -> list[str]:
        answers = [await order() for _ in range(3)]
        await asyncio.sleep(0.05)  # the refunds are sent after the calls return
        return answers

    assert asyncio.run(run()) == ["refused"] * 3
    # The breaker's Redis was down, so each take was asked before the stand-in refused
    # the call: each was given back, and the whole budget is left.
    assert [limiter.acquire() for _ in range(6)] == [True] * 5 + [False]
