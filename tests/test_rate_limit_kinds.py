"""How a window counts (issue 13): ``"1200/1m"`` a token bucket, ``"1200/1m fixed"`` per
calendar interval aligned to UTC as an exchange counts, ``"10/1s sliding"`` never more
than 10 in any interval of 1 s."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peak_resilience import RateLimiter
from peak_resilience._windows import MAX_SLIDING, Window, parse_window
from peak_resilience.testing import ManualClock

#: 10:00:00 UTC on 14 Nov 2023: a calendar minute (and second) starts here.
MINUTE_START = 1_699_956_000.0
README = Path(__file__).resolve().parents[1] / "README.md"


def tokens(limiter: RateLimiter) -> list[int]:
    return [round(w["tokens_available"]) for w in limiter.get_stats()["windows"]]


def burst(limiter: RateLimiter, attempts: int, **kwargs: Any) -> int:
    return sum(1 for _ in range(attempts) if limiter.acquire(**kwargs))


# --- the text of a window ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1200/1m", Window(1200, 60.0, "bucket")),
        ("1200/1m fixed", Window(1200, 60.0, "fixed")),
        ("10/1s sliding", Window(10, 1.0, "sliding")),
        ("  50 / 10s   FIXED ", Window(50, 10.0, "fixed")),
        ((5, 2.0), Window(5, 2.0, "bucket")),
    ],
)
def test_a_window_says_how_it_counts_after_its_length(spec: Any, expected: Window) -> None:
    assert parse_window(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("10/1s slidng", "'slidng' is not a way to count a window"),
        ("10/1s fixed sliding", "is not '<requests>/<length><unit>'"),
        (f"{MAX_SLIDING + 1}/1s sliding", f"at most {MAX_SLIDING} requests"),
    ],
)
def test_a_bad_kind_is_refused_naming_the_spec(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(spec))) as refused:
        RateLimiter(limits=[spec])
    assert message in str(refused.value)


def test_sliding_windows_of_one_budget_share_one_bound_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_SLIDING} requests between them"):
        RateLimiter(limits=["100/1s sliding", "100/1m sliding"])


def test_a_counted_window_has_no_burst_of_its_own() -> None:
    with pytest.raises(ValueError, match="burst=5 applies to token-bucket windows only"):
        RateLimiter(burst=5, limits=["10/1s fixed"])


def test_kinds_show_in_the_window_labels_and_stats(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["1200/1m fixed", "10/1s sliding", "100/1h"], clock=clock)
    bucket = limiter.default_bucket
    assert bucket.window_labels == ["60s fixed", "1s sliding", "3600s"]
    assert bucket.window_kinds == ["fixed", "sliding", "bucket"]
    assert [w["window"] for w in limiter.get_stats()["windows"]] == bucket.window_labels


def test_an_endpoint_takes_windows_written_as_text(clock: ManualClock) -> None:
    limiter = RateLimiter(100, 60, clock=clock)
    limiter.add_endpoint("order", windows=["2/1s sliding", "5/1m fixed"])
    assert burst(limiter, 5, endpoint="order") == 2
    assert limiter.bucket_for("order").window_kinds == ["sliding", "fixed"]


# --- fixed: per calendar interval ---------------------------------------------------------


def test_a_fixed_window_starts_again_at_the_next_calendar_minute_not_a_minute_later(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    clock = ManualClock(MINUTE_START + 50)
    limiter = make_limiter(limits=["5/1m fixed"], clock=clock)
    assert burst(limiter, 8) == 5
    assert limiter.get_wait_time() == pytest.approx(10.0)
    clock.advance(10)
    assert burst(limiter, 8) == 5


def test_a_budget_of_mixed_kinds_admits_only_what_every_window_admits(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    clock = ManualClock(MINUTE_START)
    limiter = make_limiter(limits=["10/1m fixed", "3/1s sliding", "100/1h"], clock=clock)
    assert limiter.acquire(cost=2)
    assert not limiter.acquire(cost=2)  # the sliding window holds 1 more
    assert tokens(limiter) == [8, 1, 98]
    clock.advance(1)
    assert limiter.acquire(cost=3)
    assert tokens(limiter) == [5, 0, 95]


# --- the exchange that bans ---------------------------------------------------------------


class CalendarMinuteExchange:
    """Counts requests per calendar minute (UTC) and bans the client for two minutes
    when one minute goes over ``limit``, as Binance does with a 418."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[int, int] = {}
        self.banned_until = -math.inf
        self.bans = 0

    def request(self, now: float) -> int:
        if now < self.banned_until:
            return 418
        minute = int(now // 60)
        self.counts[minute] = self.counts.get(minute, 0) + 1
        if self.counts[minute] > self.limit:
            self.bans += 1
            self.banned_until = now + 120
            return 418
        return 200


def bans_in_ten_minutes(limits: list[str]) -> int:
    """A client that idles a minute, then sends whenever its limiter lets it for a
    minute (checking every 0.5 s), for 10 simulated minutes: a full budget at the start
    edge of a minute, and its refill during it."""
    clock = ManualClock(MINUTE_START)
    limiter = RateLimiter(limits=limits, clock=clock)
    exchange = CalendarMinuteExchange(limit=1200)
    for tick in range(10 * 120):
        if (tick // 120) % 2 == 1:
            while limiter.acquire():
                exchange.request(clock.now())
        clock.advance(0.5)
    return exchange.bans


def test_fixed_windows_are_never_banned_by_an_exchange_counting_calendar_minutes() -> None:
    assert bans_in_ten_minutes(["1200/1m fixed"]) == 0


def test_a_token_bucket_of_the_same_numbers_is_banned_and_the_readme_says_how_often() -> None:
    full = bans_in_ten_minutes(["1200/1m"])
    at_80_percent = bans_in_ten_minutes(["960/1m"])
    assert full > 0
    assert at_80_percent > 0
    readme = README.read_text()
    assert f"token bucket of `1200/1m` gets {full} bans" in readme
    assert f"`960/1m` (80%) gets {at_80_percent}" in readme


# --- sliding: never more than N in any interval of its length ------------------------------


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 12),
    length_ms=st.sampled_from([500, 1000, 3000]),
    arrivals=st.lists(st.tuples(st.integers(0, 1500), st.integers(1, 3)), max_size=120),
)
def test_a_sliding_window_never_admits_more_than_n_in_any_interval_of_its_length(
    limit: int, length_ms: int, arrivals: list[tuple[int, int]]
) -> None:
    clock = ManualClock(MINUTE_START)
    limiter = RateLimiter(limits=[f"{limit}/{length_ms / 1000}s sliding"], clock=clock)
    now = 0  # ms since the start, beside the clock: the plain log counts in integers
    log: list[int] = []  # the instant of each admitted request
    for gap, cost in arrivals:
        clock.advance(gap / 1000)
        now += gap
        if cost > limit:
            continue
        fits = sum(1 for t in log if t > now - length_ms) + cost <= limit
        admitted = limiter.acquire(cost=cost)
        assert admitted == fits
        if admitted:
            log += [now] * cost
    for start in log:
        assert sum(1 for t in log if start <= t < start + length_ms) <= limit


