"""backend="redis": what a guarded call sends to Redis, and what it waits for."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from peak_resilience import CircuitBreaker, CircuitState, RateLimiter
from peak_resilience._guard import guard


def scripts_run(admin: redis.Redis) -> int:
    stats = admin.info("commandstats").get("cmdstat_evalsha", {"calls": 0})
    calls: int = stats["calls"]
    return calls


def unread_replies(limiter: RateLimiter) -> int:
    """Replies waiting on the process' connections to the limiter's Redis."""
    return sum(len(getattr(c, "_peak_posted", [])) for c in limiter.store.link.pool._idle)


def test_a_success_is_recorded_without_waiting_and_never_lost(redis_url: str) -> None:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(3, 60, "venue", **on_redis)
    limiter = RateLimiter(100, 3600, name="venue", **on_redis)
    order = guard(lambda: "filled", breaker=breaker, limiter=limiter)
    assert order() == "filled"
    # Sent; its reply is left for the next call on the connection to read.
    assert unread_replies(limiter) == 1
    assert [order() for _ in range(20)] == ["filled"] * 20
    stats = breaker.get_stats()  # another host would read the same
    assert stats["successes"] == 21
    assert limiter.get_stats()["allowed"] == 21
    assert unread_replies(limiter) == 0


def test_a_call_refused_a_token_costs_two_scripts_and_gives_nothing_back(
    redis_url: str,
) -> None:
    admin = redis.Redis.from_url(redis_url, socket_timeout=5)
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(3, 60, "venue", **on_redis)
    limiter = RateLimiter(1, 3600, name="venue", **on_redis)
    order = guard(lambda: "filled", breaker=breaker, limiter=limiter, fallback="queued")
    assert order() == "filled"
    breaker.get_stats()  # the success's reply read
    before = scripts_run(admin)
    assert order() == "queued"
    # The breaker's admission and the token: a closed circuit's admission holds no
    # permit, so nothing is sent to give it back.
    assert scripts_run(admin) - before == 2


def test_a_failure_and_a_trial_are_recorded_before_the_call_returns(redis_url: str) -> None:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(1, 60, "venue", **on_redis)
    other_host = CircuitBreaker(1, 60, "venue", **on_redis)

    def reject() -> None:
        raise TimeoutError("exchange")

    with pytest.raises(TimeoutError):
        guard(reject, breaker=breaker)()
    # The failure opened the circuit: its transition is known at once, here and there.
    assert breaker.state is CircuitState.OPEN
    assert other_host.state is CircuitState.OPEN
    breaker.open_for(0.001)
    time.sleep(0.01)
    assert breaker.state is CircuitState.HALF_OPEN
    assert guard(lambda: "filled", breaker=breaker)() == "filled"
    # A trial's success closes the circuit: waited for, and seen everywhere at once.
    assert other_host.state is CircuitState.CLOSED
