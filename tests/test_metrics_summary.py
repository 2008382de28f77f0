"""The JSON summary's numbers are the ones that happened: exact counts, sum, min and max,
and quantiles (estimated from the buckets, and said to be) never outside [min, max]."""

from __future__ import annotations

import itertools

import pytest

from peak_resilience import _instances
from peak_resilience.metrics import metrics

_names = itertools.count()


def unique(stem: str) -> str:
    return f"{stem}-{next(_names)}-{id(_names)}"


def latency(operation: str) -> dict[str, float | bool | None]:
    summary: dict[str, float | bool | None] = metrics.get_summary()["operations"][operation][
        "latency_seconds"
    ]
    return summary


def test_one_call_of_10_1_ms_reads_10_1_ms_at_every_quantile() -> None:
    operation = unique("order")
    _instances.operation(operation).record_latency(0.0101)

    read = latency(operation)

    assert read["min"] == read["max"] == pytest.approx(0.0101)
    assert read["p50"] == read["p99"] == pytest.approx(0.0101)
    assert read["quantiles_estimated"] is False


def test_a_call_past_the_last_bucket_reads_its_own_length_not_the_bound() -> None:
    operation = unique("stuck")
    _instances.operation(operation).record_latency(30.0)

    read = latency(operation)

    assert read["p50"] == read["p99"] == read["max"] == pytest.approx(30.0)


def test_quantiles_never_leave_the_range_of_what_was_recorded() -> None:
    operation = unique("spread")
    stats = _instances.operation(operation)
    for seconds in (0.0101, 0.0102, 0.0103, 0.0104):  # all in the (10 ms, 25 ms] bucket
        stats.record_latency(seconds)

    read = latency(operation)

    assert read["min"] == pytest.approx(0.0101) and read["max"] == pytest.approx(0.0104)
    for q in ("p50", "p95", "p99"):
        assert read["min"] <= read[q] <= read["max"]  # type: ignore[operator]
    assert read["quantiles_estimated"] is True
    assert read["sum"] == pytest.approx(0.041)


def test_count_is_every_outcome_reported_even_without_a_latency() -> None:
    operation = unique("reported")
    for _ in range(3):
        metrics.record_operation_failure(operation, "TimeoutError")
    for _ in range(2):
        metrics.record_operation_success(operation)

    summary = metrics.get_summary()["operations"][operation]

    assert (summary["count"], summary["successes"], summary["failures"]) == (5, 2, 3)
    assert summary["latency_seconds"]["count"] == 0


def test_error_types_past_the_table_are_counted_as_folded_label_values() -> None:
    operation = unique("many_errors")
    before = metrics.get_summary()["folded_label_values"].get("operation_failures", 0)
    for i in range(40):  # the native table holds 32 types
        metrics.record_operation_failure(operation, f"Error{i}")

    summary = metrics.get_summary()

    assert summary["operations"][operation]["failures_by_type"]["other"] == 8
    assert summary["folded_label_values"]["operation_failures"] - before == 8
