"""The breakers and limiters alive in this process, for export and health checks.

Held weakly: an object the user constructs is exported while the user holds it and
forgotten once dropped. The module registries hold theirs strongly. What a dropped
object counted is kept for its name (``retired``): counters of a name are summed over
its objects, and must never go down when one of them goes (Prometheus would read the
drop as a reset and count everything after it again). A breaker on a shared file or on
Redis keeps its counts there, for every object of its name: they are read once per file
or Redis key, and nothing is kept when one is dropped.

Breakers are typed as the native breaker, limiters as what export and health checks read
of them (``Limiter``): both are below the Python classes that add themselves here.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar, cast

from peak_resilience._bucket_series import DEFAULT_ENDPOINT, series
from peak_resilience._fork import after_fork_in_child
from peak_resilience._native import (
    Bulkhead,
    CircuitBreaker,
    OperationStats,
    Registry,
    Retry,
    TokenBucket,
)

__all__ = [
    "Limiter",
    "Members",
    "Retired",
    "alive",
    "breakers",
    "bulkheads",
    "count_timeout",
    "limiters",
    "lock",
    "operation",
    "operations",
    "retire_breaker",
    "retire_bucket",
    "retire_bulkhead",
    "retire_limiter",
    "retired",
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
    def _endpoint_buckets_to_read(self) -> dict[str, TokenBucket]: ...
    def _export(self) -> list[tuple[str, int, int, float, Any, Any]]: ...


class Members(Protocol[T]):
    """The live objects of one kind: a set that does not keep them alive."""

    def add(self, member: T, /) -> None: ...
    def discard(self, member: T, /) -> None: ...
    def __iter__(self) -> Iterator[T]: ...
    def __len__(self) -> int: ...


def _members(kind: str) -> Members[Any]:
    """The native registry (a few bytes an object, see ``rust/python/registry.rs``),
    or a ``WeakSet`` (185 bytes a limiter) where the GIL is disabled: the registry's
    reads are ordered against the objects' teardown by the GIL."""
    if getattr(sys, "_is_gil_enabled", lambda: True)():
        return cast("Members[Any]", Registry(kind))
    return weakref.WeakSet()


breakers: Members[CircuitBreaker] = _members("breakers")
limiters: Members[Limiter] = _members("limiters")
bulkheads: Members[Bulkhead] = _members("bulkheads")

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


class Retired:
    """The counts of dropped breakers and limiters, by name (only objects whose state
    is in this process: a shared file keeps its own counts)."""

    def __init__(self) -> None:
        #: breaker name -> counter ("failures", "rejections", "would_reject",
        #: "slow_calls") or (from_state_code, to_state_code) -> count
        self.breakers: dict[str, dict[Any, int]] = {}
        #: (limiter name, endpoint) -> [requests, rejections]
        self.buckets: dict[tuple[str, str], list[int]] = {}
        #: bulkhead name -> calls it refused
        self.bulkheads: dict[str, int] = {}


retired = Retired()
#: Held while a read takes the live objects and the retired counts, and while a dropped
#: object moves from one to the other: no read sees an object's counts twice or never.
lock = threading.RLock()


def retire_breaker(breaker: CircuitBreaker) -> None:
    """Keeps what ``breaker`` counted for its name (called as it is dropped)."""
    with lock:
        breakers.discard(breaker)
        if breaker.shared_path is not None or breaker.store is not None:
            # Its counts stay where they are kept, for every object of its name: in the
            # shared file, or in Redis (not read here: a finalizer may run on an event
            # loop, and Redis may be unreachable).
            return
        counts: dict[Any, int] = {
            "failures": breaker.failure_total,
            "rejections": breaker.rejection_total,
            "would_reject": breaker.would_reject_total,
            "slow_calls": breaker.slow_call_total,
            **breaker.transition_counts(),
        }
        counted = {key: count for key, count in counts.items() if count}
        if not counted:
            return  # nothing to keep: a name that never counted is not exported for ever
        kept = retired.breakers.setdefault(breaker.name, {})
        for key, count in counted.items():
            kept[key] = kept.get(key, 0) + count


def retire_bulkhead(bulkhead: Bulkhead) -> None:
    """Keeps the refusals of ``bulkhead`` for its name (called as it is dropped)."""
    with lock:
        bulkheads.discard(bulkhead)
        if bulkhead.rejections:
            kept = retired.bulkheads
            kept[bulkhead.name] = kept.get(bulkhead.name, 0) + bulkhead.rejections


def retire_limiter(limiter: Limiter) -> None:
    """Keeps what ``limiter``'s buckets counted for its name (called as it is dropped)."""
    with lock:
        limiters.discard(limiter)
        own = (DEFAULT_ENDPOINT, limiter.default_bucket)
        # An endpoint not used yet counted nothing: its blank has nothing to keep.
        for endpoint, bucket in (own, *limiter._endpoint_buckets_to_read().items()):
            retire_bucket(limiter.name, endpoint, bucket)


def retire_bucket(limiter: str, endpoint: str, bucket: TokenBucket) -> None:
    """Keeps what one bucket counted under its series (a limiter dropped, or one key of a
    per-key budget evicted): its own, or its limiter's "other" past the bound."""
    if bucket.shared_path is not None or not (bucket.allowed or bucket.rejected):
        return
    with lock:
        label = series.label(limiter, endpoint, bucket)
        kept = retired.buckets.setdefault((limiter, label), [0, 0])
        kept[0] += bucket.allowed + bucket.rejected
        kept[1] += bucket.rejected


def _after_fork_in_child() -> None:
    # The locks may have been held by a thread of the parent that the child lacks.
    global _operations_lock, lock
    _operations_lock = threading.Lock()
    lock = threading.RLock()


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
