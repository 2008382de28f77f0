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
from peak_resilience._config.exception_names import exception_class
from peak_resilience._config.parameters import (
    Placement,
    breaker_parameters,
    limiter_parameters,
)
from peak_resilience._config.schema import Settings
from peak_resilience._limiter import RateLimiter
from peak_resilience._native import ManualClock, Retry

__all__ = [
    "build_breaker",
    "build_limiter",
    "build_retry",
    "make_circuit_breaker",
    "make_rate_limiter",
    "update_breaker",
    "update_limiter",
]


def _backend(placement: Placement, clock: ManualClock | None) -> dict[str, Any]:
    """The constructor arguments that place an object. A test's manual clock
    (``fresh_resilience(clock)``) reaches every backend, Redis' scripts included."""
    return {
        "backend": placement.backend,
        "shared_dir": placement.shared_dir,
        "redis_url": placement.redis_url,
        "on_backend_error": placement.on_backend_error,
        "clock": clock,
    }


def build_breaker(
    name: str, module: str, settings: Settings, clock: ManualClock | None = None
) -> CircuitBreaker:
    """A new breaker named ``name`` with ``module``'s settings."""
    wanted = breaker_parameters(settings)
    breaker = CircuitBreaker(
        wanted.failure_threshold,
        wanted.recovery_timeout,
        name=name,
        half_open_max_calls=wanted.half_open_max_calls,
        **_backend(wanted.placement, clock),
        **wanted.policy,
    )
    update_breaker(breaker, settings)
    return breaker


def update_breaker(breaker: CircuitBreaker, settings: Settings) -> None:
    """Applies ``settings`` to ``breaker`` in place. ``circuit_breaker_enabled = false`` is
    the breaker's DISABLED state (every call passes, outcomes still counted, the gauge
    reads 4); enabling it again closes it."""
    wanted = breaker_parameters(settings)
    if breaker.metrics_only != wanted.metrics_only:
        breaker.set_metrics_only(wanted.metrics_only)
    breaker.set_settings(
        wanted.failure_threshold,
        wanted.recovery_timeout,
        wanted.half_open_max_calls,
        **wanted.policy,
    )
    disabled = breaker.state is CircuitState.DISABLED
    if not wanted.enabled and not disabled:
        breaker.disable()
    elif wanted.enabled and disabled:
        breaker.reset()


def build_limiter(
    name: str, module: str, settings: Settings, clock: ManualClock | None = None
) -> RateLimiter:
    """A new limiter named ``name`` with ``module``'s settings."""
    wanted = limiter_parameters(settings)
    limiter = RateLimiter(
        burst=wanted.first.burst,
        name=name,
        limits=wanted.limits,
        priority_reserve=wanted.reserve,
        **_backend(wanted.placement, clock),
    )
    update_limiter(limiter, settings)
    return limiter


def update_limiter(limiter: RateLimiter, settings: Settings) -> None:
    """Applies ``settings`` to ``limiter``'s default bucket in place (tokens already spent
    stay spent); ``rate_limit_enabled`` switches every bucket of the limiter."""
    bucket = limiter.default_bucket
    wanted = limiter_parameters(settings)
    if (
        bucket.windows != wanted.native_windows
        or bucket.window_kinds != wanted.kinds
        or bucket.priority_reserve != wanted.reserve
    ):
        wanted.set_on(bucket)
    for each in (bucket, *limiter.endpoint_buckets().values()):
        each.set_enabled(wanted.enabled)


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


def build_retry(settings: Settings) -> Retry | None:
    """The retry policy of a module's settings, or None when they retry nothing
    (``retry_attempts = 1`` or no ``retry_on``). The names were checked at load."""
    if settings.retry_attempts < 2 or not settings.retry_on:
        return None
    return Retry(
        settings.retry_attempts,
        on=tuple(exception_class(name) for name in settings.retry_on),
        backoff=settings.retry_backoff,
        max_backoff=settings.retry_max_backoff,
        budget=settings.retry_budget,
        min_retries_per_second=settings.retry_min_per_second,
    )
