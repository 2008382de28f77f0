"""Async callers waiting for a budget's tokens: one line per budget, served in order.

Every waiter that sleeps its own computed wait wakes together with the others and they
all try at once (a stampede: many refused attempts per admission, and a busy loop). In
a line only the first waiter tries: it sleeps on the loop until its tokens are due, takes
them, then hands its turn on. High-priority waiters go before normal ones, each lane
first come, first served. So an admission costs about one attempt and the loop stays
free; a waiter whose tokens cannot come within its ``max_wait`` leaves the line.
Each event loop has its own line (a future is woken from its loop's thread only); the
callers of one loop are served in order, those of several loops share the tokens.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")

__all__ = ["Attempt", "Line", "line_for"]


class Attempt(Generic[T]):
    """One try for the tokens: ``taken`` says whether they were taken, ``value`` is what
    the try gives a caller (an admission, True), ``wait`` the seconds until they are due
    when not taken."""

    __slots__ = ("taken", "value", "wait")

    def __init__(self, taken: bool, value: T | None = None, wait: float = 0.0) -> None:
        self.taken = taken
        self.value = value
        self.wait = wait


class Line:
    """The waiters of one budget: the one whose turn it is, and two lanes behind it,
    ``priority="high"`` first."""

    __slots__ = ("__weakref__", "_lanes", "_serving")

    def __init__(self) -> None:
        self._lanes: tuple[collections.deque[asyncio.Future[None]], ...] = (
            collections.deque(),
            collections.deque(),
        )
        self._serving: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        """Whether nobody waits: a newcomer may then try at once."""
        return self._serving is None and not (self._lanes[0] or self._lanes[1])

    def _hand_on(self) -> None:
        """Gives the turn to the next waiter, high lane first."""
        self._serving = None
        for lane in self._lanes:
            while lane:
                following = lane.popleft()
                if not following.done():
                    self._serving = following
                    following.set_result(None)
                    return

    async def take(
        self,
        attempt: Callable[[], Awaitable[Attempt[T]]],
        due_in: Callable[[], Awaitable[float]],
        *,
        high: bool,
        max_wait: float | None,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]],
        real_time: bool,
    ) -> Attempt[T]:
        """Waits in line for the tokens ``attempt`` takes, for at most ``max_wait``
        seconds (None: as long as it takes). Returns the taking attempt, or a refused one
        (its ``wait`` the seconds still missing) when the tokens cannot come in time.
        ``due_in()`` tells how long until the tokens are there, without trying.
        ``real_time``: False when ``sleep`` advances a test clock, so that the time spent
        in line is counted by ``now`` alone."""
        start = now()
        import asyncio  # here: a caller that never awaits need not import it

        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        lane = self._lanes[0 if high else 1]
        try:
            if self._serving is None:
                self._serving = turn
            else:
                lane.append(turn)
                # A timer rather than asyncio.wait: a thousand waiters arriving at once
                # must not hold the loop (asyncio.wait costs several times as much).
                timer = None
                if real_time and max_wait is not None:
                    timer = loop.call_later(max(max_wait - (now() - start), 0.0), _wake, turn)
                try:
                    await turn
                finally:
                    if timer is not None:
                        timer.cancel()
                if self._serving is not turn:  # woken by the timer: out of time
                    return Attempt(False, wait=await due_in())
            while True:
                wait = await due_in()
                if max_wait is not None and now() - start + wait > max_wait:
                    return Attempt(False, wait=wait)
                if wait > 0:
                    await sleep(wait)
                tried = await attempt()
                if tried.taken:
                    return tried
        finally:
            if self._serving is turn:
                self._hand_on()
            elif turn in lane:
                lane.remove(turn)


def _wake(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_result(None)


#: The lines of each budget (a token bucket), one per event loop, for as long as both
#: live: a loop's futures may only be woken from its own thread.
_lines: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, Line]] = (
    weakref.WeakKeyDictionary()
)


def line_for(bucket: Any) -> Line:
    """The line of ``bucket``'s waiters on the running loop (made on first use)."""
    import asyncio  # here: a caller that never awaits need not import it

    loop = asyncio.get_running_loop()
    per_loop = _lines.get(bucket)
    if per_loop is None:
        per_loop = _lines.setdefault(bucket, weakref.WeakKeyDictionary())
    line = per_loop.get(loop)
    if line is None:
        line = per_loop[loop] = Line()
    return line
