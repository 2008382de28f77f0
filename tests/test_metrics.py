"""The guide's ``metrics`` object: latency, outcomes, reported events, snapshots, summary,
the on/off switch and the bound on label values."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from peak_resilience import _instances
from peak_resilience._guard import guard
from peak_resilience.metrics import Metrics, metrics
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker
from peak_resilience.testing import ManualClock

_names = itertools.count()


def unique(stem: str) -> str:
    """Names no other test uses: the operation registry lives as long as the process."""
    return f"{stem}-{next(_names)}-{id(_names)}"


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    metrics.reset()
    yield
    metrics.configure(enabled=True, max_series_per_family=1000, snapshot_capacity=1000)
    metrics.reset()


def histogram_count(operation: str) -> int:
    count: int = _instances.operations[operation].snapshot()["buckets"][-1]
    return count


def test_track_latency_as_a_context_manager_counts_one_timed_success() -> None:
    operation = unique("data_fetch")
    with metrics.track_latency(operation):
        pass
    summary = metrics.get_summary()["operations"][operation]
    assert (summary["count"], summary["successes"], summary["failures"]) == (1, 1, 0)


def test_track_latency_counts_a_failure_by_type_and_lets_the_exception_through() -> None:
    operation = unique("data_fetch")
    with pytest.raises(ConnectionError, match="down"), metrics.track_latency(operation):
        raise ConnectionError("down")
    summary = metrics.get_summary()["operations"][operation]
    assert summary["failures_by_type"] == {"ConnectionError": 1}
    assert summary["count"] == 1
    assert metrics.get_snapshots()[-1]["error_type"] == "ConnectionError"


def test_track_latency_decorates_a_function_and_keeps_its_name_and_result() -> None:
    operation = unique("calc")

    @metrics.track_latency(operation)
    def calculate(x: int) -> int:
        """Doubles."""
        return 2 * x

    assert [calculate(1), calculate(2)] == [2, 4]
    assert calculate.__name__ == "calculate"
    assert histogram_count(operation) == 2


def test_track_latency_decorates_a_coroutine_function_and_times_the_await() -> None:
    operation = unique("async_fetch")

    @metrics.track_latency(operation)
    async def fetch() -> str:
        await asyncio.sleep(0)
        return "tick"

    assert asyncio.run(fetch()) == "tick"
    assert histogram_count(operation) == 1


def test_track_latency_works_with_async_with() -> None:
    operation = unique("async_block")

    async def run() -> None:
        async with metrics.track_latency(operation):
            await asyncio.sleep(0)

    asyncio.run(run())
    assert histogram_count(operation) == 1


def test_keyboard_interrupt_in_a_tracked_block_counts_neither_way() -> None:
    operation = unique("interrupted")
    with pytest.raises(KeyboardInterrupt), metrics.track_latency(operation):
        raise KeyboardInterrupt
    assert operation not in metrics.get_summary()["operations"]


def test_record_operation_failure_and_success_count_per_operation() -> None:
    operation = unique("backtest.calculate")
    metrics.record_operation_failure(operation=operation, error_type="ValueError")
    metrics.record_operation_failure(operation, "ValueError")
    metrics.record_operation_success(operation)
    summary = metrics.get_summary()["operations"][operation]
    assert summary["failures_by_type"] == {"ValueError": 2}
    assert summary["successes"] == 1


def test_every_breaker_transition_lands_in_the_snapshots(clock: ManualClock) -> None:
    name = unique("orders")
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=10, name=name, clock=clock)
    breaker.record_failure()
    breaker.reset()
    events = [e for e in metrics.get_snapshots() if e.get("name") == name]
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        ("closed", "open"),
        ("open", "closed"),
    ]
    assert all(e["event"] == "circuit_breaker_state_change" for e in events)


def test_snapshots_carry_monotonic_and_wall_timestamps_in_order() -> None:
    metrics.record_operation_failure(unique("op"), "ValueError")
    metrics.record_operation_failure(unique("op"), "KeyError")
    first, second = metrics.get_snapshots()
    assert first["monotonic"] <= second["monotonic"]
    assert first["timestamp"] > 1.6e9  # Unix seconds, not a monotonic reading
    assert (first["error_type"], second["error_type"]) == ("ValueError", "KeyError")


def test_get_snapshots_returns_the_most_recent_up_to_limit() -> None:
    operation = unique("op")
    for i in range(5):
        metrics.record_operation_failure(operation, f"E{i}")
    assert [e["error_type"] for e in metrics.get_snapshots(limit=2)] == ["E3", "E4"]
    assert metrics.get_snapshots(limit=0) == []


def test_the_snapshot_ring_keeps_only_the_newest_events() -> None:
    metrics.configure(snapshot_capacity=3)
    operation = unique("op")
    for i in range(10):
        metrics.record_operation_failure(operation, f"E{i}")
    assert [e["error_type"] for e in metrics.get_snapshots(limit=100)] == ["E7", "E8", "E9"]


def test_a_negative_snapshot_limit_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="limit"):
        metrics.get_snapshots(limit=-1)


def test_reported_state_change_counts_and_shows_the_reported_state() -> None:
    name = unique("portfolio")
    metrics.record_circuit_breaker_state_change(name=name, from_state="closed", to_state="open")
    summary = metrics.get_summary()["circuit_breakers"][name]
    assert summary["state"] == "open"
    assert summary["state_changes"] == {"closed->open": 1}
    assert metrics.get_snapshots()[-1]["to_state"] == "open"


def test_an_unknown_state_name_is_refused_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"to_state.*'opened'"):
        metrics.record_circuit_breaker_state_change("x", "closed", "opened")


def test_record_rate_limit_hit_counts_requests_and_rejections_separately() -> None:
    limiter = unique("api")
    metrics.record_rate_limit_hit(limiter, "fetch_ohlcv")
    metrics.record_rate_limit_hit(limiter, "fetch_ohlcv", rejected=True)
    endpoint = metrics.get_summary()["rate_limiters"][limiter]["fetch_ohlcv"]
    assert (endpoint["requests"], endpoint["rejections"]) == (2, 1)
    assert metrics.get_snapshots()[-1]["event"] == "rate_limit_rejection"


def test_a_limiters_requests_are_its_allowed_plus_rejected_acquires(clock: ManualClock) -> None:
    name = unique("exchange")
    limiter = RateLimiter(max_requests=3, window_seconds=60, name=name, clock=clock)
    for _ in range(5):
        limiter.acquire()
    default = metrics.get_summary()["rate_limiters"][name]["default"]
    assert (default["requests"], default["rejections"]) == (5, 2)
    assert default["tokens_available"] == 0.0


def test_summary_estimates_latency_quantiles_from_the_histogram() -> None:
    operation = unique("quantiles")
    stats = _instances.operation(operation)
    for _ in range(99):
        stats.record_latency(0.0004)  # in the (0.00025, 0.0005] bucket
    stats.record_latency(3.0)  # in (2.5, 5]
    latency = metrics.get_summary()["operations"][operation]["latency_seconds"]
    assert 0.00025 < latency["p50"] <= 0.0005
    assert 0.00025 < latency["p95"] <= 0.0005
    assert latency["mean"] == pytest.approx((99 * 0.0004 + 3.0) / 100)


def test_disabled_metrics_record_nothing_from_guarded_calls_or_explicit_calls() -> None:
    operation = unique("switched_off")
    stats = _instances.operation(operation)
    guarded = guard(lambda: "ok", operation=stats)
    metrics.set_enabled(False)
    assert guarded() == "ok"
    with metrics.track_latency(operation):
        pass
    metrics.record_operation_failure(operation, "ValueError")
    metrics.record_rate_limit_hit(unique("api"), "x")
    snap = stats.snapshot()
    assert (snap["buckets"][-1], snap["successes"], snap["failures"]) == (0, 0, {})
    assert metrics.get_snapshots() == []


def test_recording_resumes_when_metrics_are_enabled_again() -> None:
    operation = unique("switched_back")
    stats = _instances.operation(operation)
    guarded = guard(lambda: "ok", operation=stats)
    metrics.enabled = False
    guarded()
    metrics.enabled = True
    guarded()
    assert stats.snapshot()["successes"] == 1


def test_a_decorated_function_follows_the_switch_at_call_time() -> None:
    operation = unique("decorated_while_off")
    metrics.set_enabled(False)

    @metrics.track_latency(operation)
    def work() -> None:
        pass

    work()
    metrics.set_enabled(True)
    work()
    assert histogram_count(operation) == 1


def test_enabled_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="enabled"):
        metrics.set_enabled("no")  # type: ignore[arg-type]


def test_new_operations_past_the_bound_fold_into_other_and_are_counted() -> None:
    metrics.configure(max_series_per_family=len(_instances.operations) + 2)
    names = [unique("generated") for _ in range(5)]
    for name in names:
        metrics.record_operation_success(name)
    operations = metrics.get_summary()["operations"]
    assert [name in operations for name in names] == [True, True, False, False, False]
    assert operations["other"]["successes"] >= 3
    # (error types folded natively, by other tests' operations, are counted beside it)
    assert metrics.get_summary()["folded_label_values"]["request_duration_seconds"] == 3


def test_reported_label_values_past_the_bound_fold_into_other() -> None:
    own = Metrics()
    own.configure(max_series_per_family=2)
    reported = [f"limiter-{i}-{id(_names)}" for i in range(4)]
    for name in reported:
        own.record_rate_limit_hit(name, "x")
    summary = own.get_summary()
    limiters = summary["rate_limiters"]
    # The bound covers the live limiters of other tests too: two names, and "other".
    assert len(limiters) == 3 and "other" in limiters
    assert not set(reported[2:]) & set(limiters)
    assert sum(bucket["requests"] for bucket in limiters["other"].values()) >= 2
    assert summary["folded_label_values"]["rate_limit_hits"] >= 2


def test_an_empty_operation_name_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="operation must be a non-empty str"):
        metrics.track_latency("")


def test_configure_applies_nothing_when_one_setting_is_wrong() -> None:
    with pytest.raises(ValueError, match="max_series_per_family"):
        metrics.configure(prefix="desk7", max_series_per_family=0)
    assert metrics.prefix == "peak_trade"


def test_configure_turns_metrics_off_and_renames_the_families(tmp_path: Path) -> None:
    from peak_resilience import config
    from peak_resilience._config.active import _swap
    from peak_resilience.metrics import metrics

    path = tmp_path / "config.toml"
    path.write_text('[resilience]\nmetrics_enabled = false\nmetrics_prefix = "desk_a"\n')
    previous = config.current()
    try:
        config.configure(path, environ={})
        assert metrics.enabled is False
        assert metrics.prefix == "desk_a"
    finally:
        _swap(previous)
        metrics.configure(enabled=True, prefix="peak_trade")


def test_a_failure_type_created_and_freed_is_never_counted_under_another_types_name() -> None:
    # Types made at run time and dropped: CPython allocates the next one where the last
    # one was, and a failure table keyed by the type's address counted all twelve as
    # "Dynamic0".
    from peak_resilience.resilience_helpers import with_resilience

    current: list[type[Exception]] = []

    @with_resilience(unique("dynamic"), "op", use_circuit_breaker=False)
    def call() -> None:
        raise current[0]()

    for i in range(12):
        current[:] = [type(f"Dynamic{i}", (Exception,), {})]
        with contextlib.suppress(Exception):
            call()
        current.clear()
        gc.collect()
    operations = metrics.get_summary()["operations"]
    (failures,) = [v["failures_by_type"] for k, v in operations.items() if "dynamic" in k]
    assert failures == {f"Dynamic{i}": 1 for i in range(12)}
