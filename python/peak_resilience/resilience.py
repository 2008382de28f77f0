"""Circuit breakers and health checks.

``from peak_resilience.resilience import CircuitBreaker, health_check`` is the guide's
``from src.core.resilience import CircuitBreaker, health_check``.
"""

from __future__ import annotations

from peak_resilience._breaker import CircuitBreaker
from peak_resilience._bulkhead import Bulkhead
from peak_resilience._circuit import CircuitState
from peak_resilience._health import HealthCheckRegistry, health_check
from peak_resilience._native import Retry
from peak_resilience.errors import BulkheadFull, CircuitBreakerError

__all__ = [
    "Bulkhead",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitBreakerError",
    "CircuitState",
    "HealthCheckRegistry",
    "Retry",
    "health_check",
]
