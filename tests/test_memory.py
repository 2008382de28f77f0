"""Nothing grows: a million acquires and a hundred thousand dropped limiters and breakers
leave the process's memory where it was (RSS covers the Rust side, tracemalloc Python's)."""

from __future__ import annotations

import gc
import os
import re
import sys
import threading
import tracemalloc

from peak_resilience import _instances
from peak_resilience.metrics import Metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker
from peak_resilience.testing import fresh_resilience

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


def churn_several_windows(count: int) -> None:
    for _ in range(count):
        limiter = RateLimiter(limits=["10/1s sliding", "100/1m", "1000/1h fixed"])
        limiter.acquire()
        limiter.add_endpoint("orders", 5, 1.0, windows=["3/1s sliding"])
        limiter.acquire("orders")


def test_dropped_limiters_of_several_windows_free_their_other_windows_and_logs() -> None:
    churn_several_windows(10_000)
    gc.collect()
    rss_before = rss_bytes()
    churn_several_windows(50_000)
    gc.collect()
    # Each bucket's other windows (168 B) and sliding log (1 KiB) are allocations of
    # their own: kept, they would be over 100 MB here.
    assert rss_bytes() - rss_before < 4 * 1024 * 1024


def test_a_hundred_thousand_unused_endpoints_cost_little_more_than_their_names() -> None:
    limiter = RateLimiter(10, 1.0)
    for i in range(1_000):  # warm up allocator pools and the dict's first sizes
        limiter.add_endpoint(f"warm{i}", 5, 1.0)
    gc.collect()
    rss_before = rss_bytes()
    for i in range(100_000):
        limiter.add_endpoint(f"e{i}", 5, 1.0)
    gc.collect()
    # Each made at once would be ~670 B (its bucket's native state and Python object).
    assert rss_bytes() - rss_before < 100_000 * 250
    assert limiter.get_stats("e99999")["tokens_available"] == 5


def test_a_hundred_thousand_limiters_held_cost_at_most_500_bytes_each() -> None:
    warm = [RateLimiter(10, 1.0) for _ in range(1_000)]  # allocator pools, the registry
    del warm
    gc.collect()
    rss_before = rss_bytes()
    held = [RateLimiter(10, 1.0) for _ in range(100_000)]
    gc.collect()
    # Issue 19's bound for a limiter of one window in memory, its name and its place in
    # the live objects' registry included (566 B before it was met, 464 B after).
    assert rss_bytes() - rss_before - sys.getsizeof(held) < 100_000 * 500
    assert held[-1].acquire()
    assert held[-1].get_stats()["allowed"] == 1


def label_storm(metrics: Metrics, start: int, count: int) -> None:
    """``count`` new distinct values in every label a caller can choose."""
    for i in range(start, start + count):
        metrics.record_operation_success(f"op{i}")
        metrics.record_operation_failure("storm", f"Error{i}")
        metrics.record_rate_limit_hit(f"limiter{i}", f"endpoint{i}", rejected=True)
        metrics.record_circuit_breaker_state_change(f"breaker{i}", "closed", "open")


