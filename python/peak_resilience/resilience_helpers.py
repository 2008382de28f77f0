"""Per-module breakers and limiters configured from ``[resilience.<module>]``.

``from peak_resilience.resilience_helpers import with_resilience`` is the guide's
``from src.core.resilience_helpers import with_resilience``.

Each module has one rate budget (``[resilience.live] rate_limit_requests = 30`` is 30 for
the whole module, shared by its operations) and one breaker per operation, registered as
``"module.operation"``. The registry holds them for the life of the process, and a later
``configure()`` changes their settings in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peak_resilience._lazy import lazy

if TYPE_CHECKING:
    from peak_resilience._modules.registry import (
        ModuleRegistry,
        create_module_circuit_breaker,
        create_module_rate_limiter,
        get_all_circuit_breakers,
        get_all_rate_limiters,
        with_resilience,
    )
    from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded

__all__ = [
    "CircuitBreakerError",
    "ModuleRegistry",
    "RateLimitExceeded",
    "create_module_circuit_breaker",
    "create_module_rate_limiter",
    "get_all_circuit_breakers",
    "get_all_rate_limiters",
    "with_resilience",
]

__getattr__ = lazy(
    __name__,
    {
        "peak_resilience._modules.registry": [
            "ModuleRegistry",
            "create_module_circuit_breaker",
            "create_module_rate_limiter",
            "get_all_circuit_breakers",
            "get_all_rate_limiters",
            "with_resilience",
        ],
        "peak_resilience.errors": ["CircuitBreakerError", "RateLimitExceeded"],
    },
)
