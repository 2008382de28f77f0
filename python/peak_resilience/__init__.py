"""peak-resilience: circuit breakers, token-bucket rate limiting, metrics and health checks
for Python trading systems, with the per-call hot path in lock-free Rust.

The names below are imported on first use (see ``_lazy``): ``import
peak_resilience.resilience_helpers`` pays for that module alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peak_resilience._lazy import lazy
from peak_resilience._version import __version__

if TYPE_CHECKING:
    from peak_resilience.config import ConfigError, configure, load_config
    from peak_resilience.errors import (
        BulkheadFull,
        CircuitBreakerError,
        RateLimitExceeded,
        ResilienceError,
    )
    from peak_resilience.rate_limiter import RateLimiter
    from peak_resilience.resilience import Bulkhead, CircuitBreaker, CircuitState, Retry
    from peak_resilience.resilience_helpers import with_resilience

__all__ = [
    "Bulkhead",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitBreakerError",
    "CircuitState",
    "ConfigError",
    "RateLimitExceeded",
    "RateLimiter",
    "ResilienceError",
    "Retry",
    "__version__",
    "configure",
    "load_config",
    "with_resilience",
]

__getattr__ = lazy(
    __name__,
    {
        "peak_resilience.config": ["ConfigError", "configure", "load_config"],
        "peak_resilience.errors": [
            "BulkheadFull",
            "CircuitBreakerError",
            "RateLimitExceeded",
            "ResilienceError",
        ],
        "peak_resilience.rate_limiter": ["RateLimiter"],
        "peak_resilience.resilience": ["Bulkhead", "CircuitBreaker", "CircuitState", "Retry"],
        "peak_resilience.resilience_helpers": ["with_resilience"],
    },
)
