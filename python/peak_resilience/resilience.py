"""Circuit breakers (and, from the observability layer, health checks).

``from peak_resilience.resilience import CircuitBreaker`` is the guide's
``from src.core.resilience import CircuitBreaker``.
"""

from __future__ import annotations

from peak_resilience._breaker import CircuitBreaker, CircuitState
from peak_resilience.errors import CircuitBreakerError

__all__ = ["CircuitBreaker", "CircuitBreakerError", "CircuitState"]
