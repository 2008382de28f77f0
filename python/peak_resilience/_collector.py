"""The prometheus-client collector: reads the native counters at scrape time.

Nothing per call goes through prometheus-client. A scrape walks the live breakers and
limiters (weakly held, so a dropped one disappears) and the operation registry, reads
their atomics, merges what explicit ``metrics.record_*`` calls reported, and builds the
families. Several objects may share a name: counters are then summed, the state gauge
shows the worst state and the tokens gauge the emptiest bucket.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from peak_resilience import _backends, _instances
from peak_resilience._health import health_check
from peak_resilience._native import LATENCY_BOUNDS

if TYPE_CHECKING:
    from peak_resilience.metrics import Metrics

#: The label value that label values past the per-family bound are counted under.
OTHER = "other"

_STATE_LABELS = ("closed", "half_open", "open", "forced_open", "disabled", "metrics_only")
#: Which state a name shows when several objects share it: the one that refuses most.
_SEVERITY = (0, 4, 5, 6, 1, 3)
#: (from, to, exported even at zero). The normal cycle is always exported, so that the
#: first transition is seen by ``increase()``; forced ones (reset, force_open) appear
#: once they happened.
_TRANSITIONS = (
    (0, 2, True),
    (2, 1, True),
    (1, 0, True),
    (1, 2, True),
    (2, 0, False),
    (0, 1, False),
)
LE_LABELS = (*(repr(bound) for bound in LATENCY_BOUNDS), "+Inf")

#: (suffix, type, help). Counter names are given without "_total", as prometheus-client
#: wants them; the samples carry it.
FAMILIES = (
    (
        "circuit_breaker_state",
        "gauge",
        "Current circuit breaker state (0=closed, 1=half_open, 2=open, 3=forced_open, "
        "4=disabled, 5=metrics_only)",
    ),
    ("circuit_breaker_failures", "counter", "Failures recorded by the circuit breaker"),
    ("circuit_breaker_state_changes", "counter", "Circuit breaker state transitions"),
    ("rate_limit_hits", "counter", "Requests to the rate limiter, allowed and rejected"),
    ("rate_limit_rejections", "counter", "Requests rejected by the rate limiter"),
    ("rate_limit_tokens_available", "gauge", "Tokens available in the rate limiter's bucket"),
    ("request_duration_seconds", "histogram", "Operation latency in seconds"),
    ("operation_failures", "counter", "Failed operations by exception type"),
    ("operation_successes", "counter", "Successful operations"),
    ("health_check_status", "gauge", "Health check outcome (1 healthy, 0 failing)"),
    (
        "metrics_label_values_folded",
        "counter",
        'Label values counted as "other" because their family had reached its bound',
    ),
    (
        "backend_errors",
        "counter",
        "Calls to a shared backend (Redis) that failed: unreachable or timed out",
    ),
    # Issue 8, circuit breaking: exported for the breakers that use the feature.
    (
        "circuit_breaker_shadow_state",
        "gauge",
        "State the breaker's machine is in while in metrics_only mode (0=closed, "
        "1=half_open, 2=open)",
    ),
    (
        "circuit_breaker_would_reject",
        "counter",
        "Calls a metrics_only breaker let through that it would have refused",
    ),
    (
        "circuit_breaker_slow_calls",
        "counter",
        "Successful calls counted as failures for lasting slow_call_duration or longer",
    ),
    # Issue 8 (rate limiting).
    (
        "rate_limit_window_tokens_available",
        "gauge",
        "Tokens available in each window of a rate limiter's bucket of several windows",
    ),
    (
        "rate_limit_paused_seconds",
        "gauge",
        "Seconds a paused rate limiter still refuses every request (0: not paused)",
    ),
)

T = TypeVar("T")


def _alive(objects: Iterable[T]) -> list[T]:
    # A breaker created on another thread mid-iteration makes a WeakSet raise; try again.
    for _ in range(16):
        try:
            return list(objects)
        except RuntimeError:
            continue
    return list(objects)


def _quantile(q: float, cumulative: list[int]) -> float | None:
    """The q-quantile estimated from the histogram as Prometheus' histogram_quantile does:
    linear within the bucket; a rank in the +Inf bucket reads as the highest bound."""
    count = cumulative[-1]
    if count == 0:
        return None
    rank = q * count
    lower, below = 0.0, 0
    for bound, seen in zip(LATENCY_BOUNDS, cumulative, strict=False):
        if seen >= rank:
            in_bucket = seen - below
            return lower + (bound - lower) * ((rank - below) / in_bucket if in_bucket else 1.0)
        lower, below = bound, seen
    return LATENCY_BOUNDS[-1]


@dataclass(frozen=True)
class Readings:
    """Every exported value at one instant, keyed by label values."""

    breaker_states: dict[str, int]
    breaker_failures: dict[str, int]
    state_changes: dict[tuple[str, str, str], int]
    requests: dict[tuple[str, str], int]
    rejections: dict[tuple[str, str], int]
    tokens: dict[tuple[str, str], float]
    operations: dict[str, dict[str, Any]]
    folded: dict[str, int]
    #: Each health check's outcome (True healthy); empty when the read skipped them.
    health: dict[str, bool]
    #: Failed backend calls by backend (``{"redis": n}``, once a Redis object exists).
    backend_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    #: The machine's own state of breakers in metrics_only mode.
    breaker_shadow_states: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Would-be refusals of breakers that are (or were) in metrics_only mode.
    breaker_would_reject: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Slow calls of breakers with a slow_call_duration (or that counted some).
    breaker_slow_calls: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Tokens per window of the buckets of several windows: (limiter, endpoint, window).
    window_tokens: dict[tuple[str, str, str], float] = dataclasses.field(default_factory=dict)
    #: Seconds each limiter stays paused (0.0 when it is not).
    paused: dict[str, float] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON form: breakers, limiters by endpoint, operations with latency."""
        breakers: dict[str, dict[str, Any]] = {}
        for name, code in self.breaker_states.items():
            breakers[name] = {
                "state": _STATE_LABELS[code],
                "state_code": code,
                "failures": self.breaker_failures.get(name, 0),
                "state_changes": {},
            }
            if name in self.breaker_shadow_states:
                breakers[name]["shadow_state"] = _STATE_LABELS[self.breaker_shadow_states[name]]
            if name in self.breaker_would_reject:
                breakers[name]["would_reject"] = self.breaker_would_reject[name]
            if name in self.breaker_slow_calls:
                breakers[name]["slow_calls"] = self.breaker_slow_calls[name]
        for (name, before, after), count in self.state_changes.items():
            entry = breakers.setdefault(
                name, {"state": None, "state_code": None, "failures": 0, "state_changes": {}}
            )
            if count:
                entry["state_changes"][f"{before}->{after}"] = count
        limiters: dict[str, dict[str, dict[str, Any]]] = {}
        for (name, endpoint), requests in self.requests.items():
            rejected = self.rejections.get((name, endpoint), 0)
            limiters.setdefault(name, {})[endpoint] = {
                "requests": requests,
                "rejections": rejected,
                "rejection_rate": rejected / requests if requests else 0.0,
                "tokens_available": self.tokens.get((name, endpoint)),
            }
        for (name, endpoint, window), available in self.window_tokens.items():
            bucket = limiters.get(name, {}).get(endpoint)
            if bucket is not None:
                bucket.setdefault("windows", {})[window] = available
        for name, paused in self.paused.items():
            for entry in limiters.get(name, {}).values():
                entry["paused_seconds"] = paused
        operations: dict[str, dict[str, Any]] = {}
        for name, snap in self.operations.items():
            cumulative: list[int] = snap["buckets"]
            count = cumulative[-1]
            failures: dict[str, int] = snap["failures"]
            operations[name] = {
                "count": count,
                "successes": snap["successes"],
                "failures": sum(failures.values()),
                "failures_by_type": dict(failures),
                "latency_seconds": {
                    "sum": snap["sum"],
                    "mean": snap["sum"] / count if count else None,
                    "p50": _quantile(0.50, cumulative),
                    "p95": _quantile(0.95, cumulative),
                    "p99": _quantile(0.99, cumulative),
                },
            }
        return {
            "circuit_breakers": breakers,
            "rate_limiters": limiters,
            "operations": operations,
            "folded_label_values": dict(self.folded),
            "backend_errors": dict(self.backend_errors),
        }


