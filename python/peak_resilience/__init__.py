"""peak-resilience: circuit breakers, token-bucket rate limiting, metrics and health checks
for Python trading systems, with the per-call hot path in lock-free Rust."""

from __future__ import annotations

from peak_resilience._version import __version__
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
