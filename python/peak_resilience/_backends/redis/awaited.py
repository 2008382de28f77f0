"""The Redis steps of async calls, as the guard and the limiter await them.

What they import at start-up: the redis.asyncio machinery (``on_loop``: connections,
scripts, redis-py) is imported when the first step runs, so that a program that never
awaits a Redis step never pays for it. See ``on_loop`` for what each step does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Links", "admission", "links_of", "outcome", "step"]

T = TypeVar("T")

#: The Redis links of a guard's breaker and limiter.
Links = tuple[Any, ...]


def links_of(*guards: Any) -> tuple[Any, ...]:
    """The Redis links of ``guards`` (breakers, limiters; None and those not on Redis
    left out): the only ones an async step answers on redis.asyncio (a call on another,
    made meanwhile on the same thread by a finalizer or a listener, runs as it would)."""
    return tuple(
        guard.store.link
        for guard in guards
        if guard is not None and getattr(guard, "store", None) is not None
    )


async def admission(
    native: Callable[[], T], give_back: Callable[[T], object], breaker: Any, links: Links
) -> T:
    """A call's admission (see ``on_loop.admission``)."""
    from peak_resilience._backends.redis import on_loop  # start-up time, see the module

    return await on_loop.admission(native, give_back, breaker, links)


async def step(native: Callable[[], T], links: Links) -> T:
    """One native step that sends one Redis command (see ``on_loop.step``)."""
    from peak_resilience._backends.redis import on_loop  # start-up time, see the module

    return await on_loop.step(native, links)


async def outcome(breaker: Any, links: Links, native: Callable[..., T], *args: Any) -> T:
    """A call's outcome recorded (see ``on_loop.outcome``)."""
    from peak_resilience._backends.redis import on_loop  # start-up time, see the module

    return await on_loop.outcome(breaker, links, native, *args)
