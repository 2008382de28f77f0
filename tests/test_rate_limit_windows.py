"""Several windows at once (an exchange's weight per minute, orders per 10 s, orders per
day): a call is admitted only if every window admits it, and takes from none otherwise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from peak_resilience import RateLimiter
from peak_resilience._windows import parse_limit
from peak_resilience.testing import ManualClock

LONG = 10_000_000  # seconds: nothing refills during a test


def test_the_tightest_window_admits_and_a_refused_call_takes_from_no_window(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(limits=[(10, LONG), (3, LONG * 2)])
    assert [limiter.acquire() for _ in range(5)] == [True, True, True, False, False]
    windows = limiter.get_stats()["windows"]
    assert [round(w["tokens_available"]) for w in windows] == [7, 0]


def test_a_weighted_call_is_refused_whole_when_one_window_lacks_the_weight(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(limits=[(1200, LONG), (50, LONG * 2)])
    assert limiter.acquire(cost=40)
    assert not limiter.acquire(cost=20)  # the second window holds 10 more, the first 1160
    tokens = [round(w["tokens_available"]) for w in limiter.get_stats()["windows"]]
    assert tokens == [1160, 10]
    assert limiter.acquire(cost=10)


@pytest.mark.shared_backend
def test_processes_of_one_host_share_every_window(tmp_path: Any) -> None:
    import backend_workers as workers
    from multiprocessing_helpers import CONTEXT, run_all

    shared = {"backend": "shared", "shared_dir": str(tmp_path / "shm")}
    start = CONTEXT.Barrier(4)
    reports = run_all(
        workers.take_all_windows,
        [("binance", [(1000, LONG), (25, LONG * 2)], shared, start, 40) for _ in range(3)],
        start,
    )
    assert sum(reports) == 25


def test_windows_refill_each_at_its_own_rate(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["10/1s", "20/1m"], clock=clock)
    assert limiter.acquire(cost=10)
    assert not limiter.acquire()
    assert limiter.get_wait_time() == pytest.approx(0.1)
    clock.advance(1)
    # The second window (one token per 3 s) had 10 and a third left: 2 s to the next.
    assert limiter.acquire(cost=10)
    assert limiter.get_wait_time() == pytest.approx(2.0)


def test_the_pair_is_the_first_window_and_limits_add_the_others(clock: ManualClock) -> None:
    limiter = RateLimiter(100, 60, limits=["5/1s"], clock=clock)
    assert [w[:2] for w in limiter.default_bucket.windows] == [(100, 60.0), (5, 1.0)]
    assert sum(limiter.acquire() for _ in range(10)) == 5


def test_an_endpoint_may_have_windows_of_its_own(clock: ManualClock) -> None:
    limiter = RateLimiter(100, 60, clock=clock)
    limiter.add_endpoint("create_order", 1200, 60, windows=[(2, 10.0)])
    assert sum(limiter.acquire("create_order") for _ in range(5)) == 2
    assert limiter.acquire()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1200/60s", (1200, 60.0)),
        ("50/10s", (50, 10.0)),
        ("160000/1d", (160000, 86400.0)),
        ("10/2m", (10, 120.0)),
        ("7/1h", (7, 3600.0)),
        ("3/0.5s", (3, 0.5)),
        ("9/s", (9, 1.0)),
    ],
)
def test_a_window_is_written_requests_slash_length_and_unit(
    spec: str, expected: tuple[int, float]
) -> None:
    assert parse_limit(spec) == expected


@pytest.mark.parametrize("spec", ["1200", "1200/60", "1200/60x", "/60s", "0/60s", "a/1s"])
def test_a_malformed_window_is_refused_naming_it(spec: str) -> None:
    with pytest.raises(ValueError, match=repr(spec).replace("/", "/")):
        RateLimiter(limits=[spec])


def test_more_than_four_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="1 to 4 windows, got 5"):
        RateLimiter(limits=["1/1s", "2/2s", "3/3s", "4/4s", "5/5s"])


def test_a_limiter_needs_a_rate_or_limits() -> None:
    with pytest.raises(TypeError, match="limits="):
        RateLimiter()


def test_a_cost_no_window_can_ever_hold_is_an_error_naming_the_bursts() -> None:
    limiter = RateLimiter(limits=["100/1s", "5/1s"])
    with pytest.raises(ValueError, match=r"cost 6 .*burst 5 of the windows' bursts \[100, 5\]"):
        limiter.acquire(cost=6)


def test_processes_with_other_windows_are_refused_a_shared_budget(tmp_path: Any) -> None:
    shared = {"backend": "shared", "shared_dir": str(tmp_path / "shm"), "name": "binance"}
    RateLimiter(limits=["1200/60s", "50/10s"], **shared)
    with pytest.raises(ValueError, match="other windows and priority reserve"):
        RateLimiter(limits=["1200/60s", "60/10s"], **shared)


def test_set_windows_keeps_spent_tokens_and_new_windows_start_full(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.acquire(cost=4)
    limiter.default_bucket.set_windows(10, 1, windows=[(5, 1.0)])
    assert limiter.default_bucket.window_tokens() == [6.0, 5.0]


def test_a_single_string_for_limits_is_refused_asking_for_a_list() -> None:
    with pytest.raises(TypeError, match=r"limits must be a list of windows like \['1200/60s'\]"):
        RateLimiter(limits="1200/60s")
