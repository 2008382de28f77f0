"""A 1 ms ticker beside waiting tasks: how long the event loop went without running it.

A wait that sleeps the thread instead of awaiting shows as a gap as long as the wait.
Used by tests/test_async_loop_lag.py and benches/loop_lag.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: A tick is due every 1 ms.
TICK = 0.001


async def _ticker(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(TICK)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def while_ticking(waiters: Callable[[], Awaitable[T]]) -> tuple[T, list[float], float]:
    """Runs ``waiters()`` beside a 1 ms ticker: (their result, the gaps between ticks,
    seconds taken)."""
    stop, gaps = asyncio.Event(), list[float]()
    ticking = asyncio.ensure_future(_ticker(stop, gaps))
    await asyncio.sleep(TICK)  # the ticker's first tick is taken before the waiters
    started = time.perf_counter()
    try:
        result = await waiters()
    finally:
        taken = time.perf_counter() - started
        stop.set()
        await ticking
    return result, gaps, taken


def p99(gaps: list[float]) -> float:
    ordered = sorted(gaps)
    return ordered[max(int(len(ordered) * 0.99) - 1, 0)]