def read(
    reported_transitions: dict[tuple[str, str, str], int],
    reported_states: dict[str, int],
    reported_hits: dict[tuple[str, str], int],
    reported_rejections: dict[tuple[str, str], int],
    folded: dict[str, int],
    health: dict[str, bool],
) -> Readings:
    """Reads every live breaker, limiter and operation, merged with what was reported."""
    states: dict[str, int] = {}
    failures: dict[str, int] = {}
    changes = dict(reported_transitions)
    shadow_states: dict[str, int] = {}
    would_reject: dict[str, int] = {}
    slow_calls: dict[str, int] = {}
    shared_breakers: set[Any] = set()
    for breaker in _alive(_instances.breakers):
        name = breaker.name
        code = breaker.state_code  # HALF_OPEN once the recovery timeout has passed
        if _SEVERITY[code] >= _SEVERITY[states.get(name, code)]:
            states[name] = code
        metrics_only = code == 5
        if metrics_only:
            shadow = breaker.shadow_state_code
            shadow_states[name] = max(shadow, shadow_states.get(name, shadow))
        shared_file = breaker.shared_path
        if shared_file is not None:
            if shared_file in shared_breakers:
                continue  # the host's counts, already read through another object
            shared_breakers.add(shared_file)
        failures[name] = failures.get(name, 0) + breaker.failure_total
        counts = breaker.transition_counts()
        for before, after, always in _TRANSITIONS:
            count = counts.pop((before, after), 0)
            if count or always:
                key = (name, _STATE_LABELS[before], _STATE_LABELS[after])
                changes[key] = changes.get(key, 0) + count
        for (before, after), count in counts.items():  # manual states: once they happened
            key = (name, _STATE_LABELS[before], _STATE_LABELS[after])
            changes[key] = changes.get(key, 0) + count
        rejected_in_shadow = breaker.would_reject_total
        if metrics_only or rejected_in_shadow:
            would_reject[name] = would_reject.get(name, 0) + rejected_in_shadow
        slow = breaker.slow_call_total
        if slow or breaker.slow_call_duration is not None:
            slow_calls[name] = slow_calls.get(name, 0) + slow
    for name, code in reported_states.items():
        states.setdefault(name, code)

    requests: dict[tuple[str, str], int] = {}
    rejections: dict[tuple[str, str], int] = {}
    tokens: dict[tuple[str, str], float] = {}
    window_tokens: dict[tuple[str, str, str], float] = {}
    paused: dict[str, float] = {}
    shared_files: set[Any] = set()
    for limiter in _alive(_instances.limiters):
        name = limiter.name
        for endpoint, allowed, rejected, available, shared_file, extra in limiter._export():
            bucket_key = (name, endpoint)
            tokens[bucket_key] = min(available, tokens.get(bucket_key, available))
            pause, windows = extra
            paused[name] = max(pause, paused.get(name, pause))
            for window, level in windows:
                window_key = (name, endpoint, window)
                window_tokens[window_key] = min(level, window_tokens.get(window_key, level))
            if shared_file is not None:
                if shared_file in shared_files:
                    continue  # the host's counts, already read through another object
                shared_files.add(shared_file)
            requests[bucket_key] = requests.get(bucket_key, 0) + allowed + rejected
            rejections[bucket_key] = rejections.get(bucket_key, 0) + rejected
    for bucket_key, hits in reported_hits.items():
        requests[bucket_key] = requests.get(bucket_key, 0) + hits
        rejected = reported_rejections.get(bucket_key, 0)
        rejections[bucket_key] = rejections.get(bucket_key, 0) + rejected

    operations = {name: stats.snapshot() for name, stats in dict(_instances.operations).items()}
    return Readings(
        states,
        failures,
        changes,
        requests,
        rejections,
        tokens,
        operations,
        folded,
        health,
        _backends.backend_error_counts(),
        shadow_states,
        would_reject,
        slow_calls,
        window_tokens,
        paused,
    )


def _sample(name: str, labels: dict[str, str], value: float) -> Sample:
    # Sample's NamedTuple constructor with its defaults costs several times this; a scrape
    # of thousands of series spends most of its time here.
    return tuple.__new__(Sample, (name, labels, value, None, None, None))


class Collector:
    """Registered into a prometheus-client ``CollectorRegistry`` by ``metrics``."""

    def __init__(self, metrics: Metrics) -> None:
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
            _sample(n, {"check": k}, 1 if ok else 0) for k, ok in readings.health.items()
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
        return families
