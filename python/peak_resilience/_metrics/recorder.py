"""The guide's ``metrics`` object: latency, outcomes, breaker and limiter counters.

Re-exported as ``peak_resilience.metrics.metrics`` (the guide's
``from src.core.metrics import metrics``).

Every guarded call already counts itself natively (breaker and bucket counters, the
operation's latency histogram); the ``metrics`` object adds the guide's explicit
``record_*`` calls, a ring buffer of recent events, a JSON summary, and the Prometheus
collector that reads all of it at scrape time. Nothing per call goes through
prometheus-client, so no gauge can go stale.

Importing this module is what makes metrics independent of what else a process imports:
it builds the one ``metrics`` object, registers its collector into prometheus-client's
default registry, follows ``configure()`` (``metrics_enabled``, ``metrics_prefix``) and
adds the "metrics" health check. The breaker imports it to put every transition in the
event ring, so it is in place before the first breaker exists.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from prometheus_client import REGISTRY, CollectorRegistry

from peak_resilience import _instances, _native
from peak_resilience._bucket_series import series as bucket_series
from peak_resilience._circuit import CircuitState
from peak_resilience._config.active import add_listener, current
from peak_resilience._config.load import Config
from peak_resilience._fork import after_fork_in_child
from peak_resilience._health import HealthCheckRegistry, health_check
from peak_resilience._labels import label_value as _non_empty
from peak_resilience._metrics.bound import ObjectNames
from peak_resilience._metrics.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    render,
    wants_openmetrics,
)
from peak_resilience._metrics.families import DEFAULT_PREFIX, OTHER, PREFIX_PATTERN
from peak_resilience._metrics.prometheus import Collector
from peak_resilience._metrics.readings import Readings, read
from peak_resilience._native import OperationStats

__all__ = [
    "DEFAULT_MAX_SERIES",
    "DEFAULT_PREFIX",
    "DEFAULT_SNAPSHOT_CAPACITY",
    "LatencyTracker",
    "Metrics",
    "check_metrics",
    "metrics",
]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("peak_resilience.metrics")

#: Distinct label values a family takes from explicit calls before new ones fold into
#: "other": a typo'd or generated name in a loop must not grow memory without bound.
DEFAULT_MAX_SERIES = 1000
DEFAULT_SNAPSHOT_CAPACITY = 1000

_STATES_BY_NAME = {state.name.lower(): state for state in CircuitState}


def _circuit_state(value: object, argument: str) -> CircuitState:
    """A state given by its name ("closed", "half_open", "open", "forced_open", "disabled",
    "metrics_only"; any case, "-" for "_") or as a CircuitState."""
    if isinstance(value, CircuitState):
        return value
    if isinstance(value, str):
        state = _STATES_BY_NAME.get(value.strip().lower().replace("-", "_"))
        if state is not None:
            return state
    raise ValueError(
        f"{argument} must be a CircuitState or one of its names "
        f"({', '.join(repr(name) for name in _STATES_BY_NAME)}), got {value!r}"
    )


def _valid_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(
            f"metrics prefix must be a Prometheus metric name ({PREFIX_PATTERN.pattern}), "
            f"got {prefix!r}"
        )
    return prefix


def _positive_int(value: object, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be a positive int, got {value!r}")
    return value


class LatencyTracker:
    """What ``metrics.track_latency(operation)`` returns: a context manager (sync or async)
    and a decorator (sync or async functions).

    It records the duration and the outcome, as a guarded call does: a success, or a
    failure counted by exception type (which reaches the caller unchanged). Exceptions
    that are not ``Exception`` (KeyboardInterrupt, CancelledError) are not recorded.
    """

    __slots__ = ("_metrics", "_operation", "_started")

    def __init__(self, metrics: Metrics, operation: str) -> None:
        self._metrics = metrics
        self._operation = operation
        self._started: float | None = None

    def __enter__(self) -> LatencyTracker:
        self._started = time.perf_counter() if self._metrics.enabled else None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        started, self._started = self._started, None
        if started is not None:
            self._metrics._record_call(self._operation, time.perf_counter() - started, exc_type)

    async def __aenter__(self) -> LatencyTracker:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """As a decorator: times every call of ``func`` (the switch is read per call)."""
        metrics, operation = self._metrics, self._operation
        if inspect.iscoroutinefunction(func):
            async_func = cast("Callable[..., Awaitable[Any]]", func)

            @functools.wraps(func)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                async with LatencyTracker(metrics, operation):
                    return await async_func(*args, **kwargs)

            return cast("Callable[P, R]", timed_async)

        @functools.wraps(func)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            with LatencyTracker(metrics, operation):
                return func(*args, **kwargs)

        return timed


class Metrics:
    """The process-wide metrics: the guide's ``metrics`` object.

    ``enabled`` (config ``metrics_enabled``) switches all recording, native included, on
    or off; ``prefix`` (config ``metrics_prefix``, default ``peak_trade``) starts every
    family name; ``max_series_per_family`` bounds the label values of each family, those
    explicit calls create and the names of live breakers, limiters and bulkheads alike.
    """

    def __init__(self) -> None:
        self._enabled = True
        self._prefix = DEFAULT_PREFIX
        self._max_series = DEFAULT_MAX_SERIES
        self._lock = threading.Lock()
        self._events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=DEFAULT_SNAPSHOT_CAPACITY
        )
        self._events_lock = threading.Lock()
        # What explicit record_* calls reported, merged with the native counters on export.
        self._reported_transitions: dict[tuple[str, str, str], int] = {}
        self._reported_states: dict[str, int] = {}
        self._reported_hits: dict[tuple[str, str], int] = {}
        self._reported_rejections: dict[tuple[str, str], int] = {}
        self._folded: dict[str, int] = {}
        #: The names of constructed objects each scrape exports, bounded like the above
        #: (None: not bounded).
        self._object_names: ObjectNames | None = ObjectNames()
        self._collector = Collector(self)
        self._registries: list[CollectorRegistry] = []
        #: The exception type of the last failed read (scrape or summary), None after a
        #: good one: the metrics health check reports it.
        self.last_read_error: str | None = None

    # -- switches ------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded (guarded calls, ``track_latency``, ``record_*``)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.set_enabled(value)

    def set_enabled(self, enabled: bool) -> None:
        """Turns recording on or off, process-wide (the config's ``metrics_enabled``).

        Off, a guarded call skips its clock reads and counters and ``record_*`` returns at
        once; breaker and limiter state, which is not recording, is still exported.
        """
        if not isinstance(enabled, bool):
            raise ValueError(f"metrics enabled must be a bool, got {enabled!r}")
        self._enabled = enabled
        _native.set_recording_enabled(enabled)

    @property
    def prefix(self) -> str:
        """The start of every family name (``peak_trade`` unless configured)."""
        return self._prefix

    def set_prefix(self, prefix: str) -> None:
        """Renames every family to start with ``prefix`` (config ``metrics_prefix``)."""
        _valid_prefix(prefix)
        with self._lock:
            registries = list(self._registries)
            for registry in registries:
                registry.unregister(self._collector)
            self._prefix = prefix
            # Registering again re-reads the names, so duplicate detection sees the new ones.
            for registry in registries:
                registry.register(self._collector)

    @property
    def max_series_per_family(self) -> int:
        """Label values a family exports (from explicit calls, or the names of live objects)
        before new ones are folded into "other"."""
        return self._max_series

    def configure(
        self,
        *,
        enabled: bool | None = None,
        prefix: str | None = None,
        max_series_per_family: int | None = None,
        snapshot_capacity: int | None = None,
    ) -> None:
        """Sets any of the switches at once (the config loader calls this); all are
        checked before any is applied."""
        if prefix is not None:
            _valid_prefix(prefix)
        if enabled is not None and not isinstance(enabled, bool):
            raise ValueError(f"metrics enabled must be a bool, got {enabled!r}")
        if max_series_per_family is not None:
            _positive_int(max_series_per_family, "max_series_per_family")
        if snapshot_capacity is not None:
            _positive_int(snapshot_capacity, "snapshot_capacity")
        if max_series_per_family is not None:
            self._max_series = max_series_per_family
            bucket_series.bound = max_series_per_family
        if snapshot_capacity is not None:
            capacity = snapshot_capacity
            with self._events_lock:
                self._events = collections.deque(self._events, maxlen=capacity)
        if prefix is not None and prefix != self._prefix:
            self.set_prefix(prefix)
        if enabled is not None:
            self.set_enabled(enabled)

    def follow(self, enabled: bool, prefix: str) -> None:
        """The configuration's switches: ``[resilience] metrics_enabled`` for explicit
        calls (``record_*``, ``track_latency``); a guarded function follows its own
        module's ``metrics_enabled`` (set on its operation by the module registry), so
        the process-wide native switch stays on."""
        self.configure(prefix=prefix)
        self._enabled = enabled
        _native.set_recording_enabled(True)

    # -- Prometheus ----------------------------------------------------------------------

    @property
    def collector(self) -> Collector:
        """The prometheus-client collector that reads every counter at scrape time."""
        return self._collector

    def register_collector(self, registry: CollectorRegistry | None = None) -> None:
        """Exports our families from ``registry`` (default: prometheus-client's global
        one, which ``prometheus_client.start_http_server`` serves). Done for the global
        registry on import; a second registration of the same registry is a no-op."""
        registry = REGISTRY if registry is None else registry
        with self._lock:
            if any(r is registry for r in self._registries):
                return
            registry.register(self._collector)
            self._registries.append(registry)

    def unregister_collector(self, registry: CollectorRegistry | None = None) -> None:
        """Stops exporting from ``registry`` (default: the global one)."""
        registry = REGISTRY if registry is None else registry
        with self._lock:
            if any(r is registry for r in self._registries):
                registry.unregister(self._collector)
                self._registries = [r for r in self._registries if r is not registry]

    def exposition(
        self, accept: str | None = None, *, checks: HealthCheckRegistry | None = None
    ) -> tuple[bytes, str]:
        """Our families as (body, content type): OpenMetrics 1.0.0 when the Accept header
        ``accept`` asks for ``application/openmetrics-text``, else the Prometheus text
        format 0.0.4. Written directly (not through prometheus-client, which takes ~7 us
        a sample), with the same content as the collector's. Runs the health checks of
        ``checks`` (default: the process-wide ones) for ``..._health_check_status``."""
        readings = self.read(health=health_check if checks is None else checks)
        if wants_openmetrics(accept):
            return render(readings, self._prefix, openmetrics=True), OPENMETRICS_CONTENT_TYPE
        return render(readings, self._prefix), TEXT_CONTENT_TYPE

    # -- recording -----------------------------------------------------------------------

    def track_latency(self, operation: str) -> LatencyTracker:
        """Times a block (``with``/``async with``) or every call of a function (as a
        decorator) into ``..._request_duration_seconds{operation}``, and counts its
        outcome."""
        return LatencyTracker(self, _non_empty(operation, "operation"))

    def record_operation_success(self, operation: str) -> None:
        """Counts one success of ``operation``."""
        _non_empty(operation, "operation")
        if self._enabled:
            self._operation(operation).record_success()

    def record_operation_failure(self, operation: str, error_type: str) -> None:
        """Counts one failure of ``operation`` by ``error_type`` (e.g. "ValueError")."""
        _non_empty(operation, "operation")
        _non_empty(error_type, "error_type")
        if self._enabled:
            self._operation(operation).record_failure(error_type)
            self._event("operation_failure", operation=operation, error_type=error_type)

    def record_circuit_breaker_state_change(
        self, name: str, from_state: str | CircuitState, to_state: str | CircuitState
    ) -> None:
        """Reports a transition of a breaker that this package does not run itself (ours
        count theirs natively). It is counted in ``..._state_changes_total``; if no live
        breaker has this name, ``..._circuit_breaker_state{name}`` shows ``to_state``."""
        _non_empty(name, "name")
        before = _circuit_state(from_state, "from_state")
        after = _circuit_state(to_state, "to_state")
        if not self._enabled:
            return
        from_label, to_label = before.name.lower(), after.name.lower()
        with self._lock:
            key = self._bounded(
                self._reported_transitions,
                (name, from_label, to_label),
                (OTHER, from_label, to_label),
                "circuit_breaker_state_changes",
            )
            self._reported_transitions[key] = self._reported_transitions.get(key, 0) + 1
            if name in self._reported_states or len(self._reported_states) < self._max_series:
                self._reported_states[name] = int(after)
        self._event(
            "circuit_breaker_state_change", name=name, from_state=from_label, to_state=to_label
        )

    def record_rate_limit_hit(
        self, limiter: str, endpoint: str | None = None, *, rejected: bool = False
    ) -> None:
        """Counts one request to ``limiter``'s ``endpoint`` (None: "default") in
        ``..._rate_limit_hits_total``; ``rejected=True`` also counts it in
        ``..._rate_limit_rejections_total`` and keeps it as an event. Our own limiters
        count theirs natively; this is for limits enforced elsewhere."""
        _non_empty(limiter, "limiter")
        endpoint = "default" if endpoint is None else _non_empty(endpoint, "endpoint")
        if not self._enabled:
            return
        with self._lock:
            key = self._bounded(
                self._reported_hits,
                (limiter, endpoint),
                (OTHER, OTHER),
                "rate_limit_hits",
            )
            self._reported_hits[key] = self._reported_hits.get(key, 0) + 1
            if rejected:
                self._reported_rejections[key] = self._reported_rejections.get(key, 0) + 1
        if rejected:
            self._event("rate_limit_rejection", limiter=limiter, endpoint=endpoint)

    def _record_call(
        self, operation: str, seconds: float, exc_type: type[BaseException] | None
    ) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            return  # KeyboardInterrupt & co. count neither way, as in a guarded call.
        stats = self._operation(operation)
        stats.record_latency(seconds)
        if exc_type is None:
            stats.record_success()
        else:
            stats.record_failure(exc_type.__name__)
            self._event("operation_failure", operation=operation, error_type=exc_type.__name__)

    def _operation(self, name: str) -> OperationStats:
        stats = _instances.operations.get(name)
        if stats is not None:
            return stats
        if len(_instances.operations) >= self._max_series:
            with self._lock:
                self._fold("request_duration_seconds")
            name = OTHER
        return _instances.operation(name)

    def _bounded(self, table: dict[Any, int], key: Any, other: Any, family: str) -> Any:
        """``key``, or ``other`` once ``table`` holds the maximum of distinct keys.
        Called with the lock held."""
        if key in table or len(table) < self._max_series:
            return key
        self._fold(family)
        return other

    def _fold(self, family: str) -> None:
        if family not in self._folded:
            logger.warning(
                "metrics: family %s has %d label values; new ones are counted as %r",
                family,
                self._max_series,
                OTHER,
            )
        self._folded[family] = self._folded.get(family, 0) + 1

    # -- events --------------------------------------------------------------------------

    def _event(self, kind: str, **fields: str) -> None:
        # The time is read and the event appended under one lock: otherwise a writer
        # preempted between the two appends after a later one, and the ring is no longer
        # oldest-first. Events are rare (transitions, refusals, failures), never per call.
        with self._events_lock:
            self._events.append(
                {"event": kind, **fields, "monotonic": time.monotonic(), "timestamp": time.time()}
            )

    def _on_breaker_transition(
        self, name: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        # Called by every breaker of the package on every transition (_breaker).
        if self._enabled:
            self._event(
                "circuit_breaker_state_change",
                name=name,
                from_state=from_state.name.lower(),
                to_state=to_state.name.lower(),
            )

    def get_snapshots(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent events, oldest first, at most ``limit``: breaker state changes
        (every transition of every breaker), reported rejections and failures. Each has
        ``event``, its labels, ``monotonic`` (``time.monotonic()``) and ``timestamp``
        (Unix seconds)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        if limit == 0:
            return []
        with self._events_lock:
            events = list(self._events)
        return [dict(event) for event in events[-limit:]]

    # -- reading -------------------------------------------------------------------------

    def read(self, *, health: HealthCheckRegistry | None = None) -> Readings:
        """Every exported value, as the collector reads it at scrape time; with
        ``health``, that registry's checks are run too (a scrape does, the summary does
        not: a check may take up to its timeout)."""
        outcomes = (
            {}
            if health is None
            else {n: (r["healthy"], r["critical"]) for n, r in health.run_all().items()}
        )
        with self._lock:
            reported = (
                dict(self._reported_transitions),
                dict(self._reported_states),
                dict(self._reported_hits),
                dict(self._reported_rejections),
                dict(self._folded),
            )
        try:
            readings = read(*reported, outcomes, self._object_names, self._max_series)
        except Exception as exc:
            self.last_read_error = type(exc).__name__
            raise
        self.last_read_error = None
        return readings

    def get_summary(self) -> dict[str, Any]:
        """A JSON-ready summary of everything exported (what ``/health/metrics`` serves)."""
        summary = self.read().summary()
        summary.update(
            enabled=self._enabled,
            prefix=self._prefix,
            events_buffered=len(self._events),
        )
        return summary

    def reset(self) -> None:
        """Forgets what explicit calls reported and the buffered events (for tests);
        native counters belong to their breakers, limiters and operations."""
        with self._lock:
            self._reported_transitions.clear()
            self._reported_states.clear()
            self._reported_hits.clear()
            self._reported_rejections.clear()
            self._folded.clear()
            self._events.clear()
        if self._object_names is not None:
            self._object_names.clear()


#: The process-wide metrics object of the guide.
metrics = Metrics()
metrics.register_collector()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at the fork: it would stay held in
    # the child for ever. The counts themselves are the child's copy, like its budgets.
    metrics._lock = threading.Lock()
    metrics._events_lock = threading.Lock()
    metrics.last_read_error = None


after_fork_in_child(_after_fork_in_child)


class _FollowConfig:
    """Keeps the process-wide switch and the prefix in line with ``configure()``."""

    def check(self, new: Config) -> None:
        """Both keys are validated by the config loader: nothing more to refuse."""

    def apply(self, new: Config) -> None:
        metrics.follow(new.globals.metrics_enabled, new.globals.metrics_prefix)


add_listener(_FollowConfig())
if (_loaded := current()) is not None:
    _FollowConfig().apply(_loaded)


def check_metrics() -> tuple[bool, str]:
    """Built-in, not critical: metrics are recorded and the last scrape succeeded."""
    if not metrics.enabled:
        return True, "metrics recording is disabled (metrics_enabled = false)"
    error = metrics.last_read_error
    if error is not None:
        return False, f"the last metrics read failed: {error}"
    return True, f"recording; {len(_instances.operations)} operations tracked"


health_check.register("metrics", check_metrics, critical=False, timeout=2.0)
