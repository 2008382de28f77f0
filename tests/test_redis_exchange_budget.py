"""Issue 8's rate limiting on backend="redis" beyond what every backend shares (see
test_rate_limit_*.py): processes racing on several windows, a decorated high-priority
call, and what reservations and pauses do while Redis is away."""

from __future__ import annotations

from typing import Any

import backend_workers as workers
import pytest
from multiprocessing_helpers import CONTEXT, run_all
from redis_server import RedisServer

from peak_resilience import RateLimiter, RateLimitExceeded
from peak_resilience._guard import guard

LONG = 10_000_000.0


@pytest.fixture
def on_redis(redis_url: str) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": redis_url}


def test_processes_share_every_window_of_a_redis_budget(on_redis: dict[str, Any]) -> None:
    start = CONTEXT.Barrier(4)
    reports = run_all(
        workers.take_all_windows,
        [("pool", [(1000, LONG), (30, LONG * 2)], on_redis, start, 40) for _ in range(3)],
        start,
    )
    assert sum(reports) == 30


def test_a_guarded_high_priority_call_uses_the_reserve_in_redis(on_redis: dict[str, Any]) -> None:
    limiter = RateLimiter(3, LONG, name="orders", priority_reserve=1, **on_redis)
    create = guard(lambda: "created", limiter=limiter)
    cancel = guard(lambda: "cancelled", limiter=limiter, priority="high")
    assert [create(), create()] == ["created", "created"]
    with pytest.raises(RateLimitExceeded):
        create()
    assert cancel() == "cancelled"
    with pytest.raises(RateLimitExceeded):
        cancel()


def outage_limiter(server: RedisServer, policy: str) -> RateLimiter:
    limiter = RateLimiter(
        10,
        3600,
        name="binance",
        backend="redis",
        redis_url=server.url,
        on_backend_error=policy,  # type: ignore[arg-type]
        redis_timeout=0.2,
    )
    limiter.store.link.retry_interval = 0.0  # try Redis on every call
    return limiter


def test_with_redis_stopped_a_reservation_falls_back_to_the_local_budget(
    own_redis: RedisServer,
) -> None:
    limiter = outage_limiter(own_redis, "local")
    own_redis.stop()
    reservation = limiter.reserve(6)
    assert reservation is not None
    assert not limiter.acquire(cost=5)  # the local stand-in holds 4
    reservation.settle(2)
    assert limiter.acquire(cost=8)


def test_a_reservation_settled_while_redis_is_away_is_charged_locally(
    own_redis: RedisServer,
) -> None:
    limiter = outage_limiter(own_redis, "local")
    reservation = limiter.reserve(2)
    assert reservation is not None
    own_redis.stop()
    reservation.settle(9)  # Redis cannot be told: the local stand-in carries the charge
    assert limiter.acquire(cost=3)
    assert not limiter.acquire(cost=1)


@pytest.mark.parametrize(("policy", "reserved"), [("fail_open", True), ("fail_closed", False)])
def test_with_redis_stopped_fail_open_reserves_and_fail_closed_refuses(
    own_redis: RedisServer, policy: str, reserved: bool
) -> None:
    limiter = outage_limiter(own_redis, policy)
    own_redis.stop()
    reservation = limiter.reserve(3)
    assert (reservation is not None) is reserved
    if reservation is not None:
        reservation.cancel()  # nothing was taken: nothing to give back, no error


def test_a_pause_made_while_redis_is_away_still_holds_locally(own_redis: RedisServer) -> None:
    limiter = outage_limiter(own_redis, "local")
    own_redis.stop()
    limiter.pause(60)
    assert not limiter.acquire()
    assert limiter.paused_for == pytest.approx(60, abs=1)
