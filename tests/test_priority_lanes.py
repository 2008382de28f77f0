"""Priority lanes: part of every window is kept for priority="high" calls (cancels,
cancel-all, risk reductions), so new orders can never starve a cancel."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from peak_resilience import RateLimiter
from peak_resilience.testing import ManualClock

LONG = 10_000_000


def test_normal_calls_cannot_use_the_reserve(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(10, LONG, priority_reserve=3)
    assert sum(limiter.acquire() for _ in range(10)) == 7
    assert sum(limiter.acquire(priority="high") for _ in range(10)) == 3


def test_high_priority_calls_may_use_the_whole_budget(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(10, LONG, priority_reserve=3)
    assert sum(limiter.acquire(priority="high") for _ in range(12)) == 10
    assert not limiter.acquire()


def test_the_reserve_holds_in_every_window(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(limits=[(100, LONG), (10, LONG * 2)], priority_reserve=2)
    assert sum(limiter.acquire() for _ in range(20)) == 8
    assert limiter.acquire(priority="high", cost=2)
    assert not limiter.acquire(priority="high")


def test_a_normal_reservation_respects_the_reserve(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(10, LONG, priority_reserve=4)
    assert limiter.reserve(6) is not None
    assert limiter.reserve(1) is None
    assert limiter.reserve(4, priority="high") is not None


def test_a_normal_wait_counts_the_reserve_as_unavailable(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, priority_reserve=2, clock=clock)
    assert limiter.acquire(cost=8)
    assert limiter.get_wait_time() == pytest.approx(0.1)
    assert limiter.get_wait_time(priority="high") == 0.0


def test_a_normal_cost_above_the_unreserved_part_is_an_error_saying_so() -> None:
    limiter = RateLimiter(10, 1, priority_reserve=3)
    with pytest.raises(ValueError, match="normal-priority call may use 7 of it, 3 being reserved"):
        limiter.acquire(cost=8)
    assert limiter.acquire(cost=8, priority="high")


def test_a_reserve_as_large_as_a_burst_is_refused_naming_the_window() -> None:
    with pytest.raises(ValueError, match=r"priority_reserve=5 .* window 10s \(burst 5\)"):
        RateLimiter(limits=["100/60s", "5/10s"], priority_reserve=5)


@pytest.mark.parametrize("priority", ["urgent", "HIGH", 1])
def test_an_unknown_priority_is_refused(priority: object) -> None:
    limiter = RateLimiter(10, 1)
    with pytest.raises(ValueError, match="priority must be"):
        limiter.acquire(priority=priority)  # type: ignore[arg-type]


def test_blocking_acquire_takes_the_high_lane(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, priority_reserve=2, clock=clock)
    assert limiter.acquire(cost=8)
    assert limiter.acquire_blocking(cost=2, priority="high", timeout=0)


def test_a_new_rate_whose_burst_the_reserve_would_fill_is_refused_and_nothing_changes(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(10, LONG, priority_reserve=3)
    bucket = limiter.default_bucket
    with pytest.raises(ValueError, match=r"priority_reserve=3 leaves normal calls no token"):
        bucket.set_rate(3, LONG)
    assert bucket.windows == [(10, float(LONG), 10)]
    assert sum(limiter.acquire() for _ in range(10)) == 7


def test_a_new_rate_is_what_the_windows_and_their_metric_labels_report(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(limits=[(10, 1), (100, 3600)], priority_reserve=2)
    limiter.default_bucket.set_rate(20, 60)
    assert limiter.default_bucket.windows == [(20, 60.0, 20), (100, 3600.0, 100)]
    assert [w["window"] for w in limiter.get_stats()["windows"]] == ["60s", "3600s"]
