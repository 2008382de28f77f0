"""The breakers and limiters alive in this process, for export and health checks.

Held weakly: an object the user constructs is exported while the user holds it and
forgotten once dropped. The module registries hold theirs strongly.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peak_resilience.rate_limiter import RateLimiter
    from peak_resilience.resilience import CircuitBreaker

breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
limiters: weakref.WeakSet[RateLimiter] = weakref.WeakSet()
