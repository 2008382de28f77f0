"""Guarding a call with a breaker or limiter whose state is in Redis.

The native ``Guard`` reads the native state machines directly, which for a Redis-backed
object would be the local fallback. So when either part lives in Redis, the guard runs in
Python through the objects' own methods (``_enter`` / ``_exit``, ``acquire``): a Redis
round trip costs a hundred microseconds, next to which a Python wrapper is free. The
semantics are the native guard's: fallback, ``fallback_on_failure``, ``max_wait``,
non-``Exception`` exits that count neither way.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from peak_resilience._guard import MISSING, _async_wrapper
from peak_resilience.errors import RateLimitExceeded

if TYPE_CHECKING:
    from peak_resilience._breaker import CircuitBreaker
    from peak_resilience._limiter import RateLimiter
    from peak_resilience._native import OperationStats

__all__ = ["remote_guard"]

_NORMAL = 1


def remote_guard(
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
) -> Any:
    """``func`` guarded in Python; the same contract as ``_guard.guard``."""
    has_fallback = fallback is not MISSING

    def rate_limited(wait: float) -> RateLimitExceeded:
        # Never 0: a wait that keeps coming back as 0 must not let a waiting caller spin.
        assert limiter is not None
        return RateLimitExceeded(limiter.name, endpoint, max(float(wait), 0.001))

    def refused(exc: BaseException) -> None:
        if on_reject is not None:
            on_reject(exc)

    def admit_now() -> int:
        """The breaker's admission, then a token; raises on refusal, taking nothing."""
        admission = breaker._enter() if breaker is not None else _NORMAL
        if limiter is not None and not limiter.acquire(endpoint, cost, priority=priority):
            if breaker is not None:
                breaker._exit(admission, None)
            raise rate_limited(limiter.get_wait_time(endpoint, cost, priority=priority))
        return admission

    def finish(
        admission: int, started: float, error: BaseException | None, result: Any = None
    ) -> bool:
        """Records the outcome; True when the fallback should replace the error."""
        if error is not None and not isinstance(error, Exception):
            if breaker is not None:
                breaker._exit(admission, None)
            return False
        elapsed = max(time.monotonic() - started, 0.0)
        if operation is not None:
            operation.record_latency(elapsed)
            if error is None:
                operation.record_success()
            else:
                operation.record_failure(type(error).__name__)
        if breaker is not None:
            # The breaker's outcome rules, judged natively as by the in-process guard.
            if error is not None:
                verdict = breaker.classify_exception(error)
            elif breaker.failure_result is not None and breaker.is_failure_result(result):
                verdict = "failure"
            else:
                verdict = "success"
            if verdict == "ignored":
                breaker._exit(admission, None)
            else:
                slow_after = breaker.slow_call_duration
                slow = slow_after is not None and elapsed >= slow_after
                breaker._exit(admission, verdict == "success", slow=slow)
        return error is not None and has_fallback and fallback_on_failure

    def sync_fallback(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return fallback(*args, **kwargs) if callable(fallback) else fallback

    if inspect.iscoroutinefunction(func):
        # The same coroutine wrapper as the native guard's, over these steps.
        steps = SimpleNamespace(_admit=admit_now, _started=time.monotonic, _exit=finish)
        return _async_wrapper(
            steps, func, fallback, has_fallback, max_wait, async_sleep or asyncio.sleep, on_reject
        )

    do_sleep = sleep or time.sleep

    def admit() -> int:
        waited = 0.0
        while True:
            try:
                return admit_now()
            except RateLimitExceeded as exc:
                if max_wait <= 0 or waited + exc.retry_after > max_wait:
                    raise
                do_sleep(exc.retry_after)
                waited += exc.retry_after

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            admission = admit()
        except Exception as exc:
            refused(exc)
            if has_fallback:
                return sync_fallback(args, kwargs)
            raise
        started = time.monotonic()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            if finish(admission, started, exc):
                return sync_fallback(args, kwargs)
            raise
        finish(admission, started, None, result)
        return result

    return wrapper
