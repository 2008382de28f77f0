"""RateLimiter: a token bucket per endpoint, starting full, refilled continuously."""

from __future__ import annotations

import asyncio

import pytest

from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.testing import ManualClock


def test_a_new_limiter_admits_its_whole_budget_at_once_then_rejects(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=100, window_seconds=60, clock=clock)
    results = [limiter.acquire() for _ in range(101)]
    assert results.count(True) == 100
    assert results[-1] is False


def test_tokens_refill_at_max_requests_per_window(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=100, window_seconds=60, clock=clock)
    for _ in range(100):
        limiter.acquire()
    assert limiter.get_wait_time() == pytest.approx(0.6)
    clock.advance(0.6)
    assert limiter.acquire() is True
    assert limiter.acquire() is False


def test_an_idle_limiter_never_holds_more_than_its_burst(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=10, window_seconds=1, burst=3, clock=clock)
    clock.advance(3600)
    assert [limiter.acquire() for _ in range(5)] == [True, True, True, False, False]


def test_an_endpoint_gets_its_own_bucket_beside_the_default(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=100, window_seconds=60, clock=clock)
    limiter.add_endpoint("fetch_ohlcv", max_requests=50, window_seconds=60)
    limiter.add_endpoint("fetch_ticker", max_requests=200, window_seconds=60)
    assert sum(limiter.acquire("fetch_ticker") for _ in range(300)) == 200
    assert sum(limiter.acquire("fetch_ohlcv") for _ in range(300)) == 50
    assert sum(limiter.acquire() for _ in range(300)) == 100


def test_an_endpoint_never_added_draws_on_the_default_bucket(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=5, window_seconds=1, clock=clock)
    assert sum(limiter.acquire("unknown") for _ in range(3)) == 3
    assert sum(limiter.acquire() for _ in range(5)) == 2


def test_a_limiter_without_endpoints_lists_none_removes_none_then_adds_one(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(max_requests=5, window_seconds=1, clock=clock)
    assert limiter.endpoint_buckets() == {}
    assert limiter.remove_endpoint("orders") is None
    assert limiter.bucket_for("orders") is limiter.default_bucket
    limiter.add_endpoint("orders", 1, 1)
    assert list(limiter.endpoint_buckets()) == ["orders"]
    assert limiter.acquire("orders") and not limiter.acquire("orders")
    assert limiter.remove_endpoint("orders") is not None
    assert limiter.endpoint_buckets() == {}


def test_a_request_weight_takes_that_many_tokens(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=10, window_seconds=1, clock=clock)
    assert limiter.acquire(cost=4) is True
    assert limiter.acquire(cost=4) is True
    assert limiter.acquire(cost=4) is False
    assert limiter.get_wait_time(cost=4) == pytest.approx(0.2)
    assert limiter.acquire(cost=2) is True


def test_stats_report_requests_rejections_and_tokens(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=4, window_seconds=1, clock=clock)
    limiter.add_endpoint("orders", 2, 1)
    for _ in range(5):
        limiter.acquire()
    limiter.acquire("orders")
    stats = limiter.get_stats()
    assert stats["total_requests"] == 6
    assert stats["allowed"] == 5
    assert stats["rejected"] == 1
    assert stats["rejection_rate"] == pytest.approx(1 / 6)
    assert stats["tokens_available"] == 0.0
    assert stats["endpoints"]["orders"]["tokens_available"] == 1.0
    assert limiter.get_stats("orders")["allowed"] == 1


def test_adding_an_endpoint_again_changes_its_rate_in_place(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=10, window_seconds=1, clock=clock)
    limiter.add_endpoint("e", 2, 1)
    limiter.acquire("e")
    limiter.add_endpoint("e", 4, 1)
    assert sum(limiter.acquire("e") for _ in range(10)) == 3


def test_blocking_acquire_waits_for_a_token_on_the_limiter_clock(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=2, window_seconds=1, clock=clock)
    limiter.acquire(cost=2)
    start = clock.now()
    assert limiter.acquire_blocking(timeout=1.0) is True
    assert clock.now() - start == pytest.approx(0.5)


def test_blocking_acquire_gives_up_when_the_wait_exceeds_the_timeout(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=1, window_seconds=10, clock=clock)
    limiter.acquire()
    assert limiter.acquire_blocking(timeout=5.0) is False
    assert limiter.get_stats()["allowed"] == 1


def test_async_acquire_waits_without_blocking_the_loop(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=1, window_seconds=2, clock=clock)
    limiter.acquire()
    assert asyncio.run(limiter.acquire_async(timeout=3)) is True
    assert asyncio.run(limiter.acquire_async(timeout=1)) is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_requests": 0, "window_seconds": 60},
            "max_requests must be a positive integer, got 0",
        ),
        (
            {"max_requests": -5, "window_seconds": 60},
            "max_requests must be a positive integer, got -5",
        ),
        ({"max_requests": 10, "window_seconds": 0}, "window_seconds must be a positive"),
        ({"max_requests": 10, "window_seconds": -1.5}, "got -1.5"),
        ({"max_requests": 10, "window_seconds": float("nan")}, "window_seconds"),
        ({"max_requests": 10, "window_seconds": 1, "burst": 0}, "burst must be a positive integer"),
        ({"max_requests": True, "window_seconds": 1}, "max_requests must be a number, got True"),
    ],
)
def test_impossible_settings_are_a_value_error_naming_the_parameter(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


def test_a_wrong_type_is_a_type_error_naming_the_parameter() -> None:
    with pytest.raises(TypeError, match="window_seconds must be a number of seconds, got '60'"):
        RateLimiter(100, "60")  # type: ignore[arg-type]


def test_a_cost_larger_than_the_bucket_can_ever_hold_is_a_value_error(clock: ManualClock) -> None:
    limiter = RateLimiter(max_requests=10, window_seconds=1, clock=clock)
    with pytest.raises(
        ValueError, match=r"cost 11 is larger than the bucket can ever hold \(burst 10\)"
    ):
        limiter.acquire(cost=11)
    with pytest.raises(ValueError, match="cost 11"):
        limiter.get_wait_time(cost=11)
    with pytest.raises(ValueError, match="cost must be >= 0, got -1"):
        limiter.acquire(cost=-1)
