"""The breakers and limiters alive in this process, for export and health checks.

Held weakly: an object the user constructs is exported while the user holds it and
forgotten once dropped. The module registries hold theirs strongly.

Breakers are typed as the native breaker, limiters as what export and health checks read
of them (``Limiter``): both are below the Python classes that add themselves here.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

from peak_resilience._fork import after_fork_in_child
from peak_resilience._native import Bulkhead, CircuitBreaker, OperationStats, Retry, TokenBucket

__all__ = [
    "Limiter",
    "alive",
    "breakers",
    "bulkheads",
    "count_timeout",
    "limiters",
    "operation",
    "operations",
    "retries",
    "timeouts",
]

T = TypeVar("T")


class Limiter(Protocol):
    """What the metrics collector and the health checks read of a live rate limiter."""

    @property
    def name(self) -> str: ...
    @property
    def default_bucket(self) -> TokenBucket: ...
    def endpoint_buckets(self) -> dict[str, TokenBucket]: ...
    def _export(self) -> list[tuple[str, int, int, float, Any, Any]]: ...


breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
limiters: weakref.WeakSet[Limiter] = weakref.WeakSet()
bulkheads: weakref.WeakSet[Bulkhead] = weakref.WeakSet()

#: The retry policy (and so the retry budget) of each operation that retries, by name.
retries: dict[str, Retry] = {}
#: Calls of each operation cancelled by their ``timeout``, by operation name.
timeouts: dict[str, int] = {}

#: Per-operation counters and latency histograms, by operation name. Held for the life of
#: the process: an operation is a name in the code, not an object the user drops.
operations: dict[str, OperationStats] = {}
_operations_lock = threading.Lock()


def count_timeout(name: str) -> None:
    """Counts one call of operation ``name`` cancelled by its timeout (a rare path)."""
    with _operations_lock:
        timeouts[name] = timeouts.get(name, 0) + 1


def _after_fork_in_child() -> None:
    # The lock may have been held by a thread of the parent that the child lacks.
    global _operations_lock
    _operations_lock = threading.Lock()


after_fork_in_child(_after_fork_in_child)


def alive(objects: Iterable[T]) -> list[T]:
    """The objects of ``breakers`` or ``limiters`` now. A breaker created on another
    thread mid-iteration makes a WeakSet raise: the copy is tried again."""
    for _ in range(16):
        try:
            return list(objects)
        except RuntimeError:
            continue
    return list(objects)


def operation(name: str) -> OperationStats:
    """The stats of operation ``name``, created on first use (the same object after)."""
    stats = operations.get(name)
    if stats is None:
        with _operations_lock:
            stats = operations.setdefault(name, OperationStats(name))
    return stats
