"""The coroutine wrapper of an ``async def`` function with a retry policy or a timeout.

Kept apart from the plain async wrapper so that a guard without these policies pays
nothing for them. The order is the guard's: the fallback outermost, then the retries,
each attempt taking the breaker's admission, its tokens and a bulkhead slot, then the
timeout around the call alone.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from peak_resilience._backends.redis import awaited
from peak_resilience._deadlines import Deadlines, TimedOut
from peak_resilience._native import Guard, Retry
from peak_resilience.errors import BulkheadFull

__all__ = ["async_wrapper", "readmitter", "waits_on_loop"]


def waits_on_loop(native: Guard, max_wait: float, remote: bool) -> bool:
    """Whether an async call's admission must be awaited (it may wait for tokens, a
    slot or the network) rather than taken in one native step."""
    bulkhead = native.bulkhead
    return max_wait > 0 or remote or (bulkhead is not None and bulkhead.max_wait > 0)


def readmitter(
    native: Guard, admit: Callable[[], Awaitable[int]], waits: bool
) -> Callable[[BaseException], Awaitable[int]]:
    """What follows a refused one-step admission: the refusal again, unless it was a
    full bulkhead that a configuration reload has since given a wait (the wrapper was
    made when it had none): then the call waits for its slot as if made with it."""
    bulkhead = native.bulkhead

    async def readmit(refusal: BaseException) -> int:
        if waits or bulkhead is None or not isinstance(refusal, BulkheadFull):
            raise refusal
        if bulkhead.max_wait <= 0:
            raise refusal
        return await admit()

    return readmit


def async_wrapper(
    native: Guard,
    func: Callable[..., Awaitable[Any]],
    use_fallback: Callable[[tuple[Any, ...], dict[str, Any]], Awaitable[Any]],
    has_fallback: bool,
    admit: Callable[[], Awaitable[int]],
    on_reject: Callable[[BaseException], Any] | None,
    *,
    max_wait: float,
    retry: Retry | None,
    timeout: float | None,
    on_timeout: Callable[[], Any] | None,
    async_sleep: Callable[[float], Awaitable[Any]],
    remote: bool,
) -> Callable[..., Awaitable[Any]]:
    # Bound once: each attribute lookup on the per-call path costs as much as a call.
    started_now, exit_now, admit_now = native._started, native._exit, native._admit
    called = None if retry is None else retry._called
    breaker = native.breaker
    links = awaited.links_of(breaker, native.limiter)
    waits = waits_on_loop(native, max_wait, remote)
    readmit = readmitter(native, admit, waits)

    async def exit_call(admission: int, started: int, error: Any, result: Any = None) -> bool:
        if remote:
            return bool(
                await awaited.outcome(breaker, links, exit_now, admission, started, error, result)
            )
        return exit_now(admission, started, error, result)

    async def retried(error: BaseException, retries: int) -> bool:
        delay = None if retry is None else retry._delay(error, retries)
        if delay is None:
            return False
        await async_sleep(delay)
        return True

    deadlines = None if timeout is None else Deadlines(timeout)

    async def timed_out(error: BaseException) -> None:
        if on_timeout is not None and isinstance(error, TimedOut):
            on_timeout()

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if called is not None:
            called()
        retries = 0
        while True:
            try:
                try:
                    admission = await admit() if waits else admit_now()
                except Exception as first:
                    admission = await readmit(first)
            except Exception as refusal:
                if await retried(refusal, retries):
                    retries += 1
                    continue
                if on_reject is not None:
                    on_reject(refusal)
                if has_fallback:
                    return await use_fallback(args, kwargs)
                raise
            started = started_now()
            try:
                if deadlines is None:
                    result = await func(*args, **kwargs)
                else:
                    entry = deadlines.start()
                    try:
                        result = await func(*args, **kwargs)
                    except BaseException as error:
                        given = deadlines.failed(entry, error)
                        if given is error:
                            raise
                        raise given from None
                    deadlines.ended(entry)
            except BaseException as exc:
                await timed_out(exc)
                falls_back = await exit_call(admission, started, exc)
                if isinstance(exc, Exception) and await retried(exc, retries):
                    retries += 1
                    continue
                if falls_back:
                    return await use_fallback(args, kwargs)
                raise
            await exit_call(admission, started, None, result)
            return result

    wrapper.guard = native  # type: ignore[attr-defined]
    return wrapper
