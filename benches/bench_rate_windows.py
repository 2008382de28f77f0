"""Issue 8's rate limiting on the hot path: a budget of three windows beside one of one
window (target: at most 2x), the high-priority lane beside the normal one, and a
reservation settled (take, then settle) beside a plain acquire.

Ratios (for `benches/ratios.py`):
- group "acquire-windows": test_ours_acquire_three_windows / test_ours_acquire_one_window
  <= 2 (issue 8).
- group "priority-lane": test_ours_acquire_high_lane / test_ours_acquire_normal_lane (what
  the priority="high" keyword costs, for information; both inside one Python frame).
- group "reserve-settle": test_ours_reserve_then_settle / test_ours_acquire_cost_5 (what a
  reservation adds over an acquire of the same weight, for information).
"""

from __future__ import annotations

from typing import Any

import pytest

from peak_resilience.rate_limiter import RateLimiter

HUGE = 10**12  # a budget no benchmark run can exhaust: every acquire is admitted
RATE = 10**9


@pytest.mark.benchmark(group="acquire-windows")
def test_ours_acquire_one_window(benchmark: Any) -> None:
    limiter = RateLimiter(RATE, 1.0, burst=HUGE)
    assert benchmark(limiter.acquire) is True


@pytest.mark.benchmark(group="acquire-windows")
def test_ours_acquire_three_windows(benchmark: Any) -> None:
    # Like "1200/60s", "50/10s", "160000/1d", scaled so that nothing ever refuses.
    limiter = RateLimiter(RATE, 1.0, burst=HUGE, limits=[(RATE, 10.0), (RATE, 86400.0)])
    assert len(limiter.default_bucket.windows) == 3
    assert benchmark(limiter.acquire) is True


@pytest.mark.benchmark(group="priority-lane")
def test_ours_acquire_normal_lane(benchmark: Any) -> None:
    limiter = RateLimiter(RATE, 1.0, burst=HUGE, priority_reserve=10)

    def normal() -> bool:  # the same Python frame around both lanes' calls
        return limiter.acquire()

    assert benchmark(normal) is True


@pytest.mark.benchmark(group="priority-lane")
def test_ours_acquire_high_lane(benchmark: Any) -> None:
    limiter = RateLimiter(RATE, 1.0, burst=HUGE, priority_reserve=10)

    def high() -> bool:
        return limiter.acquire(priority="high")

    assert benchmark(high) is True


@pytest.mark.benchmark(group="reserve-settle")
def test_ours_acquire_cost_5(benchmark: Any) -> None:
    limiter = RateLimiter(RATE, 1.0, burst=HUGE)

    def acquire() -> bool:
        return limiter.acquire(None, 5)

    assert benchmark(acquire) is True


@pytest.mark.benchmark(group="reserve-settle")
def test_ours_reserve_then_settle(benchmark: Any) -> None:
    limiter = RateLimiter(RATE, 1.0, burst=HUGE)

    def reserve_and_settle() -> None:
        reservation = limiter.reserve(5)
        assert reservation is not None
        reservation.settle(3)

    benchmark(reserve_and_settle)
