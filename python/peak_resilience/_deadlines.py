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

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Deadlines", "TimedOut"]

#: An entry's state: the call runs, has ended, or was cancelled for its deadline.
_RUNNING, _DONE, _EXPIRED = 0, 1, 2


class TimedOut(TimeoutError):
    """The call ran past its ``timeout`` and was cancelled."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the call did not finish within its timeout of {seconds:g}s")


class Deadlines:
    """The deadlines of one guarded function's calls (``seconds`` each), per event loop."""

    __slots__ = ("_queues", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._queues: dict[asyncio.AbstractEventLoop, _Queue] = {}

    def start(self) -> list[Any]:
        """Starts the clock of the call running in the current task; pass what it returns
        to ``ended`` (or ``failed``) when the call ends."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None or queue.closed():
            queue = self._queues[loop] = _Queue(loop, self.seconds)
            self._forget_closed_loops()
        return queue.start()

    @staticmethod
    def ended(entry: list[Any]) -> None:
        """The call of ``entry`` returned in time."""
        if entry[2] == _RUNNING:
            entry[2] = _DONE
        entry[3].drop_done()

    def failed(self, entry: list[Any], error: BaseException) -> BaseException:
        """The call of ``entry`` raised ``error``: what its caller gets, ``TimedOut`` if the
        cancellation was this timeout's own."""
        Deadlines.ended(entry)
        if entry[2] != _EXPIRED:
            return error
        uncancel = getattr(entry[1], "uncancel", None)  # 3.11+: the request is ours
        if uncancel is not None:
            uncancel()
        if isinstance(error, asyncio.CancelledError):
            return TimedOut(self.seconds)
        return error

    def _forget_closed_loops(self) -> None:
        # list(): a copy taken at once, as another thread may add its loop meanwhile.
        for loop, queue in list(self._queues.items()):
            if queue.closed():
                self._queues.pop(loop, None)


class _Queue:
    """The running calls of one function on one loop, oldest deadline first."""

    __slots__ = ("_entries", "_loop", "_now", "_seconds", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        # The loop's clock, read without a method call where it is time.monotonic.
        self._now: Callable[[], float] = (
            time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        )
        self._seconds = seconds
        self._entries: deque[list[Any]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def closed(self) -> bool:
        return self._loop.is_closed()

    def start(self) -> list[Any]:
        # [deadline, task, state, queue]. The loop given: current_task() would look it up
        # again, and each lookup checks the pid, a syscall.
        loop = self._loop
        entry: list[Any] = [self._now() + self._seconds, asyncio.current_task(loop), _RUNNING, self]
        self._entries.append(entry)
        if self._timer is None:
            self._timer = self._loop.call_at(entry[0], self._expire)
        return entry

    def drop_done(self) -> None:
        entries = self._entries
        while entries and entries[0][2] != _RUNNING:
            entries.popleft()

    def _expire(self) -> None:
        """Cancels the calls past their deadline; set again for the next one."""
        self._timer = None
        now, entries = self._now(), self._entries
        while entries:
            entry = entries[0]
            if entry[2] == _RUNNING:
                if entry[0] > now:
                    self._timer = self._loop.call_at(entry[0], self._expire)
                    return
                entry[2] = _EXPIRED
                if entry[1] is not None:
                    entry[1].cancel()
            entries.popleft()
