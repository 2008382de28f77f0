"""The breakers and limiters alive in this process, for export and health checks.

Held weakly: an object the user constructs is exported while the user holds it and
forgotten once dropped. The module registries hold theirs strongly.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from peak_resilience._native import OperationStats

if TYPE_CHECKING:
    from peak_resilience.rate_limiter import RateLimiter
    from peak_resilience.resilience import CircuitBreaker

breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
limiters: weakref.WeakSet[RateLimiter] = weakref.WeakSet()

#: Per-operation counters and latency histograms, by operation name. Held for the life of
#: the process: an operation is a name in the code, not an object the user drops.
operations: dict[str, OperationStats] = {}
_operations_lock = threading.Lock()


def operation(name: str) -> OperationStats:
    """The stats of operation ``name``, created on first use (the same object after)."""
    stats = operations.get(name)
    if stats is None:
        with _operations_lock:
            stats = operations.setdefault(name, OperationStats(name))
    return stats
