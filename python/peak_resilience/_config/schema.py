"""The configuration's keys: one ``Settings`` field per key of ``[resilience]``.

A field's annotation is the key's type; ``key()`` gives its default, its check of the
value and whether ``[resilience.<module>]`` may override it. ``SCHEMA`` and ``DEFAULTS``
are read from the fields. ``Settings`` also gives the native breaker's policy keywords
(``parameters`` turns settings into what the objects are built with).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from peak_resilience._backends.choice import Backend, BulkheadBackend, OnBackendError
from peak_resilience._backends.redis.sentinel import sentinel_url
from peak_resilience._backends.shared import default_shared_dir
from peak_resilience._circuit import WindowType
from peak_resilience._config.exception_names import exception_names
from peak_resilience._metrics.families import DEFAULT_PREFIX, PREFIX_PATTERN
from peak_resilience._native import MAX_FAILURE_THRESHOLD, MAX_HALF_OPEN_CALLS
from peak_resilience._windows import parse_limit

__all__ = [
    "DEFAULTS",
    "MAX_FAILURE_THRESHOLD",
    "MAX_HALF_OPEN_CALLS",
    "NATIVE_BREAKER_KEYS",
    "SCHEMA",
    "TABLE",
    "Check",
    "Key",
    "Settings",
    "at_least",
    "at_most",
    "fraction",
    "host_ports",
    "key",
    "metric_prefix",
    "non_empty",
    "optional",
    "positive",
    "rate_limit_specs",
]

#: The table of the configuration file that is ours; the rest belongs to the application.
TABLE = "resilience"

Check = Callable[[Any], "str | None"]


def key(default: Any, check: Check | None = None, *, per_module: bool = True) -> Any:
    """Declares one configuration key (a dataclass field carrying its schema)."""
    return dataclasses.field(default=default, metadata={"check": check, "per_module": per_module})


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be at least {low:g}, got {value!r}"


def positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value!r}"


#: The largest cap a bulkhead counts to (its in-flight count is a 64-bit word).
MAX_CONCURRENT = 2**64 - 1


def at_most(high: int) -> Check:
    def check(value: int) -> str | None:
        if value < 1 or value > high:
            return f"must be between 1 and {high}, got {value!r}"
        return None

    return check


def fraction(value: float) -> str | None:
    if 0 < value <= 1:
        return None
    return f"must be a fraction greater than 0 and at most 1 (0.5 = half), got {value!r}"


def optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def rate_limit_specs(value: tuple[str, ...]) -> str | None:
    """Each entry a window such as "1200/60s" (issue 8), at most four."""
    if len(value) > 4:
        return f"holds at most 4 windows, got {len(value)}"
    for spec in value:
        try:
            parse_limit(spec)
        except ValueError as err:
            return str(err)
    return None


def host_ports(value: tuple[str, ...]) -> str | None:
    for entry in value:
        host, colon, port = entry.rpartition(":")
        if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
            return f"each entry must be 'host:port', got {entry!r}"
    return None


def metric_prefix(value: str) -> str | None:
    if PREFIX_PATTERN.fullmatch(value):
        return None
    return f"must be a Prometheus metric name prefix ({PREFIX_PATTERN.pattern}), got {value!r}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings in force for one module (or, for ``Config.globals``, for all)."""

    circuit_breaker_enabled: bool = key(True)
    circuit_breaker_threshold: int = key(5, at_most(MAX_FAILURE_THRESHOLD))
    circuit_breaker_timeout: float = key(60.0, positive)
    half_open_max_calls: int = key(1, at_most(MAX_HALF_OPEN_CALLS))
    rate_limit_enabled: bool = key(True)
    rate_limit_requests: int = key(100, at_least(1))
    rate_limit_window: float = key(60.0, positive)
    #: Tokens a full bucket holds; None means ``rate_limit_requests``.
    rate_limit_burst: int | None = key(None, optional(at_least(1)))
    #: Several windows, all or nothing ("1200/60s", "50/10s", "160000/1d"; units s/m/h/d).
    #: The most specific layer that sets either form wins: rate_limits set in [resilience]
    #: give way to rate_limit_requests/_window/_burst set for a module, and the reverse.
    rate_limits: tuple[str, ...] = key((), rate_limit_specs)
    #: Tokens of every window kept for priority="high" calls (cancels, risk reductions).
    rate_limit_reserve: int = key(0, at_least(0))
    metrics_enabled: bool = key(True)
    #: A rejected or failed call returns the decorator's fallback instead of raising.
    fail_safe_defaults: bool = key(False)
    circuit_breaker_backend: Backend = key("memory")
    rate_limit_backend: Backend = key("memory")
    redis_url: str | None = key(None, optional(non_empty))
    #: Redis Sentinel: the sentinels that say where the master is ("host:port" each)...
    redis_sentinels: tuple[str, ...] = key((), host_ports)
    #: ...and the name of the master they watch (``redis_url``, if set, then gives only
    #: the user, password, database and TLS).
    redis_sentinel_master: str | None = key(None, optional(non_empty))
    #: Default: /dev/shm/peak-resilience-<uid> (the constructors' default too).
    shared_dir: str = key(str(default_shared_dir()), non_empty)
    on_backend_error: OnBackendError = key("local")
    health_token: str | None = key(None, optional(non_empty), per_module=False)
    metrics_prefix: str = key(DEFAULT_PREFIX, metric_prefix, per_module=False)
    # Issue 8, circuit breaking (each off unless set).
    #: Share of the calls in the window that opens a breaker (0.5 = half); None: only
    #: the consecutive-failure threshold opens it.
    circuit_breaker_failure_rate: float | None = key(None, optional(fraction))
    #: Calls the window must hold before the failure rate can open the breaker.
    circuit_breaker_minimum_calls: int = key(10, at_least(1))
    #: "count": the rate over the last ``circuit_breaker_window_calls`` calls; "time":
    #: over the last ``circuit_breaker_window_seconds`` seconds.
    circuit_breaker_window_type: WindowType = key("count")
    circuit_breaker_window_calls: int = key(100, at_least(1))
    circuit_breaker_window_seconds: float = key(60.0, positive)
    #: A successful call taking at least this many seconds counts as a failure.
    circuit_breaker_slow_call_duration: float | None = key(None, optional(positive))
    #: Each failed trial in a row multiplies the open period by this (1: no back-off)...
    circuit_breaker_backoff_multiplier: float = key(1.0, at_least(1))
    #: ...up to this many seconds.
    circuit_breaker_max_timeout: float = key(600.0, positive)
    #: Decide but do not enforce: every call runs, would-be refusals are counted.
    circuit_breaker_metrics_only: bool = key(False)
    # Issue 16, the bulkhead (off unless set).
    #: Calls of one operation that may run at once; None: no cap.
    max_concurrent: int | None = key(None, optional(at_most(MAX_CONCURRENT)))
    #: Seconds a call over the cap waits for a slot before it is refused.
    bulkhead_max_wait: float = key(0.0, at_least(0))
    #: "shared": one cap across the processes of the host (slots in ``shared_dir``).
    bulkhead_backend: BulkheadBackend = key("memory")
    # Issue 16, retries (off unless retry_attempts > 1 and retry_on names a class).
    #: Attempts in all, the first included (1: no retries).
    retry_attempts: int = key(1, at_least(1))
    #: The exception classes that may be retried: builtins by name, others dotted.
    retry_on: tuple[str, ...] = key((), exception_names)
    #: Seconds before the first retry at most, multiplied by 2 for each next one...
    retry_backoff: float = key(0.1, at_least(0))
    #: ...up to this many seconds.
    retry_max_backoff: float = key(10.0, at_least(0))
    #: Retries at most this fraction of the operation's recent calls...
    retry_budget: float = key(0.2, fraction)
    #: ...plus this many a second.
    retry_min_per_second: int = key(10, at_least(0))

    @property
    def redis_location(self) -> str | None:
        """Where the Redis backend connects: ``redis_url``, or with ``redis_sentinels``
        the master they name (a ``redis+sentinel://`` URL)."""
        if not self.redis_sentinels or self.redis_sentinel_master is None:
            return self.redis_url  # (half a Sentinel setup is refused where Redis is used)
        return sentinel_url(self.redis_sentinels, self.redis_sentinel_master, self.redis_url)

    @property
    def burst(self) -> int:
        """Tokens a full bucket holds (``rate_limit_burst``, else ``rate_limit_requests``)."""
        return self.rate_limit_requests if self.rate_limit_burst is None else self.rate_limit_burst

    @property
    def breaker_policy(self) -> dict[str, Any]:
        """The native breaker's failure-rate, slow-call and back-off keywords for these
        settings (a rate of 0 turns the rate off); ``NATIVE_BREAKER_KEYS`` maps them back."""
        time_window = self.circuit_breaker_window_type == "time"
        rate = self.circuit_breaker_failure_rate
        return {
            "failure_rate_threshold": 0 if rate is None else rate,
            "minimum_calls": self.circuit_breaker_minimum_calls,
            "window_type": self.circuit_breaker_window_type,
            "window_size": (
                self.circuit_breaker_window_seconds
                if time_window
                else self.circuit_breaker_window_calls
            ),
            "slow_call_duration": self.circuit_breaker_slow_call_duration,
            "backoff_multiplier": self.circuit_breaker_backoff_multiplier,
            "max_recovery_timeout": max(
                self.circuit_breaker_max_timeout, self.circuit_breaker_timeout
            ),
        }


#: The native breaker's parameter names -> the keys they come from (for error messages).
NATIVE_BREAKER_KEYS = {
    "failure_threshold": "circuit_breaker_threshold",
    "recovery_timeout": "circuit_breaker_timeout",
    "half_open_max_calls": "half_open_max_calls",
    "failure_rate_threshold": "circuit_breaker_failure_rate",
    "minimum_calls": "circuit_breaker_minimum_calls",
    "window_size": "circuit_breaker_window_seconds",
    "slow_call_duration": "circuit_breaker_slow_call_duration",
    "backoff_multiplier": "circuit_breaker_backoff_multiplier",
    "max_recovery_timeout": "circuit_breaker_max_timeout",
}


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of the schema."""

    name: str
    type: Any
    check: Check | None
    per_module: bool


def _schema() -> dict[str, Key]:
    hints = typing.get_type_hints(Settings)
    return {
        f.name: Key(f.name, hints[f.name], f.metadata["check"], f.metadata["per_module"])
        for f in dataclasses.fields(Settings)
    }


SCHEMA: dict[str, Key] = _schema()
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}
