"""Wrapping a function in its policies, for sync and async functions alike.

The policies apply in one order, outermost first: fallback, retry, breaker, limiter,
bulkhead, timeout, the call. Every retry attempt passes the breaker, takes its tokens
and a bulkhead slot.

A sync function becomes a native ``Guard``: one call into Rust per invocation runs the
breaker check, takes the token, times the call and records its outcome, whatever backend
the breaker and the limiter keep their state in. An async function whose admission never
waits becomes a native ``AsyncGuard``: each call is one native awaitable that takes the
admission, drives the function's coroutine and records its outcome (Rust cannot await, but
it can step a coroutine); a refusal, a retry or a fallback continues in Python
(``_async_policies``). One whose admission is awaited (tokens or a slot worth waiting for,
a Redis round trip) gets a coroutine wrapper around the same native steps (``_admit`` /
``_exit``). Which wrapper is chosen at decoration time, as stamina does.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from peak_resilience import _async_policies as async_policies
from peak_resilience._backends.redis import awaited
from peak_resilience._native import (
    Bulkhead,
    CircuitBreaker,
    Guard,
    OperationStats,
    RateLimiter,
    Retry,
)
from peak_resilience._waiting_line import Attempt, line_for
from peak_resilience.errors import BulkheadFull, RateLimitExceeded

P = ParamSpec("P")
R = TypeVar("R")

#: Marks "no fallback given"; None is a legitimate fallback value.
MISSING: Any = object()


def guard(
    func: Callable[..., Any],
    *,
    breaker: CircuitBreaker | None = None,
    limiter: RateLimiter | None = None,
    endpoint: str | None = None,
    cost: int = 1,
    operation: OperationStats | None = None,
    fallback: Any = MISSING,
    fallback_on_failure: bool = False,
    max_wait: float = 0.0,
    sleep: Callable[[float], Any] | None = None,
    async_sleep: Callable[[float], Awaitable[Any]] | None = None,
    on_reject: Callable[[BaseException], Any] | None = None,
    priority: str | None = None,
    bulkhead: Bulkhead | None = None,
    retry: Retry | None = None,
    timeout: float | None = None,
    on_timeout: Callable[[], Any] | None = None,
) -> Any:
    """Returns ``func`` guarded; keeps its name, docstring and signature.

    ``fallback`` (a value, or a callable taking the function's arguments) is returned
    instead of raising when the call is refused, and also when it fails if
    ``fallback_on_failure``. ``max_wait`` seconds may be spent waiting for a token.
    ``on_reject(exception)`` is told of each call refused (for the rejection log).
    ``priority="high"`` lets the calls use the limiter's priority reserve.
    ``bulkhead`` caps the calls in flight; ``retry`` tries failures of its classes again;
    ``timeout`` seconds cancels an ``async def`` call (``on_timeout()`` is told).
    """
    has_fallback = fallback is not MISSING
    is_async = inspect.iscoroutinefunction(func)
    if timeout is not None:
        _check_timeout(func, timeout, is_async)
    native = Guard(
        func,
        breaker=breaker,
        limiter=limiter,
        endpoint=endpoint,
        cost=cost,
        operation=operation,
        fallback=fallback if has_fallback else None,
        has_fallback=has_fallback,
        fallback_on_failure=fallback_on_failure,
        max_wait=max_wait,
        sleep=sleep,
        on_reject=on_reject,
        priority=priority,
        bulkhead=bulkhead,
        retry=retry,
    )
    if not is_async:
        # The guard reads the function's name, docstring, module and signature through it
        # (``__wrapped__``) rather than keeping copies (functools.update_wrapper): only
        # what the function itself carries (a framework's marks) is copied.
        carried = getattr(func, "__dict__", None)
        if carried:
            native.__dict__.update(carried)
            # A decorated function's own __wrapped__ is not the guard's: the guard wraps it.
            native.__dict__.pop("__wrapped__", None)
        return native
    # A breaker or limiter kept in Redis: its steps are awaited on redis.asyncio.
    remote = any(guard is not None and guard.store is not None for guard in (breaker, limiter))
    import asyncio  # here: a caller that never awaits need not import it

    async_sleep = async_sleep or asyncio.sleep
    take_tokens = _token_taker(
        limiter, endpoint, cost, priority, max_wait, async_sleep, remote=remote
    )
    admit = _admitter(native, take_tokens, async_sleep, remote=remote)
    waits = async_policies.waits_on_loop(native, max_wait, remote)
    if waits and retry is None and timeout is None:
        return _async_wrapper(native, func, fallback, has_fallback, admit, on_reject, remote=remote)
    attempts = async_policies.Attempts(
        native,
        func,
        _fallback_caller(fallback, has_fallback),
        has_fallback,
        admit,
        on_reject,
        max_wait=max_wait,
        retry=retry,
        timeout=timeout,
        on_timeout=on_timeout,
        async_sleep=async_sleep,
        remote=remote,
    )
    if waits:
        return async_policies.async_wrapper(native, func, attempts, retry)
    # Nothing to await before the call: one native awaitable per call.
    decorated = async_policies.native_async(native, attempts)
    functools.update_wrapper(decorated, func)
    _mark_coroutine_function(decorated, func)
    return decorated


def _mark_coroutine_function(decorated: Any, func: Callable[..., Any]) -> None:
    """Makes ``inspect.iscoroutinefunction(decorated)`` true, as for ``func``."""
    mark = getattr(inspect, "markcoroutinefunction", None)  # 3.12+
    if mark is not None:
        mark(decorated)
        return
    # 3.10-3.11 read the flag of a function-like object's code: the function's own, or
    # (a partial, a callable object) an async def's.
    code = getattr(inspect.unwrap(func), "__code__", None)
    decorated.__code__ = code if code is not None else _coroutine_code.__code__
    decorated.__defaults__ = getattr(func, "__defaults__", None)
    decorated.__kwdefaults__ = getattr(func, "__kwdefaults__", None)
    if "__name__" not in decorated.__dict__:  # a partial has none to copy
        decorated.__name__ = type(func).__name__


async def _coroutine_code() -> None:
    """Lends its code object's coroutine flag (see ``_mark_coroutine_function``)."""


def _check_timeout(func: Callable[..., Any], timeout: float, is_async: bool) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not is_async:
        name = getattr(func, "__qualname__", repr(func))
        raise ValueError(
            f"timeout= applies to async def functions only, and {name} is not one: a "
            "running Python thread cannot be cancelled, so a timeout could only abandon "
            "the call while it goes on (an order would still be sent). Use the breaker's "
            "slow_call_duration to count slow calls as failures instead"
        )


def _fallback_caller(
    fallback: Any, has_fallback: bool
) -> Callable[[tuple[Any, ...], dict[str, Any]], Awaitable[Any]]:
    """The coroutine function giving the fallback for a call's arguments."""
    fallback_is_callable = has_fallback and callable(fallback)

    async def use_fallback(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not fallback_is_callable:
            return fallback
        result = fallback(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    return use_fallback


def _admitter(
    native: Guard,
    take_tokens: TokenTaker,
    async_sleep: Callable[[float], Awaitable[Any]],
    *,
    remote: bool,
) -> Callable[[], Awaitable[int]]:
    """The coroutine function taking a call's admission: the breaker, tokens (waiting up
    to ``max_wait`` for them, in the budget's line) and a bulkhead slot (waiting up to
    its own ``max_wait``), on the loop, never blocking it."""
    admit_now, exit_now, started_now = native._admit, native._exit, native._started
    bulkhead, breaker = native.bulkhead, native.breaker
    links = awaited.links_of(breaker, native.limiter)

    def give_back(admission: int) -> None:
        import asyncio  # here: a caller that never awaits need not import it

        exit_now(admission, started_now(), asyncio.CancelledError())

    async def admit_once() -> int:
        if not remote:
            return admit_now()
        return await awaited.admission(admit_now, give_back, breaker, links)

    async def admit() -> int:
        # Read per admission: a configuration reload may change it.
        slot_wait = 0.0 if bulkhead is None else bulkhead.max_wait
        slot_waited = 0.0
        while True:
            try:
                return await take_tokens(admit_once)
            except BulkheadFull:
                if bulkhead is None or slot_waited >= slot_wait:
                    if bulkhead is not None and slot_wait > 0:
                        # Without a wait the native step counted it already.
                        bulkhead._count_refusal()
                    raise
            # Look before trying again: a try while every slot is taken would spend the
            # breaker's admission and tokens on a call that cannot run.
            while True:
                pause = min(_SLOT_POLL, slot_wait - slot_waited)
                await async_sleep(pause)
                slot_waited += pause
                if bulkhead.in_flight < bulkhead.max_concurrent or slot_waited >= slot_wait:
                    break

    return admit


#: Takes an admission with the function trying once, waiting for tokens as it may.
TokenTaker = Callable[[Callable[[], Awaitable[int]]], Awaitable[int]]


def _token_taker(
    limiter: RateLimiter | None,
    endpoint: str | None,
    cost: int,
    priority: str | None,
    max_wait: float,
    async_sleep: Callable[[float], Awaitable[Any]],
    *,
    remote: bool,
) -> TokenTaker:
    """Takes an admission with ``admit_once``; when the tokens are missing and may come
    within ``max_wait``, waits for them in the budget's line (see ``_waiting_line``)."""
    now = getattr(limiter, "_now", time.monotonic)
    real_time = getattr(limiter, "_clock", None) is None
    links = awaited.links_of(limiter)

    async def due_in() -> float:
        assert limiter is not None
        if remote:
            return await awaited.step(
                functools.partial(limiter.get_wait_time, endpoint, cost, priority=priority),
                links,
            )
        return limiter.get_wait_time(endpoint, cost, priority=priority)

    async def take(admit_once: Callable[[], Awaitable[int]]) -> int:
        if limiter is None or max_wait <= 0:
            return await admit_once()

        async def attempt() -> Attempt[int]:
            try:
                return Attempt(True, await admit_once())
            except RateLimitExceeded as refusal:
                return Attempt(False, wait=refusal.retry_after)

        line = line_for(limiter.bucket_for(endpoint))
        if line.empty():
            try:
                return await admit_once()
            except RateLimitExceeded as refusal:
                if refusal.retry_after > max_wait:
                    raise
        taken = await line.take(
            attempt,
            due_in,
            high=priority == "high",
            max_wait=max_wait,
            now=now,
            sleep=async_sleep,
            real_time=real_time,
        )
        if taken.taken:
            return cast("int", taken.value)
        # Out of time: one last try raises the refusal the caller is given (or takes
        # tokens that came meanwhile).
        return await admit_once()

    return take


#: Seconds between two looks for a free bulkhead slot while an async call waits for one.
_SLOT_POLL = 0.005


def _async_wrapper(
    native: Guard,
    func: Callable[..., Awaitable[Any]],
    fallback: Any,
    has_fallback: bool,
    admit: Callable[[], Awaitable[int]],
    on_reject: Callable[[BaseException], Any] | None,
    *,
    remote: bool,
) -> Callable[..., Awaitable[Any]]:
    """The coroutine wrapper of a guard whose admission is awaited (tokens or a slot
    worth waiting for, a Redis round trip) and that has no retry or timeout; one that
    never waits is the native awaitable (``async_policies.native_async``)."""
    use_fallback = _fallback_caller(fallback, has_fallback)
    # Bound once: each attribute lookup on the per-call path costs as much as a call.
    started_now, exit_now = native._started, native._exit
    breaker, returned_now = native.breaker, native._returned
    links = awaited.links_of(breaker, native.limiter)

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            admission = await admit()
        except Exception as refusal:
            if on_reject is not None:
                on_reject(refusal)
            if has_fallback:
                return await use_fallback(args, kwargs)
            raise
        started = started_now()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            # CancelledError and other non-Exception exits give a trial permit back.
            falls_back = (
                await awaited.outcome(breaker, links, exit_now, admission, started, exc)
                if remote
                else exit_now(admission, started, exc)
            )
            if falls_back:
                return await use_fallback(args, kwargs)
            raise
        if remote:
            await awaited.outcome(breaker, links, exit_now, admission, started, None, result)
        else:
            returned_now(admission, started, result)
        return result

    wrapper.guard = native  # type: ignore[attr-defined]
    return wrapper


def typed(decorated: Any, func: Callable[P, R]) -> Callable[P, R]:
    """The guarded object, typed as the function it wraps."""
    return cast("Callable[P, R]", decorated)
