"""Token-bucket rate limiting.

``from peak_resilience.rate_limiter import RateLimiter`` is the guide's
``from src.core.rate_limiter import RateLimiter``.

``RateLimiter(max_requests, window_seconds)`` is a bucket holding ``max_requests`` tokens
(the burst), refilled continuously at ``max_requests / window_seconds`` tokens per second,
starting full; beyond the guide it takes several windows (``limits=``), reservations,
``sync``, a priority reserve and ``pause``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peak_resilience._lazy import lazy

if TYPE_CHECKING:
    from peak_resilience._limiter import RateLimiter
    from peak_resilience._native import Reservation, TokenBucket
    from peak_resilience._windows import Limit
    from peak_resilience.errors import RateLimitExceeded

__all__ = ["Limit", "RateLimitExceeded", "RateLimiter", "Reservation", "TokenBucket"]

__getattr__ = lazy(
    __name__,
    {
        "peak_resilience._limiter": ["RateLimiter"],
        "peak_resilience._native": ["Reservation", "TokenBucket"],
        "peak_resilience._windows": ["Limit"],
        "peak_resilience.errors": ["RateLimitExceeded"],
    },
)
