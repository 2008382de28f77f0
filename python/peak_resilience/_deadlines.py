"""The timeouts of a guarded ``async def`` function's calls, cheap when nothing times out.

``asyncio.timeout`` costs a timer handle per call (made, pushed on the loop's heap,
cancelled) and a context manager's two coroutine steps: several microseconds, many times
the guard itself. Every call of one guarded function has the same timeout, so their
deadlines come in order: each call appends its deadline to a queue of the function's
(one per event loop), and one timer of the loop, set for the oldest deadline still
running, cancels the calls that outlive theirs. A call that ends marks its entry done;
done entries leave the front of the queue as they reach it. A call costs a clock
reading, a task lookup, a list and two queue operations (measured: about a third of
``asyncio.timeout``'s cost); the timer fires once per timeout period at most, not once
per call.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["Deadlines", "TimedOut"]

#: An entry's state: the call runs, has ended, or was cancelled for its deadline.
_RUNNING, _DONE, _EXPIRED = 0, 1, 2


class TimedOut(TimeoutError):
    """The call ran past its ``timeout`` and was cancelled."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the call did not finish within its timeout of {seconds:g}s")


class Deadlines:
    """The deadlines of one guarded function's calls (``seconds`` each), per event loop."""

    __slots__ = ("_cancelled", "_current_task", "_queues", "_running_loop", "seconds")

    def __init__(self, seconds: float) -> None:
        # Here, when an async def function is given a timeout: importing the decorator
        # module alone must not import asyncio (see tests/test_import_cost.py).
        import asyncio

        self.seconds = seconds
        self._queues: dict[asyncio.AbstractEventLoop, _Queue] = {}
        self._running_loop = asyncio.get_running_loop
        self._current_task = asyncio.current_task
        self._cancelled = asyncio.CancelledError

    def start(self, elapsed: float = 0.0) -> list[Any]:
        """Starts the clock of the call running in the current task, which has run for
        ``elapsed`` seconds already; pass what it returns to ``ended`` (or ``failed``)
        when the call ends. Every call's path: inlined."""
        loop = self._running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queue_for(loop)
        # [deadline, task, state, the queue's entries]. current_task(loop): without the
        # loop it would look it up again, and each lookup checks the pid (a syscall).
        deadline = queue.now() - elapsed + self.seconds
        entry: list[Any] = [deadline, self._current_task(loop), _RUNNING, queue.entries]
        queue.entries.append(entry)
        if queue.timer is None:
            queue.arm(deadline)
        return entry

    @staticmethod
    def ended(entry: list[Any]) -> None:
        """The call of ``entry`` ended; the done entries leave the front of the queue."""
        if entry[2] == _RUNNING:
            entry[2] = _DONE
        entries = entry[3]
        while entries and entries[0][2] != _RUNNING:
            entries.popleft()

    def failed(self, entry: list[Any], error: BaseException) -> BaseException:
        """The call of ``entry`` raised ``error``: what its caller gets, ``TimedOut`` if the
        cancellation was this timeout's own."""
        Deadlines.ended(entry)
        if entry[2] != _EXPIRED:
            return error
        uncancel = getattr(entry[1], "uncancel", None)  # 3.11+: the request is ours
        if uncancel is not None:
            uncancel()
        if isinstance(error, self._cancelled):
            return TimedOut(self.seconds)
        return error

    def _queue_for(self, loop: asyncio.AbstractEventLoop) -> _Queue:
        """A queue for a loop not seen yet; the queues of closed loops are dropped (a
        loop is held here until then, so a new one never reuses a closed one's id)."""
        # list(): a copy taken at once, as another thread may add its loop meanwhile.
        for seen in list(self._queues):
            if seen.is_closed():
                self._queues.pop(seen, None)
        queue = self._queues[loop] = _Queue(loop)
        return queue


class _Queue:
    """The running calls of one function on one loop, oldest deadline first."""

    __slots__ = ("_loop", "entries", "now", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        import asyncio

        self._loop = loop
        # The loop's clock, read without a method call where it is time.monotonic.
        self.now: Callable[[], float] = (
            time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        )
        self.entries: deque[list[Any]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def arm(self, deadline: float) -> None:
        self.timer = self._loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        """Cancels the calls past their deadline; set again for the next one."""
        self.timer = None
        now, entries = self.now(), self.entries
        while entries:
            entry = entries[0]
            if entry[2] == _RUNNING:
                if entry[0] > now:
                    self.arm(entry[0])
                    return
                entry[2] = _EXPIRED
                if entry[1] is not None:
                    entry[1].cancel()
            entries.popleft()
