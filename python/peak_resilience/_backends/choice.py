"""Where a limiter's budget and a breaker's state live: the choices and their checks.

- ``"memory"`` (default): in this process.
- ``"shared"``: in a memory-mapped file, shared by every process of the host that uses
  the same name (see ``_backends.shared``).
- ``"redis"``: in Redis, shared by every host (see ``_backends.redis``).

When Redis cannot be reached, ``on_backend_error`` decides: ``"local"`` (default) falls
back to an in-process limiter/breaker with the same settings, ``"fail_open"`` admits,
``"fail_closed"`` refuses. Each failed Redis call is counted here, by backend, for the
``peak_trade_backend_errors_total`` counter.

The literals below are the one statement of the choices: the configuration schema and
the constructors' signatures use them, and the tuples are read from them.
"""

from __future__ import annotations

import threading
import typing
from typing import Literal

__all__ = [
    "BACKENDS",
    "DEFAULT_REDIS_TIMEOUT",
    "ON_BACKEND_ERROR",
    "Backend",
    "BulkheadBackend",
    "OnBackendError",
    "backend_error_counts",
    "check_backend",
    "check_on_backend_error",
    "check_timeout",
    "count_backend_error",
]

Backend = Literal["memory", "shared", "redis"]
#: A bulkhead's slots are held for a call's whole duration: this process, or the host.
BulkheadBackend = Literal["memory", "shared"]
OnBackendError = Literal["fail_closed", "fail_open", "local"]

BACKENDS: tuple[str, ...] = typing.get_args(Backend)
ON_BACKEND_ERROR: tuple[str, ...] = typing.get_args(OnBackendError)

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
