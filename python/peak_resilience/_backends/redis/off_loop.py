"""The Redis steps of async calls on Sentinel and Cluster, run off the event loop.

Async calls on one Redis run on redis.asyncio (``on_loop``); this pool is kept for the
topologies whose following (a sentinel asked for the master, a MOVED reply followed) the
sync link does and the async one does not yet.

The native breaker and bucket ask their Redis store synchronously (Rust cannot await), so
an ``async def`` guarded call or ``acquire_async`` on Redis hands each step (admission,
outcome, token) to a pool of threads and awaits it: the loop keeps running while a step
waits for Redis, at most ``redis_timeout``, and the step is the very one a sync call runs
(same scripts, same ``on_backend_error``). Concurrent calls go out together, up to
``THREADS`` at once, rather than one after the other. A forked child makes its own
threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from peak_resilience._fork import after_fork_in_child

__all__ = ["THREADS", "admission", "off_loop"]

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


#: Threads running Redis steps for async calls: enough for many calls on the wire at once,
#: few enough that waking together they do not keep the loop from the GIL for long (32
#: finished 50 calls through a 45 ms link in 6 round trips but held the loop up to 47 ms;
#: 16 take 11 round trips and hold it under 25 ms).
THREADS = 16


def _threads() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(
                    max_workers=THREADS, thread_name_prefix="peak-resilience-redis"
                )
    return _executor


async def off_loop(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in a thread of the pool, awaited. A task cancelled meanwhile does not
    stop it: an outcome being recorded is recorded."""
    import asyncio  # here: a caller that never awaits need not import it

    return await asyncio.wrap_future(_threads().submit(call, *args))


async def admission(admit: Callable[[], int], give_back: Callable[[int], object]) -> int:
    """``admit()`` off the loop; an admission granted after its task was cancelled is
    given back with ``give_back(admission)`` (off the loop too), so that no trial permit
    is lost with the task."""
    import asyncio  # here: a caller that never awaits need not import it

    granted = _threads().submit(admit)
    try:
        return await asyncio.wrap_future(granted)
    except asyncio.CancelledError:
        granted.add_done_callback(lambda done: _give_back(done, give_back))
        raise


def _give_back(done: Future[int], give_back: Callable[[int], object]) -> None:
    if not done.cancelled() and done.exception() is None:
        _threads().submit(give_back, done.result())


def _forget_threads_after_fork() -> None:
    global _executor, _lock
    _executor = None
    _lock = threading.Lock()


after_fork_in_child(_forget_threads_after_fork)
