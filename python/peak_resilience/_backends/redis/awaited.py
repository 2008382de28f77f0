"""The Redis steps of async calls, as the guard and the limiter await them.

What they import at start-up: the redis.asyncio machinery (``on_loop``: connections,
scripts, redis-py) is imported when the first step runs, so that a program that never
awaits a Redis step never pays for it. See ``on_loop`` for what each step does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["admission", "outcome", "step"]

T = TypeVar("T")


async def admission(native: Callable[[], T], give_back: Callable[[T], object], breaker: Any) -> T:
    """A call's admission (see ``on_loop.admission``)."""
    from peak_resilience._backends.redis import on_loop  # start-up time, see the module

    return await on_loop.admission(native, give_back, breaker)


async def step(native: Callable[[], T]) -> T:
    """One native step that sends one Redis command (see ``on_loop.step``)."""
    from peak_resilience._backends.redis import on_loop  # start-up time, see the module

    return await on_loop.step(native)


async def outcome(breaker: Any, native: Callable[..., T], *args: Any) -> T:
    """A call's outcome recorded (see ``on_loop.outcome``)."""
    from peak_resilience._backends.redis import on_loop  # start-up time, see the module

    return await on_loop.outcome(breaker, native, *args)
