"""The prometheus-client collector: our families, read at scrape time.

Registered into a ``CollectorRegistry`` (prometheus-client's default one on import of the
recorder) by the ``metrics`` object, whose readings it turns into families.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from peak_resilience._health import HealthCheckRegistry, health_check
from peak_resilience._metrics.families import FAMILIES, LE_LABELS
from peak_resilience._metrics.readings import Readings

__all__ = ["Collector", "Source"]


class Source(Protocol):
    """What the collector reads: the ``metrics`` object's prefix and readings."""

    @property
    def prefix(self) -> str: ...
    def read(self, *, health: HealthCheckRegistry | None = None) -> Readings: ...


def _sample(name: str, labels: dict[str, str], value: float) -> Sample:
    # Sample's NamedTuple constructor with its defaults costs several times this; a scrape
    # of thousands of series spends most of its time here.
    return tuple.__new__(Sample, (name, labels, value, None, None, None))


class Collector:
    """Registered into a prometheus-client ``CollectorRegistry`` by ``metrics``."""

    def __init__(self, metrics: Source) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        """The families, without samples: lets a registry check names without a scrape."""
        prefix = self._metrics.prefix
        return [Metric(f"{prefix}_{suffix}", doc, kind) for suffix, kind, doc in FAMILIES]

    def collect(self) -> list[Metric]:
        """Every family with its samples, read now."""
        readings = self._metrics.read(health=health_check)
        (
            state,
            failures,
            changes,
            refusals,
            hits,
            rejections,
            tokens,
            duration,
            op_failures,
            op_successes,
            health,
            folded,
            backend_errors,
            shadow_state,
            would_reject,
            slow_calls,
            window_tokens,
            paused,
            retries,
            bulkhead_in_flight,
            bulkhead_rejections,
            timeouts,
        ) = families = self.describe()
        n = state.name
        state.samples = [_sample(n, {"name": k}, v) for k, v in readings.breaker_states.items()]
        n = failures.name + "_total"
        failures.samples = [
            _sample(n, {"name": k}, v) for k, v in readings.breaker_failures.items()
        ]
        n = changes.name + "_total"
        changes.samples = [
            _sample(n, {"name": k[0], "from_state": k[1], "to_state": k[2]}, v)
            for k, v in readings.state_changes.items()
        ]
        n = refusals.name + "_total"
        refusals.samples = [
            _sample(n, {"name": k}, v) for k, v in readings.breaker_rejections.items()
        ]
        n = hits.name + "_total"
        hits.samples = [
            _sample(n, {"limiter": k[0], "endpoint": k[1]}, v) for k, v in readings.requests.items()
        ]
        n = rejections.name + "_total"
        rejections.samples = [
            _sample(n, {"limiter": k[0], "endpoint": k[1]}, v)
            for k, v in readings.rejections.items()
        ]
        n = tokens.name
        tokens.samples = [
            _sample(n, {"limiter": k[0], "endpoint": k[1]}, v) for k, v in readings.tokens.items()
        ]
        bucket_name, count_name, sum_name = (
            duration.name + "_bucket",
            duration.name + "_count",
            duration.name + "_sum",
        )
        histogram = duration.samples
        for operation, snap in readings.operations.items():
            cumulative: list[int] = snap["buckets"]
            histogram.extend(
                _sample(bucket_name, {"operation": operation, "le": le}, count)
                for le, count in zip(LE_LABELS, cumulative, strict=True)
            )
            histogram.append(_sample(count_name, {"operation": operation}, cumulative[-1]))
            seconds: float = snap["sum"]
            histogram.append(_sample(sum_name, {"operation": operation}, seconds))
        n = op_failures.name + "_total"
        op_failures.samples = [
            _sample(n, {"operation": operation, "error_type": error_type}, count)
            for operation, snap in readings.operations.items()
            for error_type, count in snap["failures"].items()
        ]
        n = op_successes.name + "_total"
        op_successes.samples = [
            _sample(n, {"operation": operation}, snap["successes"])
            for operation, snap in readings.operations.items()
        ]
        n = health.name
        health.samples = [
            _sample(n, {"check": k, "critical": str(critical).lower()}, int(ok))
            for k, (ok, critical) in readings.health.items()
        ]
        n = folded.name + "_total"
        folded.samples = [_sample(n, {"family": k}, v) for k, v in readings.folded.items()]
        n = backend_errors.name + "_total"
        backend_errors.samples = [
            _sample(n, {"backend": k}, v) for k, v in readings.backend_errors.items()
        ]
        n = shadow_state.name
        shadow_state.samples = [
            _sample(n, {"name": k}, v) for k, v in readings.breaker_shadow_states.items()
        ]
        n = would_reject.name + "_total"
        would_reject.samples = [
            _sample(n, {"name": k}, v) for k, v in readings.breaker_would_reject.items()
        ]
        n = slow_calls.name + "_total"
        slow_calls.samples = [
            _sample(n, {"name": k}, v) for k, v in readings.breaker_slow_calls.items()
        ]
        n = window_tokens.name
        window_tokens.samples = [
            _sample(n, {"limiter": k[0], "endpoint": k[1], "window": k[2]}, v)
            for k, v in readings.window_tokens.items()
        ]
        n = paused.name
        paused.samples = [_sample(n, {"limiter": k}, v) for k, v in readings.paused.items()]
        n = retries.name + "_total"
        retries.samples = [_sample(n, {"operation": k}, v) for k, v in readings.retries.items()]
        n = bulkhead_in_flight.name
        bulkhead_in_flight.samples = [
            _sample(n, {"name": k}, v) for k, v in readings.bulkhead_in_flight.items()
        ]
        n = bulkhead_rejections.name + "_total"
        bulkhead_rejections.samples = [
            _sample(n, {"name": k}, v) for k, v in readings.bulkhead_rejections.items()
        ]
        n = timeouts.name + "_total"
        timeouts.samples = [_sample(n, {"operation": k}, v) for k, v in readings.timeouts.items()]
        return families
