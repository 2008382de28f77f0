"""What recording costs per call: a guarded call with its operation's latency and outcome
recorded, the same with ``metrics_enabled = false``, and without an operation at all; then
``metrics.track_latency`` beside prometheus-client's ``Histogram.time()``, and
``record_operation_failure`` beside a labelled prometheus-client ``Counter.inc()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from peak_resilience import _instances
from peak_resilience._guard import guard
from peak_resilience.metrics import metrics


def noop() -> None:
    return None


@pytest.fixture
def recording_off() -> Iterator[None]:
    metrics.set_enabled(False)
    yield
    metrics.set_enabled(True)


# --- a guarded call, recording on / off / absent ------------------------------------------


@pytest.mark.benchmark(group="recording")
def test_ours_guarded_call_recording(benchmark: Any) -> None:
    benchmark(guard(noop, operation=_instances.operation("bench-recording")))


@pytest.mark.benchmark(group="recording")
def test_ours_guarded_call_recording_off(benchmark: Any, recording_off: None) -> None:
    benchmark(guard(noop, operation=_instances.operation("bench-recording-off")))


@pytest.mark.benchmark(group="recording")
def test_floor_guarded_call_without_operation(benchmark: Any) -> None:
    benchmark(guard(noop))


# --- timing a block -------------------------------------------------------------------


def timed_block_ours() -> None:
    with metrics.track_latency("bench-track-latency"):
        pass


@pytest.mark.benchmark(group="track_latency")
def test_ours_track_latency(benchmark: Any) -> None:
    benchmark(timed_block_ours)


@pytest.mark.benchmark(group="track_latency")
def test_ours_track_latency_off(benchmark: Any, recording_off: None) -> None:
    benchmark(timed_block_ours)


@pytest.mark.benchmark(group="track_latency")
def test_prometheus_client_histogram_time(benchmark: Any) -> None:
    histogram = Histogram("bench_seconds", "peer", ["operation"], registry=CollectorRegistry())

    def timed_block() -> None:
        with histogram.labels("bench-track-latency").time():
            pass

    benchmark(timed_block)


# --- counting a failure -----------------------------------------------------------------


@pytest.mark.benchmark(group="record_failure")
def test_ours_record_operation_failure(benchmark: Any) -> None:
    benchmark(metrics.record_operation_failure, "bench-failures", "ValueError")


@pytest.mark.benchmark(group="record_failure")
def test_prometheus_client_counter_inc(benchmark: Any) -> None:
    counter = Counter(
        "bench_failures", "peer", ["operation", "error_type"], registry=CollectorRegistry()
    )
    benchmark(lambda: counter.labels("bench-failures", "ValueError").inc())