# --- exact under threads and processes ------------------------------------------------------


def admitted_by_eight_threads(limiter: RateLimiter, attempts: int) -> int:
    """What 8 threads, started at once, admit between them in ``attempts`` tries each."""
    admitted = [0] * 8
    start = threading.Barrier(8)

    def take(i: int) -> None:
        start.wait()
        admitted[i] = burst(limiter, attempts)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(admitted)


@pytest.mark.parametrize(("spec", "count"), [("1000/1h fixed", 1000), ("100/1h sliding", 100)])
def test_eight_threads_admit_exactly_the_count(spec: str, count: int) -> None:
    limiter = RateLimiter(limits=[spec], clock=ManualClock(MINUTE_START))
    assert admitted_by_eight_threads(limiter, 2_000) == count


@pytest.mark.parametrize("spec", ["40/1h fixed", "40/1h sliding"])
def test_eight_threads_admit_exactly_the_count_on_every_backend(
    spec: str, make_limiter: Callable[..., RateLimiter]
) -> None:
    assert admitted_by_eight_threads(make_limiter(limits=[spec]), 10) == 40


@pytest.mark.parametrize("spec", ["25/1d fixed", "25/1h sliding"])
@pytest.mark.parametrize(
    "where", [pytest.param("shared", marks=pytest.mark.shared_backend), "redis"]
)
def test_four_processes_admit_exactly_the_count(
    spec: str, where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import backend_workers as workers
    from multiprocessing_helpers import CONTEXT, run_all

    backend = {"backend": where}
    if where == "shared":
        backend["shared_dir"] = str(tmp_path / "shm")
    else:
        backend["redis_url"] = request.getfixturevalue("redis_url")
    start = CONTEXT.Barrier(5)
    reports = run_all(
        workers.take_all_windows,
        [("binance", [spec], backend, start, 40) for _ in range(4)],
        start,
    )
    assert sum(reports) == 25


@pytest.mark.shared_backend
def test_processes_counting_a_window_another_way_are_refused_a_shared_budget(
    tmp_path: Path,
) -> None:
    shared = {"backend": "shared", "shared_dir": str(tmp_path / "shm"), "name": "binance"}
    RateLimiter(limits=["100/1m fixed"], **shared)
    with pytest.raises(ValueError, match="kinds of every window"):
        RateLimiter(limits=["100/1m sliding"], **shared)


# --- reserve/settle, sync, priority reserve and pause, for every kind ----------------------


@pytest.mark.parametrize("kind", ["fixed", "sliding"])
def test_settling_for_less_refunds_and_cancelling_refunds_all(
    kind: str, make_limiter: Callable[..., RateLimiter]
) -> None:
    limiter = make_limiter(limits=[f"20/1h {kind}"], clock=ManualClock(MINUTE_START))
    reservation = limiter.reserve(5)
    assert reservation is not None
    reservation.settle(2)
    assert tokens(limiter) == [18]
    second = limiter.reserve(10)
    assert second is not None
    second.cancel()
    assert tokens(limiter) == [18]


def test_a_sliding_refund_never_lets_a_later_interval_hold_more_than_the_limit(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    clock = ManualClock(MINUTE_START)
    limiter = make_limiter(limits=["2/1s sliding"], clock=clock)
    reservation = limiter.reserve(1)
    assert reservation is not None
    clock.advance(0.9)
    assert limiter.acquire()
    reservation.settle(0)
    clock.advance(0.1)
    # The call at 0.9 s still counts until 1.9 s: one more fits, not two.
    assert [limiter.acquire(), limiter.acquire()] == [True, False]


@pytest.mark.parametrize("kind", ["fixed", "sliding"])
def test_settling_for_more_charges_beyond_the_limit(
    kind: str, make_limiter: Callable[..., RateLimiter]
) -> None:
    limiter = make_limiter(limits=[f"20/1h {kind}"], clock=ManualClock(MINUTE_START))
    reservation = limiter.reserve(5)
    assert reservation is not None
    reservation.settle(25)
    assert tokens(limiter) == [0]
    assert not limiter.acquire()


@pytest.mark.parametrize("kind", ["fixed", "sliding"])
def test_sync_makes_the_reported_usage_count(
    kind: str, make_limiter: Callable[..., RateLimiter]
) -> None:
    limiter = make_limiter(limits=[f"50/1m {kind}", "1200/1m"], clock=ManualClock(MINUTE_START))
    limiter.sync(47, window=f"60s {kind}")
    assert burst(limiter, 10) == 3


@pytest.mark.parametrize("kind", ["fixed", "sliding"])
def test_the_priority_reserve_is_left_to_high_priority_calls(
    kind: str, make_limiter: Callable[..., RateLimiter]
) -> None:
    limiter = make_limiter(
        limits=[f"10/1h {kind}"], priority_reserve=3, clock=ManualClock(MINUTE_START)
    )
    assert burst(limiter, 10) == 7
    assert burst(limiter, 10, priority="high") == 3


@pytest.mark.parametrize("kind", ["fixed", "sliding"])
def test_a_pause_refuses_every_kind_until_it_ends(
    kind: str, make_limiter: Callable[..., RateLimiter]
) -> None:
    clock = ManualClock(MINUTE_START)
    limiter = make_limiter(limits=[f"10/1s {kind}"], clock=clock)
    limiter.pause(5)
    assert not limiter.acquire(priority="high")
    clock.advance(5)
    assert limiter.acquire()


def test_a_config_budget_may_mix_kinds(fresh: ManualClock, write_config: Any) -> None:
    from peak_resilience import configure
    from peak_resilience.resilience_helpers import create_module_rate_limiter

    path = write_config(
        """
        [resilience]
        rate_limits = ["1200/1m fixed", "10/1s sliding"]
        """
    )
    configure(path)
    limiter = create_module_rate_limiter("binance", "orders")
    assert limiter.default_bucket.window_kinds == ["fixed", "sliding"]
    assert burst(limiter, 20) == 10


def test_a_guarded_call_on_redis_is_admitted_by_every_kind_in_one_script(redis_url: str) -> None:
    from peak_resilience import CircuitBreaker
    from peak_resilience._guard import guard
    from peak_resilience.errors import RateLimitExceeded

    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": redis_url}
    breaker = CircuitBreaker(3, 60, "venue", **on_redis)
    limiter = RateLimiter(limits=["5/1d fixed", "1/1h sliding"], name="venue", **on_redis)
    order = guard(lambda: "filled", breaker=breaker, limiter=limiter)
    assert order() == "filled"
    with pytest.raises(RateLimitExceeded) as refused:
        order()
    # Redis' own clock: the sliding window's request leaves it an hour after it came.
    assert refused.value.retry_after == pytest.approx(3600, abs=5)
    assert tokens(limiter) == [4, 0]
