"""Circuit breakers and health checks.

``from peak_resilience.resilience import CircuitBreaker, health_check`` is the guide's
``from src.core.resilience import CircuitBreaker, health_check``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peak_resilience._lazy import lazy

if TYPE_CHECKING:
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

__getattr__ = lazy(
    __name__,
    {
        "peak_resilience._breaker": ["CircuitBreaker"],
        "peak_resilience._bulkhead": ["Bulkhead"],
        "peak_resilience._circuit": ["CircuitState"],
        "peak_resilience._health": ["HealthCheckRegistry", "health_check"],
        "peak_resilience._native": ["Retry"],
        "peak_resilience.errors": ["BulkheadFull", "CircuitBreakerError"],
    },
)
