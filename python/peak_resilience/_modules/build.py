"""Breakers and limiters built from settings: the one place where a backend is chosen.

``build_breaker`` / ``build_limiter`` make a new object for a module's settings;
``update_breaker`` / ``update_limiter`` bring an existing one in line with new settings in
place (its state, tokens and counts stay), so that a decorator applied at import time
follows a configuration loaded later. The backend (``circuit_breaker_backend``,
``rate_limit_backend``: "memory", "shared" or "redis", with ``shared_dir``, ``redis_url``
and ``on_backend_error``) is chosen once, at ``build_*``.

``make_circuit_breaker`` / ``make_rate_limiter`` build one on a backend given by keyword.
"""

from __future__ import annotations

import os
from typing import Any

from peak_resilience._backends.choice import DEFAULT_REDIS_TIMEOUT, Backend, OnBackendError
from peak_resilience._breaker import CircuitBreaker
from peak_resilience._circuit import CircuitState
from peak_resilience._config.schema import Settings
from peak_resilience._limiter import RateLimiter
from peak_resilience._native import ManualClock

__all__ = [
    "build_breaker",
    "build_limiter",
    "make_circuit_breaker",
    "make_rate_limiter",
    "update_breaker",
    "update_limiter",
]


def _backend(backend: str, settings: Settings, clock: ManualClock | None) -> dict[str, Any]:
    """The constructor arguments that place an object on ``backend``. A test's manual
    clock (``fresh_resilience(clock)``) reaches every backend, Redis' scripts included."""
    return {
        "backend": backend,
        "shared_dir": settings.shared_dir,
        "redis_url": settings.redis_location,
        "on_backend_error": settings.on_backend_error,
        "clock": clock,
    }


def build_breaker(
    name: str, module: str, settings: Settings, clock: ManualClock | None = None
) -> CircuitBreaker:
    """A new breaker named ``name`` with ``module``'s settings."""
    breaker = CircuitBreaker(
        settings.circuit_breaker_threshold,
        settings.circuit_breaker_timeout,
        name=name,
        half_open_max_calls=settings.half_open_max_calls,
        **_backend(settings.circuit_breaker_backend, settings, clock),
        **settings.breaker_policy,
    )
    update_breaker(breaker, settings)
    return breaker


def update_breaker(breaker: CircuitBreaker, settings: Settings) -> None:
    """Applies ``settings`` to ``breaker`` in place. ``circuit_breaker_enabled = false`` is
    the breaker's DISABLED state (every call passes, outcomes still counted, the gauge
    reads 4); enabling it again closes it."""
    if breaker.metrics_only != settings.circuit_breaker_metrics_only:
        breaker.set_metrics_only(settings.circuit_breaker_metrics_only)
    breaker.set_settings(
        settings.circuit_breaker_threshold,
        settings.circuit_breaker_timeout,
        settings.half_open_max_calls,
        **settings.breaker_policy,
    )
    disabled = breaker.state is CircuitState.DISABLED
    if not settings.circuit_breaker_enabled and not disabled:
        breaker.disable()
    elif settings.circuit_breaker_enabled and disabled:
        breaker.reset()


def build_limiter(
    name: str, module: str, settings: Settings, clock: ManualClock | None = None
) -> RateLimiter:
    """A new limiter named ``name`` with ``module``'s settings."""
    (first, length, burst), rest = settings.windows
    limiter = RateLimiter(
        first,
        length,
        burst=burst,
        name=name,
        limits=rest,
        priority_reserve=settings.rate_limit_reserve,
        **_backend(settings.rate_limit_backend, settings, clock),
    )
    update_limiter(limiter, settings)
    return limiter


def update_limiter(limiter: RateLimiter, settings: Settings) -> None:
    """Applies ``settings`` to ``limiter``'s default bucket in place (tokens already spent
    stay spent); ``rate_limit_enabled`` switches every bucket of the limiter."""
    bucket = limiter.default_bucket
    (first, length, burst), rest = settings.windows
    wanted = [(first, length, burst), *((m, w, m) for m, w in rest)]
    if bucket.windows != wanted or bucket.priority_reserve != settings.rate_limit_reserve:
        bucket.set_windows(
            first, length, burst, windows=rest, priority_reserve=settings.rate_limit_reserve
        )
    for each in (bucket, *limiter.endpoint_buckets().values()):
        each.set_enabled(settings.rate_limit_enabled)


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
    """A ``RateLimiter`` on the chosen backend."""
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
    """A ``CircuitBreaker`` on the chosen backend."""
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
