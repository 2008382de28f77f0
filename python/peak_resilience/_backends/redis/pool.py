"""The connections of this process to one Redis: a bounded pool shared by every thread.

Every limiter and breaker on one ``redis_url`` (and ``redis_timeout``) draws on one pool:
a call takes a connection, sends its one command, reads the reply and gives the
connection back, so the number of connections is bounded by ``MAX_CONNECTIONS`` however
many threads and objects there are (each thread holding its own connection, as before,
ran out of redis-py's 100 at the 100th thread and never gave them back).

Taking and giving back are a ``list.pop`` and ``list.append`` (atomic under the GIL): the
lock is taken only when every connection is busy. A connection that sat idle may have been
closed by the server (``timeout``) or by a proxy or NAT; the first call on it then fails
to read, and it is reconnected and the call sent once more (the server closed it before
the call reached it, so the call has not run). A timed-out read is never sent again: the
call may have run. A forked child starts with an empty pool (the sockets are the
parent's).
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from peak_resilience._fork import after_fork_in_child

__all__ = ["MAX_CONNECTIONS", "Pool"]

#: Connections one process keeps to one Redis at most: a call holds one only while its
#: command is on the wire, so a few serve hundreds of threads.
MAX_CONNECTIONS = 32

T = TypeVar("T")

#: Every pool, so that a forked child empties them.
_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


class Pool:
    """Connections to one Redis, made by ``make`` (a redis-py connection factory), at most
    ``size`` at once; a call waits up to ``wait`` seconds for a free one."""

    def __init__(
        self,
        make: Callable[[], Any],
        *,
        size: int,
        wait: float,
        closed: tuple[type[BaseException], ...],
        answered: tuple[type[BaseException], ...],
        exhausted: Callable[[str], BaseException],
    ) -> None:
        self._make = make
        self.size = size
        self._wait = wait
        #: A connection the other end closed (worth one more try on a new socket).
        self._closed = closed
        #: The server's error replies: the connection is fine and goes back.
        self._answered = answered
        self._exhausted = exhausted
        self._empty()
        _pools.add(self)

    def _empty(self) -> None:
        self._idle: list[Any] = []
        self._made = 0
        #: Threads waiting for a connection, first come first served: a give-back hands
        #: its connection to the first (threads that never wait would starve them).
        self._queue: deque[_Slot] = deque()
        self._lock = threading.Lock()

    @property
    def connections(self) -> int:
        """Connections made and not discarded (idle or in use)."""
        return self._made

    def unconnected(self) -> Any:
        """A connection outside the pool, never connected: it packs commands."""
        return self._make()

    def call(self, use: Callable[[Any], T]) -> T:
        """``use(connection)`` on a connection of the pool, given back after."""
        conn, reused = self._take()
        try:
            try:
                reply = use(conn)
            except self._closed:
                if not reused:
                    raise
                # redis-py has closed the socket; the next send opens a new one.
                conn.disconnect()
                reply = use(conn)
        except self._answered:
            self._give_back(conn)
            raise
        except BaseException:
            # A timeout or an interrupted read: a late reply would answer the next call.
            self._discard(conn)
            raise
        self._give_back(conn)
        return reply

    def _take(self) -> tuple[Any, bool]:
        if not self._queue:
            try:
                return self._idle.pop(), True
            except IndexError:
                pass
        return self._take_waiting()

    def _take_waiting(self) -> tuple[Any, bool]:
        slot = _Slot()
        with self._lock:
            # In the queue before looking at the idle list: a give-back landing after
            # the look then finds this thread waiting (it cannot slip between).
            self._queue.append(slot)
            self._hand_over()
            if slot.conn is None and self._made < self.size:
                self._queue.remove(slot)
                slot.conn = _MAKE
                self._made += 1
        if slot.conn is None and not slot.gate.acquire(timeout=self._wait):
            with self._lock:
                if slot.conn is None:
                    self._queue.remove(slot)
                    raise self._exhausted(f"all {self.size} connections busy for {self._wait}s")
        if slot.conn is not _MAKE:
            return slot.conn, True
        try:
            return self._make(), False
        except BaseException:
            self._discarded()
            raise

    def _hand_over(self) -> None:
        """Gives idle connections to the first waiting threads (the lock held)."""
        while self._queue and self._idle:
            slot = self._queue.popleft()
            slot.conn = self._idle.pop()
            slot.gate.release()

    def _give_back(self, conn: Any) -> None:
        self._idle.append(conn)
        if self._queue:
            with self._lock:
                self._hand_over()

    def _discard(self, conn: Any) -> None:
        conn.disconnect()
        self._discarded()

    def _discarded(self) -> None:
        with self._lock:
            if self._queue:
                # The first waiting thread makes a new connection in its place.
                slot = self._queue.popleft()
                slot.conn = _MAKE
                slot.gate.release()
            else:
                self._made -= 1


#: A waiting thread's turn: make a connection of its own (one was discarded).
_MAKE: Any = object()


class _Slot:
    """A waiting thread: its gate opens when ``conn`` holds its connection (or ``_MAKE``)."""

    __slots__ = ("conn", "gate")

    def __init__(self) -> None:
        self.conn: Any = None
        self.gate = threading.Lock()
        self.gate.acquire()


def _empty_after_fork() -> None:
    for pool in list(_pools):
        pool._empty()


after_fork_in_child(_empty_after_fork)
