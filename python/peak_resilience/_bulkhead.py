"""The bulkhead's Python face: a cap on the calls in flight at once, usable on its own
(decorator, ``with``, ``async with``) or through ``with_resilience(max_concurrent=...)``.

The in-flight count is one native atomic, taken by compare-and-swap: the cap holds
however many threads race for the last slot. With ``backend="shared"`` the slots are in a
memory-mapped file that every process of the host maps: the cap holds across them, and
the slots of a process that died are taken back.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import ParamSpec, TypeVar, cast

from peak_resilience import _instances
from peak_resilience._backends.choice import BulkheadBackend
from peak_resilience._backends.shared import directory
from peak_resilience._guard import guard, typed
from peak_resilience._native import Bulkhead as _NativeBulkhead
from peak_resilience._native import ManualClock
from peak_resilience._waiting_line import Attempt, line_for

__all__ = ["Bulkhead"]

P = ParamSpec("P")
R = TypeVar("R")

#: Seconds between two looks for a free slot while an ``async with`` waits for one.
_ASYNC_POLL = 0.005


class Bulkhead(_NativeBulkhead):
    """Lets at most ``max_concurrent`` calls run at once.

    A call over the cap waits up to ``max_wait`` seconds (0: not at all) for a slot, then
    is refused with ``BulkheadFull`` (the function is not run; ``with_resilience``'s
    fallback is returned instead, as for the other refusals). ``in_flight`` and
    ``rejections`` are exported as ``peak_trade_bulkhead_in_flight`` and
    ``peak_trade_bulkhead_rejections_total``.

    ``backend="memory"`` (the default) counts the calls of this process;
    ``backend="shared"`` counts those of every process of the host that uses a bulkhead
    of the same ``name`` in ``shared_dir`` (at most 1,024 slots; every process must give
    the same ``max_concurrent``). A process that dies holding slots (even by SIGKILL) has
    them taken back by the next call that finds the bulkhead full.
    """

    def __new__(
        cls,
        max_concurrent: int,
        *,
        name: str | None = None,
        max_wait: float = 0.0,
        clock: ManualClock | None = None,
        backend: BulkheadBackend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
    ) -> Bulkhead:
        if backend not in ("memory", "shared"):
            raise ValueError(
                f"a bulkhead's backend must be 'memory' or 'shared', got {backend!r} (its "
                "slots are held for a call's duration: a Redis round trip per call and a "
                "host that dies holding slots would cost more than the cap saves)"
            )
        where = None if backend == "memory" else directory(name, shared_dir, "bulkhead")
        instance = super().__new__(
            cls, max_concurrent, name=name, max_wait=max_wait, clock=clock, shared_dir=where
        )
        return cast("Bulkhead", instance)

    def __init__(
        self,
        max_concurrent: int,
        *,
        name: str | None = None,
        max_wait: float = 0.0,
        clock: ManualClock | None = None,
        backend: BulkheadBackend = "memory",
        shared_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.backend = backend
        _instances.bulkheads.add(self)
        # An unnamed one has a name of its own that nothing else shares: its series may
        # simply go with it.
        self._keeps_counts = name is not None

    def __del__(self) -> None:
        # It leaves the live objects here, before a reference cycle it may be in is
        # cleared, and what it counted stays counted under its name (see _instances). At
        # interpreter exit the module may be gone: nothing is left to export then.
        with contextlib.suppress(Exception):
            if getattr(self, "_keeps_counts", False):
                _instances.retire_bulkhead(self)
            else:
                _instances.bulkheads.discard(self)

    def call(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorates a sync or async function (or method) with this bulkhead."""
        return typed(guard(func, bulkhead=self), func)

    def __enter__(self) -> Bulkhead:
        if not self.acquire():
            self._full()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> Bulkhead:
        import asyncio  # here: a caller that never awaits need not import it

        line = line_for(self)
        if (line.empty() or self.max_wait <= 0) and self.try_acquire():
            return self
        if self.max_wait <= 0:
            self._count_refusal()
            self._full()
        # Waiters queue in arrival order and only the first looks for a slot (polled on
        # the loop: a slot frees when a call ends, in native code or on another thread,
        # which the line cannot hear), so a freed slot goes to the longest waiting and a
        # crowd of waiters does not try all at once.
        deadline = time.monotonic() + self.max_wait

        async def due_in() -> float:
            if self.in_flight < self.max_concurrent:
                return 0.0
            left = deadline - time.monotonic()
            return min(_ASYNC_POLL, left) if left > 0 else _ASYNC_POLL

        async def attempt() -> Attempt[bool]:
            return Attempt(self.try_acquire(), True)

        got = await line.take(
            attempt,
            due_in,
            high=False,
            max_wait=self.max_wait,
            now=time.monotonic,
            sleep=asyncio.sleep,
            real_time=True,
        )
        if not got.taken:
            self._count_refusal()
            self._full()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def get_stats(self) -> dict[str, object]:
        """The cap, the calls in flight now and the calls refused so far."""
        return {
            "name": self.name,
            "max_concurrent": self.max_concurrent,
            "in_flight": self.in_flight,
            "rejections": self.rejections,
        }

    def __repr__(self) -> str:
        return (
            f"Bulkhead(name={self.name!r}, max_concurrent={self.max_concurrent}, "
            f"in_flight={self.in_flight})"
        )
