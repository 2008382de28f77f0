"""peak-resilience: circuit breakers, token-bucket rate limiting, metrics and health checks
for Python trading systems, with the per-call hot path in lock-free Rust."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from peak_resilience.config import ConfigError, configure, load_config
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded, ResilienceError
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.resilience_helpers import with_resilience

# A library logs, the application decides where to: no output unless logging is set up.
logging.getLogger("peak_resilience").addHandler(logging.NullHandler())

try:
    __version__ = version("peak-resilience")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerError",
    "CircuitState",
    "ConfigError",
    "RateLimitExceeded",
    "RateLimiter",
    "ResilienceError",
    "__version__",
    "configure",
    "load_config",
    "with_resilience",
]
