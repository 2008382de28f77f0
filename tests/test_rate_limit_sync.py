"""Sync from the exchange: the usage it reports (its used-weight header) becomes the local
state, so the exchange stays the authority."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from peak_resilience import RateLimiter
from peak_resilience.testing import ManualClock

LONG = 10_000_000


def tokens(limiter: RateLimiter) -> list[int]:
    return [round(w["tokens_available"]) for w in limiter.get_stats()["windows"]]


def test_sync_leaves_exactly_the_unused_weight(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(limits=[(1200, LONG), (50, LONG * 2)])
    limiter.sync(1195, window=0)
    assert tokens(limiter) == [5, 50]
    assert sum(limiter.acquire() for _ in range(10)) == 5


def test_sync_can_also_give_back_what_the_exchange_did_not_count(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(1200, LONG)
    assert limiter.acquire(cost=1000)
    limiter.sync(100)
    assert tokens(limiter) == [1100]


def test_a_window_is_named_by_its_length_in_any_unit(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["1200/1m", "50/10s"], clock=clock)
    limiter.sync(40, window="10s")
    limiter.sync(600, window="60s")
    limiter.sync(601, window="1m")
    assert tokens(limiter) == [599, 10]


def test_synced_usage_refills_at_the_window_rate(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["1200/60s"], clock=clock)
    limiter.sync(1200)
    assert not limiter.acquire()
    clock.advance(0.05)  # 20 per second
    assert limiter.acquire()
    assert not limiter.acquire()


def test_usage_beyond_the_burst_is_a_debt(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.sync(15)
    assert limiter.get_wait_time() == pytest.approx(0.6)


def test_with_several_windows_the_window_must_be_named(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["1200/60s", "50/10s"], clock=clock)
    with pytest.raises(ValueError, match=r"2 windows \(60s, 10s\): say which"):
        limiter.sync(5)
    with pytest.raises(ValueError, match=r"no window '30s'"):
        limiter.sync(5, window="30s")
    with pytest.raises(ValueError, match="window index 2 is out of range"):
        limiter.sync(5, window=2)


def test_negative_usage_is_refused(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    with pytest.raises(ValueError, match="used must be a non-negative int, got -1"):
        limiter.sync(-1)


def test_sync_reaches_every_process_sharing_the_budget(
    make_shared_limiter: Callable[..., RateLimiter],
) -> None:
    first = make_shared_limiter(100, LONG)
    second = make_shared_limiter(100, LONG)
    first.sync(99)
    assert second.acquire()
    assert not second.acquire()
