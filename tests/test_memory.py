"""Nothing grows: a million acquires and a hundred thousand dropped limiters and breakers
leave the process's memory where it was (RSS covers the Rust side, tracemalloc Python's)."""

from __future__ import annotations

import gc
import os
import tracemalloc

from peak_resilience import _instances
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def churn(count: int) -> None:
    for i in range(count):
        limiter = RateLimiter(10, 1.0)
        limiter.add_endpoint("orders", 5, 1.0)
        limiter.acquire("orders")
        breaker = CircuitBreaker(name=f"b{i % 10}")
        breaker.call(len)("x")


def test_a_million_acquires_allocate_nothing_that_stays() -> None:
    limiter = RateLimiter(1_000, 1.0)
    for _ in range(10_000):
        limiter.acquire()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    rss_before = rss_bytes()
    for _ in range(1_000_000):
        limiter.acquire()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 64 * 1024
    assert rss_bytes() - rss_before < 1024 * 1024


def test_a_hundred_thousand_dropped_limiters_and_breakers_are_freed() -> None:
    churn(10_000)  # warm up allocator pools and caches
    gc.collect()
    rss_before = rss_bytes()
    churn(100_000)
    gc.collect()
    # One leaked limiter (native object, buckets, dict) is several hundred bytes: a leak
    # would show as tens of megabytes here.
    assert rss_bytes() - rss_before < 4 * 1024 * 1024
    assert len(_instances.limiters) < 100
    assert len(_instances.breakers) < 100
