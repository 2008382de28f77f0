"""Breakers and limiters built from settings: the one place where a backend is chosen.

``build_breaker`` / ``build_limiter`` make a new object for a module's settings;
``update_breaker`` / ``update_limiter`` bring an existing one in line with new settings in
place (its state, tokens and counts stay), so that a decorator applied at import time
follows a configuration loaded later. The backend (``circuit_breaker_backend``,
``rate_limit_backend``: "memory", "shared" or "redis", with ``shared_dir``, ``redis_url``
and ``on_backend_error``) is chosen once, at ``build_*``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from peak_resilience.config import Settings
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState

if TYPE_CHECKING:
    from peak_resilience.testing import ManualClock

logger = logging.getLogger("peak_resilience.resilience")


def _backend(backend: str, settings: Settings, clock: ManualClock | None) -> dict[str, Any]:
    """The constructor arguments that place an object on ``backend``. Redis keeps time
    itself, so a test's manual clock only reaches in-process and shared objects."""
    return {
        "backend": backend,
        "shared_dir": settings.shared_dir,
        "redis_url": settings.redis_url,
        "on_backend_error": settings.on_backend_error,
        "clock": None if backend == "redis" else clock,
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
        **_policy(settings),
    )
    update_breaker(breaker, settings)
    return breaker


def _policy(settings: Settings) -> dict[str, Any]:
    """The failure-rate, slow-call and back-off keywords for ``settings`` (a rate of 0
    turns the rate off)."""
    time_window = settings.circuit_breaker_window_type == "time"
    rate = settings.circuit_breaker_failure_rate
    return {
        "failure_rate_threshold": 0 if rate is None else rate,
        "minimum_calls": settings.circuit_breaker_minimum_calls,
        "window_type": settings.circuit_breaker_window_type,
        "window_size": (
            settings.circuit_breaker_window_seconds
            if time_window
            else settings.circuit_breaker_window_calls
        ),
        "slow_call_duration": settings.circuit_breaker_slow_call_duration,
        "backoff_multiplier": settings.circuit_breaker_backoff_multiplier,
        "max_recovery_timeout": max(
            settings.circuit_breaker_max_timeout, settings.circuit_breaker_timeout
        ),
    }


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
        **_policy(settings),
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
