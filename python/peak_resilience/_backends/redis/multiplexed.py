"""One redis.asyncio connection per event loop and Redis, shared by every call on it.

The async counterpart of ``pool``: commands from every task of a loop are written on one
connection as they come, without waiting for each other, and one reader hands each reply
to its command in order (Redis answers in the order it was asked). Fifty concurrent
guarded calls thus cost one round trip together, not fifty, and a process holds one
connection per loop and Redis.

A connection that fails or times out is dropped with every command still waiting on it
(a late reply must never answer the wrong command); a cancelled caller's reply is read
and answers nobody. A connection the server or a proxy
closed while idle is found closed before the command is written, or fails it at once;
then the command is sent once more on a new connection (it never reached Redis). A
command that timed out is never sent again: it may have run. A forked child, or another
loop, makes its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

__all__ = ["Multiplexed"]


class _Wire:
    """One open connection, the commands written on it whose replies are still due, and
    the task reading them."""

    __slots__ = ("conn", "due", "outgoing", "reader")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.due: deque[asyncio.Future[Any]] = deque()
        self.reader: asyncio.Task[None] | None = None
        #: Commands written since the loop last ran its callbacks, sent together.
        self.outgoing: list[bytes] = []


class Multiplexed:
    """Commands to one Redis from one loop, on one connection made by ``make``."""

    def __init__(
        self,
        make: Callable[[], Any],
        *,
        refused: type[BaseException],
        closed: tuple[type[BaseException], ...],
        timeout: float,
    ) -> None:
        self._make = make
        self._timeout = timeout
        #: The server's error replies (the connection is fine).
        self._refused = refused
        #: A connection the other end closed (worth one more try on a new one).
        self._closed: tuple[type[BaseException], ...] = (*closed, ConnectionError)
        self._wire: _Wire | None = None
        self._connecting: asyncio.Lock | None = None
        self.pid = os.getpid()
        #: Closes the connection when the loop shuts down (see ``_until_the_loop_ends``).
        self._watch: AsyncGenerator[None, None] | None = None

    async def request(self, *commands: Any) -> Any:
        """Writes ``commands`` (packed) back to back and awaits their replies, at most
        ``timeout``: the last one's; raises what redis-py raises (an error reply, a lost
        connection) or TimeoutError. A cancelled caller's reply answers nobody."""
        for attempt in (0, 1):
            wire = await self._open()
            idle = not wire.due
            loop = asyncio.get_running_loop()
            replies: list[asyncio.Future[Any]] = []
            for command in commands:
                reply = loop.create_future()
                self._write(wire, command, reply)
                replies.append(reply)
            last = replies[-1]
            # A timer on the reply, not asyncio.wait_for: no task made per command.
            timer = loop.call_later(self._timeout, _expire, last)
            try:
                answer = await last
                for earlier in replies[:-1]:
                    # Read before the last one: done. Its error (a script not loaded)
                    # explains the last one's, if any.
                    earlier.result()
                return answer
            except self._refused:
                raise
            except self._closed:
                # Closed while idle: the command never reached Redis, and goes once more.
                if attempt or not idle:
                    raise
            except TimeoutError:
                # A connection that stopped answering is left: a new one next time.
                self._drop(wire, ConnectionError("a command on this connection timed out"))
                raise
            finally:
                timer.cancel()
                for earlier in replies[:-1]:
                    _retrieved(earlier)
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, wire: _Wire, command: Any, waiter: asyncio.Future[Any]) -> None:
        # Written and queued in one step, with no await between: replies come back in the
        # order the commands went out. The commands of every task that runs before the
        # loop's next turn go out in one send (one system call for fifty, not fifty).
        if not wire.outgoing:
            asyncio.get_running_loop().call_soon(_send, wire)
        if isinstance(command, bytes):
            wire.outgoing.append(command)
        else:
            wire.outgoing.extend(command)
        wire.due.append(waiter)
        if wire.reader is None or wire.reader.done():
            wire.reader = asyncio.ensure_future(self._read(wire))

    async def _open(self) -> _Wire:
        wire = self._wire
        if wire is not None and not _closed(wire.conn):
            return wire
        if self._connecting is None:
            self._connecting = asyncio.Lock()
            self._watch = _until_the_loop_ends(self)
            await self._watch.__anext__()
        async with self._connecting:
            wire = self._wire
            if wire is not None and not _closed(wire.conn):
                return wire
            if wire is not None:
                self._drop(wire, ConnectionError("the connection was closed by the server"))
            conn = self._make()
            try:
                await conn.connect()
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
            wire = self._wire = _Wire(conn)
            return wire

    async def _read(self, wire: _Wire) -> None:
        try:
            while wire.due:
                try:
                    reply = await wire.conn.read_response(timeout=math.inf)
                except self._refused as refused:
                    reply = refused
                _deliver(wire.due.popleft(), reply)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else ConnectionError("the loop ended")
            self._drop(wire, error)
            if isinstance(exc, asyncio.CancelledError):
                raise

    def close(self) -> None:
        """Closes the connection now, failing what still waits on it."""
        wire = self._wire
        if wire is not None:
            self._drop(wire, ConnectionError("the event loop ended"))
            writer = wire.conn._writer
            if writer is not None:
                writer.close()

    def _drop(self, wire: _Wire, error: BaseException) -> None:
        """Closes ``wire`` and fails every command still waiting on it."""
        if self._wire is wire:
            self._wire = None
        due, wire.due = wire.due, deque()
        for waiter in due:
            _deliver(waiter, error)
        reader = wire.reader
        if reader is not None and not reader.done() and reader is not asyncio.current_task():
            reader.cancel()
        closing = asyncio.ensure_future(_close(wire.conn))
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)


def _deliver(waiter: asyncio.Future[Any], reply: Any) -> None:
    if waiter.done():
        return
    if isinstance(reply, BaseException):
        waiter.set_exception(reply)
    else:
        waiter.set_result(reply)


async def _until_the_loop_ends(mux: Multiplexed) -> AsyncGenerator[None, None]:
    """Started on the loop, never resumed: the loop's ``shutdown_asyncgens`` (which
    ``asyncio.run`` awaits before it closes the loop) closes it, and with it the
    connection, which would otherwise stay open until garbage collected."""
    try:
        yield
    finally:
        mux.close()


def _send(wire: _Wire) -> None:
    outgoing, wire.outgoing = wire.outgoing, []
    writer = wire.conn._writer
    if writer is not None and not writer.is_closing():
        writer.write(b"".join(outgoing))


def _retrieved(reply: asyncio.Future[Any]) -> None:
    if reply.done() and not reply.cancelled():
        reply.exception()


def _expire(reply: asyncio.Future[Any]) -> None:
    if not reply.done():
        reply.set_exception(TimeoutError("no reply from Redis within redis_timeout"))


def _closed(conn: Any) -> bool:
    """Whether ``conn`` is closed, or its other end has closed it."""
    reader = conn._reader
    return reader is None or reader.at_eof() or reader.exception() is not None


#: The connections being closed (a task nobody holds may be collected before it ends).
_closing: set[asyncio.Task[None]] = set()


async def _close(conn: Any) -> None:
    # A broken socket being closed: nothing is left to do if that fails too.
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)