def test_ten_thousand_distinct_label_values_stay_within_the_cardinality_guard() -> None:
    metrics = Metrics()
    bound = metrics.max_series_per_family
    # Earlier tests' objects left in reference cycles go first: one collected mid-test
    # would keep its name's place in the bound with no series left to show.
    gc.collect()
    with fresh_resilience():
        label_storm(metrics, 0, 10_000)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        label_storm(metrics, 10_000, 10_000)  # ten thousand more: all fold into "other"
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        body = metrics.exposition(None)[0].decode()
        operations = len(_instances.operations)
        error_types = len(_instances.operations["storm"].snapshot()["failures"])

    # The bound covers the label values of each group of families (an object's families:
    # a limiter's hits, rejections and tokens), the live objects of other tests included:
    # filled up to it, then (counters) one "other" value, never more. (One family alone
    # may show fewer: a live limiter that never counted a hit holds its place with no
    # hits series.)
    first_label = re.compile(r'^(\w+)\{\w+="((?:[^"\\]|\\.)*)"')
    values: dict[str, set[str]] = {}
    for line in body.splitlines():
        if (found := first_label.match(line)) is not None:
            values.setdefault(found[1], set()).add(found[2])
    for group in (
        ("operation_successes_total",),
        ("rate_limit_hits_total", "rate_limit_rejections_total", "rate_limit_tokens_available"),
        ("circuit_breaker_state_changes_total", "circuit_breaker_state"),
    ):
        shown = set().union(*(values.get(f"peak_trade_{family}", set()) for family in group))
        assert bound <= len(shown) <= bound + 1, group
        for family in group:
            assert len(values.get(f"peak_trade_{family}", set())) <= bound + 1, family
    assert operations <= bound + 1
    assert error_types <= 64  # the native per-operation cap on exception types
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 256 * 1024, f"grew {grown} bytes on label values past the bound"


def test_a_guarded_function_keeps_no_copy_of_its_name_and_docstring() -> None:
    def place_order(order_id: int, *, quantity: float = 1.0) -> str:
        """Sends one order to the venue."""
        return f"{order_id}:{quantity}"

    breakers = [CircuitBreaker(name=f"guarded{i}") for i in range(10_000)]
    gc.collect()
    rss_before = rss_bytes()
    guards = [breaker.call(place_order) for breaker in breakers]
    gc.collect()
    # A dict of copies (functools.update_wrapper's) would be ~270 B more each.
    assert rss_bytes() - rss_before < 10_000 * 450
    assert guards[-1](7, quantity=2.0) == "7:2.0"
    assert guards[-1].__doc__ == "Sends one order to the venue."


def test_the_live_objects_registry_hands_out_only_objects_alive_and_forgets_dropped_ones() -> None:
    limiters = [RateLimiter(10, 1.0, name=f"registered{i}") for i in range(100)]
    breakers = [CircuitBreaker(name=f"registered{i}") for i in range(100)]
    assert set(map(id, limiters)) <= set(map(id, _instances.limiters))
    assert set(map(id, breakers)) <= set(map(id, _instances.breakers))

    def make_a_cycle() -> None:
        limiter = RateLimiter(10, 1.0, name="in-a-cycle")
        limiter.add_listener(lambda event: limiter)  # its listener holds it

    gc.disable()
    try:
        make_a_cycle()
        assert "in-a-cycle" in {limiter.name for limiter in _instances.limiters}
    finally:
        gc.enable()
    gc.collect()  # freed by the garbage collector, not by reference counts
    assert "in-a-cycle" not in {limiter.name for limiter in _instances.limiters}
    limiters_before, breakers_before = len(_instances.limiters), len(_instances.breakers)
    del limiters[:50], breakers[:50]
    assert len(_instances.limiters) == limiters_before - 50
    assert len(_instances.breakers) == breakers_before - 50


def test_reading_the_live_objects_while_threads_make_and_drop_them_sees_only_whole_ones() -> None:
    stop = threading.Event()
    seen: list[int] = []

    def churn() -> None:
        while not stop.is_set():
            kept = [RateLimiter(10, 1.0, name=f"churned{i}") for i in range(50)]
            kept += [CircuitBreaker(name=f"churned{i}") for i in range(50)]  # type: ignore[misc]
            del kept

    def read() -> None:
        for _ in range(300):  # bounded: each read walks every live object
            seen.append(sum(len(limiter.name) for limiter in _instances.limiters))
            seen.append(sum(breaker.failure_total for breaker in _instances.breakers))

    makers = [threading.Thread(target=churn) for _ in range(3)]
    for maker in makers:
        maker.start()
    try:
        read()
    finally:
        stop.set()
        for maker in makers:
            maker.join()
    assert len(seen) == 600
