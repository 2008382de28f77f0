"""Pause: limiter.pause(seconds) (a 429's Retry-After) refuses everything until then, on
every process sharing the budget."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from peak_resilience import RateLimiter
from peak_resilience.testing import ManualClock

LONG = 10_000_000


def test_a_paused_limiter_refuses_everything_high_priority_included(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(10, LONG, priority_reserve=2)
    limiter.pause(3600)
    assert not limiter.acquire()
    assert not limiter.acquire(priority="high")
    assert limiter.reserve(1) is None
    assert limiter.get_wait_time() == pytest.approx(3600, abs=1)
    assert limiter.paused_for == pytest.approx(3600, abs=1)


def test_resume_lifts_the_pause(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(10, LONG)
    limiter.pause(3600)
    limiter.resume()
    assert limiter.acquire()
    assert limiter.paused_for == 0.0


def test_a_pause_reaches_every_process_sharing_the_budget(
    make_shared_limiter: Callable[..., RateLimiter],
) -> None:
    first = make_shared_limiter(10, LONG)
    second = make_shared_limiter(10, LONG)
    first.pause(3600)
    assert not second.acquire()
    assert second.paused_for > 3500


def test_a_pause_ends_on_time_and_takes_no_tokens(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.pause(2.5)
    assert not limiter.acquire()
    clock.advance(2.4)
    assert limiter.get_wait_time() == pytest.approx(0.1)
    clock.advance(0.1)
    assert sum(limiter.acquire() for _ in range(20)) == 10


def test_a_shorter_pause_does_not_shorten_a_longer_one(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.pause(10)
    limiter.pause(1)
    clock.advance(5)
    assert not limiter.acquire()


def test_every_endpoint_is_paused_including_those_added_later(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("fetch_ticker", 100, 1)
    limiter.pause(5)
    limiter.add_endpoint("create_order", 100, 1)
    assert not limiter.acquire("fetch_ticker")
    assert not limiter.acquire("create_order")
    clock.advance(5)
    assert limiter.acquire("create_order")


def test_a_negative_pause_is_refused() -> None:
    with pytest.raises(ValueError, match="seconds must be a non-negative finite number"):
        RateLimiter(10, 1).pause(-1)


@pytest.mark.shared_backend
def test_processes_see_a_pause_made_in_another_process(tmp_path: object) -> None:
    import backend_workers as workers
    from multiprocessing_helpers import run_all

    shared = {"backend": "shared", "shared_dir": str(tmp_path / "shm")}  # type: ignore[operator]
    here = RateLimiter(10, LONG, name="binance", **shared)
    here.pause(3600)
    assert run_all(workers.try_once, [("binance", 10, shared)]) == [False]
    here.resume()
    assert run_all(workers.try_once, [("binance", 10, shared)]) == [True]
