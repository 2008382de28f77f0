"""The attempts of an ``async def`` function's calls in Python: retries, timeouts,
refusals and fallbacks.

Two users: the native awaitable (``native_async``: an admission that never waits), which
runs a call's first attempt itself and hands the rest to ``Attempts.run`` only after a
refusal or a failure; and the coroutine wrapper with a retry policy or a timeout
(``async_wrapper``: an admission that is awaited), which runs every attempt here. The order
is the guard's: the fallback outermost, then the retries, each attempt taking the
breaker's admission, its tokens and a bulkhead slot, then the timeout around the call
alone.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from peak_resilience._backends.redis import awaited
from peak_resilience._deadlines import Deadlines, TimedOut
from peak_resilience._native import AsyncGuard, Guard, Retry
from peak_resilience.errors import BulkheadFull

__all__ = ["Attempts", "async_wrapper", "native_async", "readmitter", "waits_on_loop"]


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
    native: Guard, func: Callable[..., Awaitable[Any]], attempts: Attempts, retry: Retry | None
) -> Callable[..., Awaitable[Any]]:
    """The coroutine wrapper, for a guard whose admission is awaited (see
    ``waits_on_loop``); the others get the native awaitable (``native_async``)."""
    called = None if retry is None else retry._called
    run = attempts.run

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if called is not None:
            called()
        return await run(args, kwargs)

    wrapper.guard = native  # type: ignore[attr-defined]
    return wrapper


def native_async(native: Guard, attempts: Attempts) -> AsyncGuard:
    """The native awaitable's guard, for a guard whose admission never waits: each call
    is one native object driving the function's coroutine; a refusal, a retry or a
    fallback continues in ``Attempts.run``."""
    deadlines = attempts.deadlines
    if deadlines is None:
        return AsyncGuard(native, attempts.after_refusal, attempts.after_failure)
    return AsyncGuard(
        native,
        attempts.after_refusal,
        attempts.after_failure,
        deadline_start=deadlines.start,
        deadline_ended=Deadlines.ended,
        deadline_failed=attempts.deadline_failed,
    )


class Attempts:
    """The attempts of one guarded function's calls, in Python: the whole call for the
    coroutine wrapper, and for the native awaitable what follows a refusal or a failure."""

    def __init__(
        self,
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
    ) -> None:
        self._native = native
        self._func = func
        self._use_fallback = use_fallback
        self._has_fallback = has_fallback
        self._admit = admit
        self._on_reject = on_reject
        self._retry = retry
        #: The calls' deadlines (``timeout``), if any.
        self.deadlines = None if timeout is None else Deadlines(timeout)
        self._on_timeout = on_timeout
        self._async_sleep = async_sleep
        self._remote = remote
        self._links = awaited.links_of(native.breaker, native.limiter)
        self._waits = waits_on_loop(native, max_wait, remote)
        self._readmit = readmitter(native, admit, self._waits)

    def after_refusal(
        self, refusal: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> Awaitable[Any]:
        """The rest of a call whose first admission was refused with ``refusal``."""
        return self.run(args, kwargs or {}, refusal=refusal)

    def after_failure(
        self,
        error: BaseException,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        falls_back: bool,
    ) -> Awaitable[Any]:
        """The rest of a call whose first attempt raised ``error`` (recorded already)."""
        return self.run(args, kwargs or {}, failure=error, falls_back=falls_back)

    def deadline_failed(self, entry: list[Any] | None, error: BaseException) -> BaseException:
        """What the caller of a call that raised ``error`` gets (``TimedOut`` if its own
        deadline cancelled it); ``on_timeout`` is told of a timeout."""
        given = error
        if entry is not None and self.deadlines is not None:
            given = self.deadlines.failed(entry, error)
            if given is not error:
                given.__suppress_context__ = True  # as `raise given from None`
        if self._on_timeout is not None and isinstance(given, TimedOut):
            self._on_timeout()
        return given

    async def _exit_call(
        self, admission: int, started: int, error: Any, result: Any = None
    ) -> bool:
        exit_now = self._native._exit
        if self._remote:
            breaker = self._native.breaker
            return bool(
                await awaited.outcome(
                    breaker, self._links, exit_now, admission, started, error, result
                )
            )
        return exit_now(admission, started, error, result)

    async def _retried(self, error: BaseException, retries: int) -> bool:
        delay = None if self._retry is None else self._retry._delay(error, retries)
        if delay is None:
            return False
        await self._async_sleep(delay)
        return True

    async def run(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        refusal: BaseException | None = None,
        failure: BaseException | None = None,
        falls_back: bool = False,
    ) -> Any:
        """A call's attempts until one returns, or none is left: from the start, or after
        a first admission refused with ``refusal``, or a first attempt that raised
        ``failure`` (recorded already; ``falls_back`` its verdict)."""
        native, deadlines, on_reject = self._native, self.deadlines, self._on_reject
        retries = 0
        while True:
            if failure is None:
                try:
                    try:
                        if refusal is not None:
                            first, refusal = refusal, None
                            raise first
                        admission = await self._admit() if self._waits else native._admit()
                    except Exception as first:
                        admission = await self._readmit(first)
                except Exception as refused:
                    if await self._retried(refused, retries):
                        retries += 1
                        continue
                    if on_reject is not None:
                        on_reject(refused)
                    if self._has_fallback:
                        return await self._use_fallback(args, kwargs)
                    raise
                started = native._started()
                try:
                    if deadlines is None:
                        result = await self._func(*args, **kwargs)
                    else:
                        entry = deadlines.start()
                        try:
                            result = await self._func(*args, **kwargs)
                        except BaseException as raised:
                            given = self.deadline_failed(entry, raised)
                            if given is raised:
                                raise
                            raise given from None
                        deadlines.ended(entry)
                except BaseException as exc:
                    if deadlines is None:
                        # (With a deadline, deadline_failed told on_timeout already.)
                        self.deadline_failed(None, exc)
                    falls_back = await self._exit_call(admission, started, exc)
                    failure = exc
                else:
                    await self._exit_call(admission, started, None, result)
                    return result
            failed, failure = failure, None
            if isinstance(failed, Exception) and await self._retried(failed, retries):
                retries += 1
                continue
            if falls_back:
                return await self._use_fallback(args, kwargs)
            raise failed
