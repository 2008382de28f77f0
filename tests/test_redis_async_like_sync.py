"""An async guarded call on Redis (redis.asyncio, the reply applied natively) does what a
sync one does: the same random runs of successes, failures and clock advances give the
same answers, transitions and counts, on a manual clock the scripts read."""

from __future__ import annotations

import asyncio
import functools
import gc
import random
from collections.abc import Callable
from typing import Any

import pytest
from redis_server import RedisServer

from peak_resilience import CircuitBreaker, RateLimiter
from peak_resilience._guard import guard
from peak_resilience.events import BreakerTransition, Event
from peak_resilience.testing import ManualClock

STEPS = 60


class Venue:
    """A breaker and a limiter on Redis under names of their own, on a manual clock."""

    def __init__(self, url: str, name: str) -> None:
        self.clock = ManualClock()
        on_redis: dict[str, Any] = {"backend": "redis", "redis_url": url, "clock": self.clock}
        self.breaker = CircuitBreaker(2, 0.05, name, half_open_max_calls=1, **on_redis)
        self.limiter = RateLimiter(5, 1.0, name=name, **on_redis)
        #: The breaker's events: each transition (from, to), each refusal's kind.
        self.heard: list[tuple[int, int] | str] = []
        self.breaker.add_listener(functools.partial(hear, self.heard))

    def counts(self) -> tuple[Any, ...]:
        breaker, limiter = self.breaker.get_stats(), self.limiter.get_stats()
        return (
            self.breaker.state,
            breaker["successes"],
            breaker["failures"],
            breaker["rejections"],
            limiter["allowed"],
            limiter["rejected"],
        )


def hear(heard: list[tuple[int, int] | str], event: Event) -> None:
    # Not a method: the breaker holding its venue would keep both until the collector ran
    # (and then read the counts of a Redis that a later test has stopped).
    if isinstance(event, BreakerTransition):
        heard.append((int(event.from_state), int(event.to_state)))
    else:
        heard.append(type(event).__name__)


def answer(call: Callable[[], Any]) -> str:
    try:
        return str(call())
    except Exception as exc:
        return type(exc).__name__


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_async_calls_on_redis_answer_and_count_as_sync_calls_do(
    own_redis: RedisServer, seed: int
) -> None:
    sync, on_loop = Venue(own_redis.url, f"sync-{seed}"), Venue(own_redis.url, f"async-{seed}")

    def order(fails: bool) -> str:
        if fails:
            raise ConnectionError("venue down")
        return "filled"

    async def order_async(fails: bool) -> str:
        return order(fails)

    sync_order = guard(order, breaker=sync.breaker, limiter=sync.limiter)
    async_order = guard(order_async, breaker=on_loop.breaker, limiter=on_loop.limiter)
    moves = random.Random(seed)
    loop = asyncio.new_event_loop()  # one loop throughout, as in a running process
    sync_answers: list[str] = []
    async_answers: list[str] = []
    try:
        for _ in range(STEPS):
            move = moves.random()
            if move < 0.25:
                seconds = moves.choice([0.01, 0.03, 0.06, 0.3])
                sync.clock.advance(seconds)
                on_loop.clock.advance(seconds)
                continue
            fails = move < 0.55
            sync_answers.append(answer(functools.partial(sync_order, fails)))
            async_call = functools.partial(loop.run_until_complete, async_order(fails))
            async_answers.append(answer(async_call))
    finally:
        loop.close()
    assert async_answers == sync_answers
    assert on_loop.heard == sync.heard
    assert on_loop.counts() == sync.counts()
    # The runs went through every state and both kinds of refusal.
    assert {"filled", "ConnectionError", "CircuitBreakerError", "RateLimitExceeded"} <= set(
        sync_answers
    )
    assert (1, 0) in sync.heard  # a trial closed the circuit (HALF_OPEN to CLOSED)
    # (seeds chosen so that each run does: 3 and 5 never close it)
    del sync_order, async_order, sync, on_loop
    gc.collect()  # dropped here, not in a later test (which would find them in its exports)
