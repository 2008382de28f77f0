"""Where a limiter's budget and a breaker's state live: the choices and their checks.

- ``"memory"`` (default): in this process.
- ``"shared"``: in a memory-mapped file, shared by every process of the host that uses
  the same name (see ``_shared``).
- ``"redis"``: in Redis, shared by every host (see ``_redis_limiter``, ``_redis_breaker``).

When Redis cannot be reached, ``on_backend_error`` decides: ``"local"`` (default) falls
back to an in-process limiter/breaker with the same settings, ``"fail_open"`` admits,
``"fail_closed"`` refuses. Each failed Redis call is counted here, by backend, for the
``peak_trade_backend_errors_total`` counter.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from peak_resilience.rate_limiter import RateLimiter
    from peak_resilience.resilience import CircuitBreaker
    from peak_resilience.testing import ManualClock

__all__ = [
    "BACKENDS",
    "ON_BACKEND_ERROR",
    "backend_error_counts",
    "make_circuit_breaker",
    "make_rate_limiter",
]

Backend = Literal["memory", "shared", "redis"]
OnBackendError = Literal["fail_closed", "fail_open", "local"]

BACKENDS: tuple[str, ...] = ("memory", "shared", "redis")
ON_BACKEND_ERROR: tuple[str, ...] = ("fail_closed", "fail_open", "local")

#: Seconds a Redis call may take before it counts as failed (connect and read alike).
DEFAULT_REDIS_TIMEOUT = 0.5

#: Present at 0 from the start, so that the first failure shows as an increase.
_errors: dict[str, int] = {"redis": 0}
_errors_lock = threading.Lock()


def check_backend(value: object, what: str = "backend") -> Backend:
    if value not in BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, BACKENDS))}, got {value!r}")
    return value  # type: ignore[return-value]


def check_on_backend_error(value: object) -> OnBackendError:
    if value not in ON_BACKEND_ERROR:
        raise ValueError(
            "on_backend_error must be one of "
            f"{', '.join(map(repr, ON_BACKEND_ERROR))}, got {value!r}"
        )
    return value  # type: ignore[return-value]


def check_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"redis_timeout must be a positive number of seconds, got {value!r}")
    if value != value or value == float("inf"):
        raise ValueError(f"redis_timeout must be finite, got {value!r}")
    return float(value)


def count_backend_error(backend: str) -> None:
    """Counts one failed call to ``backend`` (rare: only while it is unreachable)."""
    with _errors_lock:
        _errors[backend] = _errors.get(backend, 0) + 1


def backend_error_counts() -> dict[str, int]:
    """Failed backend calls so far in this process, by backend (``{"redis": n}``): the
    samples of ``peak_trade_backend_errors_total{backend=...}``."""
    with _errors_lock:
        return dict(_errors)


def make_rate_limiter(
    max_requests: int,
    window_seconds: float,
    *,
    burst: int | None = None,
    name: str | None = None,
    backend: Backend = "memory",
    shared_dir: str | os.PathLike[str] | None = None,
    redis_url: str | None = None,
    on_backend_error: OnBackendError = "local",
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
    clock: ManualClock | None = None,
) -> RateLimiter:
    """A ``RateLimiter`` on the chosen backend (what config-level selection calls)."""
    from peak_resilience.rate_limiter import RateLimiter

    return RateLimiter(
        max_requests,
        window_seconds,
        burst=burst,
        clock=clock,
        name=name,
        backend=backend,
        shared_dir=shared_dir,
        redis_url=redis_url,
        on_backend_error=on_backend_error,
        redis_timeout=redis_timeout,
    )


def make_circuit_breaker(
    failure_threshold: int = 5,
    recovery_timeout: float = 60.0,
    name: str | None = None,
    half_open_max_calls: int = 1,
    *,
    backend: Backend = "memory",
    shared_dir: str | os.PathLike[str] | None = None,
    redis_url: str | None = None,
    on_backend_error: OnBackendError = "local",
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
    clock: ManualClock | None = None,
) -> CircuitBreaker:
    """A ``CircuitBreaker`` on the chosen backend (what config-level selection calls)."""
    from peak_resilience.resilience import CircuitBreaker

    return CircuitBreaker(
        failure_threshold,
        recovery_timeout,
        name,
        half_open_max_calls,
        clock=clock,
        backend=backend,
        shared_dir=shared_dir,
        redis_url=redis_url,
        on_backend_error=on_backend_error,
        redis_timeout=redis_timeout,
    )
