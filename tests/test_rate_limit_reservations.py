"""Reserve, then settle: take the estimated weight now, charge or refund the difference
once the response says what the call really cost, or cancel to refund it all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience import RateLimiter
from peak_resilience.testing import ManualClock

LONG = 10_000_000


def tokens(limiter: RateLimiter) -> list[int]:
    return [round(w["tokens_available"]) for w in limiter.get_stats()["windows"]]


def test_a_reservation_takes_the_estimate_from_every_window(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(limits=[(100, LONG), (20, LONG * 2)])
    reservation = limiter.reserve(5)
    assert reservation is not None
    assert reservation.cost == 5
    assert tokens(limiter) == [95, 15]


def test_settling_for_less_refunds_the_difference(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(limits=[(100, LONG), (20, LONG * 2)])
    reservation = limiter.reserve(5)
    assert reservation is not None
    reservation.settle(2)
    assert tokens(limiter) == [98, 18]
    assert reservation.state == "settled"


def test_settling_for_more_charges_even_beyond_the_burst(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(limits=[(100, LONG), (20, LONG * 2)])
    reservation = limiter.reserve(5)
    assert reservation is not None
    reservation.settle(30)  # the exchange counted 30: the second window is 10 in debt
    assert tokens(limiter) == [70, 0]
    assert not limiter.acquire()
    assert limiter.get_wait_time() == pytest.approx(11 * LONG * 2 / 20, rel=1e-6)


def test_cancelling_refunds_the_whole_estimate(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(limits=[(100, LONG), (20, LONG * 2)])
    reservation = limiter.reserve(20)
    assert reservation is not None
    assert not limiter.acquire()
    reservation.cancel()
    assert tokens(limiter) == [100, 20]
    assert reservation.state == "cancelled"


def test_a_refused_reservation_is_none_and_takes_nothing(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(limits=[(100, LONG), (20, LONG * 2)])
    assert limiter.acquire(cost=18)
    assert limiter.reserve(3) is None
    assert tokens(limiter) == [82, 2]


def test_a_reservation_is_settled_once(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(10, LONG)
    reservation = limiter.reserve(4)
    assert reservation is not None
    reservation.settle(4)
    with pytest.raises(
        RuntimeError,
        match=r"reservation #\d+ of limiter 'exchange' \(cost 4\) "
        r"was already settled",
    ):
        reservation.cancel()
    with pytest.raises(RuntimeError, match="already settled"):
        reservation.settle(1)
    assert tokens(limiter) == [6]


def test_a_refund_never_fills_a_window_beyond_full(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    reservation = limiter.reserve(8)
    assert reservation is not None
    clock.advance(60)  # long refilled
    reservation.settle(0)
    assert sum(limiter.acquire() for _ in range(20)) == 10


def test_a_negative_actual_cost_is_refused(make_limiter: Callable[..., RateLimiter]) -> None:
    limiter = make_limiter(10, LONG)
    reservation = limiter.reserve(1)
    assert reservation is not None
    with pytest.raises(ValueError, match="actual must be a non-negative int, got -1"):
        reservation.settle(-1)
    assert reservation.state == "open"


def test_a_reservation_on_an_endpoint_draws_on_its_bucket(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 60, clock=clock)
    limiter.add_endpoint("create_order", 3, 60)
    reservation = limiter.reserve(3, "create_order")
    assert reservation is not None
    assert not limiter.acquire("create_order")
    assert limiter.acquire()


@pytest.mark.parametrize("backend", ["memory", "shared", "redis"])
def test_a_late_settlement_gives_back_nothing_once_others_took_the_refilled_budget(
    backend: str, clock: ManualClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # 10/s, burst 10: reserve 10; 2 s later (refilled) others take all 10; settling for 2
    # must not let 8 more calls through (18 at one instant with a burst of 10).
    where: dict[str, str] = {}
    if backend == "shared":
        where["shared_dir"] = str(tmp_path)
    elif backend == "redis":
        where["redis_url"] = request.getfixturevalue("redis_url")
    name = f"late-{tmp_path.name}"
    limiter = RateLimiter(10, 1, clock=clock, backend=backend, name=name, **where)
    reservation = limiter.reserve(10)
    assert reservation is not None
    clock.advance(2)
    assert sum(limiter.acquire() for _ in range(10)) == 10
    reservation.settle(2)
    assert sum(limiter.acquire() for _ in range(10)) == 0
    clock.advance(0.5)
    reservation_b = limiter.reserve(5)
    assert reservation_b is not None
    reservation_b.cancel()  # at once: the whole estimate is still owed, all of it back
    assert sum(limiter.acquire() for _ in range(10)) == 5


@pytest.mark.parametrize("backend", ["memory", "shared", "redis"])
def test_a_fixed_window_reservation_gives_back_within_its_minute_and_nothing_after(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    clock = ManualClock(1_699_956_000)  # a minute's start, in epoch seconds
    where: dict[str, str] = {}
    if backend == "shared":
        where["shared_dir"] = str(tmp_path)
    elif backend == "redis":
        where["redis_url"] = request.getfixturevalue("redis_url")
    limiter = RateLimiter(
        limits=["5/1m fixed"], clock=clock, backend=backend, name=f"fixed-{tmp_path.name}", **where
    )
    early = limiter.reserve(5)
    assert early is not None
    early.settle(2)  # within its minute: 3 back
    assert sum(limiter.acquire() for _ in range(5)) == 3
    clock.advance(60)  # the next minute: 5 again
    assert limiter.acquire(cost=4)
    early_next = limiter.reserve(1)
    assert early_next is not None
    clock.advance(60)  # that minute is over: a settlement now owes nothing back
    assert limiter.acquire(cost=5)
    early_next.cancel()
    assert not limiter.acquire()
