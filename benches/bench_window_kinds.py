"""Issue 13: an acquire of a fixed (calendar) window and of a sliding window (N <= 100)
beside a token-bucket (GCRA) acquire, in one run (target: each at most 1.5x), with the
floor of a C builtin call.

Ratios (for `benches/ratios.py`):
- group "acquire-kinds": test_ours_acquire_fixed_window / test_ours_acquire_gcra_window
  <= 1.5, test_ours_acquire_sliding_window / test_ours_acquire_gcra_window <= 1.5.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from peak_resilience.rate_limiter import RateLimiter

#: Fixed: more than any run takes in a day. Sliding: 100 per microsecond, which no
#: caller reaches (an acquire takes longer than 10 ns), so every acquire is admitted and
#: each one writes the log, its usual path.
FIXED = "4000000000/1d fixed"
SLIDING = "100/0.000001s sliding"


@pytest.mark.benchmark(group="acquire-kinds")
def test_floor_builtin_next(benchmark: Any) -> None:
    benchmark(itertools.repeat(True).__next__)


@pytest.mark.benchmark(group="acquire-kinds")
def test_ours_acquire_gcra_window(benchmark: Any) -> None:
    limiter = RateLimiter(10**9, 1.0, burst=10**12)
    assert benchmark(limiter.acquire) is True


@pytest.mark.benchmark(group="acquire-kinds")
def test_ours_acquire_fixed_window(benchmark: Any) -> None:
    limiter = RateLimiter(limits=[FIXED])
    assert benchmark(limiter.acquire) is True


@pytest.mark.benchmark(group="acquire-kinds")
def test_ours_acquire_sliding_window(benchmark: Any) -> None:
    limiter = RateLimiter(limits=[SLIDING])
    assert benchmark(limiter.acquire) is True
