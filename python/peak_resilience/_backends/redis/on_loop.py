"""The Redis steps of async calls, on redis.asyncio: asked on the loop, applied natively.

The native breaker and bucket ask their Redis store synchronously (Rust cannot await).
An ``async def`` guarded call or ``acquire_async`` splits each step in two:

- **ask**: the native step runs until its store sends its first command; that command
  (the very script and arguments a sync call sends) is caught before anything has
  changed (``Ask``), and sent with redis.asyncio on the loop's one connection to that
  Redis (``multiplexed``), awaited, bounded by ``redis_timeout``. A failure goes
  through the link's own bookkeeping (counted, logged once, ``retry_interval``).
- **apply**: the native step runs again, and the store's command is answered with that
  reply (or UNAVAILABLE: the native ``on_backend_error`` policy applies), so that the
  breaker and the bucket do with it exactly what they do on the sync path.

A breaker and a budget on two Redis nodes (a Cluster puts them in two slots; or two
``redis_url``) cannot be asked in one script: the store asks for the two in turn
(``InTurn``), and both are asked here before the step is applied: the take only when the
breaker's reply admits the call, as the native step would take it. Under ``local``, a
breaker whose node failed leaves the decision to the in-process stand-in; a take it did
not use is refunded.

Another command of a step to a Redis that failed within the step is answered
UNAVAILABLE, or left alone after an earlier failure (the sync path would wait for it
once more), else asked synchronously on the loop (a case no guarded call reaches).

An outcome (``RedisLink.record``: a call's exit, or an admission given back) is recorded
in the native step with no reply (``DEFERRED``), then sent: its transition, if any, is
told to the breaker's listeners when the reply comes, before the call returns. A success
in a closed circuit sends nothing: it is carried by the breaker's next sync script, or
sent by the flusher thread (``carried``), so the call returns without another round
trip. An outcome whose Redis failed is lost bookkeeping, counted and logged (where the
sync path's local stand-in would count it).

Sentinel URLs are asked on redis.asyncio too (its connections ask a sentinel for the
master; a call in flight on a master demoted by a failover gets its READONLY reply and
is sent once more, to the new master, when it was alone on the connection; else the
policy applies to it). On a Redis Cluster, a ``MOVED`` reply sends the link to the node
it names, as on the sync path (the loop keeps one connection per node), and a
``CROSSSLOT`` reply to a one-script admission starts it over, the two asked in turn.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from peak_resilience._backends.redis.breaker_store import BREAKER, transition
from peak_resilience._backends.redis.bucket_store import BUCKET, taken
from peak_resilience._backends.redis.connection import (
    DEFERRED,
    MOVES_FOLLOWED,
    ONE_SLOT_EACH,
    UNAVAILABLE,
    InTurn,
    RedisLink,
    Script,
    _redis,
    client_for,
    steps,
)
from peak_resilience._backends.redis.multiplexed import Multiplexed

__all__ = ["admission", "outcome", "step"]

T = TypeVar("T")

#: A reply read for a step: (the link, the command, the reply).
Reply = tuple[RedisLink, Any, Any]


class Ask(BaseException):
    """The first command of a native step being asked: nothing has changed yet.
    A BaseException: no ``except Exception`` on the way may take it for a failure."""

    def __init__(
        self,
        link: RedisLink,
        script: Script,
        command: Any,
        links: tuple[RedisLink, ...],
        then: InTurn | None = None,
    ) -> None:
        super().__init__()
        self.link = link
        #: The step's links, for the step that applies the reply.
        self.link_set = links
        self.script = script
        self.command = command
        #: The take to ask after this breaker admission, if it admits (``InTurn``).
        self.then = then


class Step:
    """Answers the Redis calls of one native step run on the loop (see the module)."""

    __slots__ = ("asking", "deferred", "failed", "links", "posts", "replies")

    def __init__(self, links: tuple[RedisLink, ...], *, asking: bool = False) -> None:
        #: The links of the step's breaker and limiter: a call on another (a finalizer's,
        #: a listener's, on this thread meanwhile) is not the step's, and runs as it would.
        self.links = links
        self.asking = asking
        #: (link, command, reply) read for this step.
        self.replies: list[Reply] = []
        #: The pools that failed within this step, and how (None: left alone for
        #: ``retry_interval`` after an earlier failure).
        self.failed: dict[Any, BaseException | None] = {}
        #: Commands whose reply changes nothing, written after the step (the refund of a
        #: take it did not use), and outcomes, asked after it (``RedisLink.record``).
        self.posts: list[tuple[RedisLink, Script, Any]] = []
        self.deferred: list[tuple[RedisLink, Script, Any]] = []

    def answer(
        self,
        link: RedisLink,
        script: Script,
        command: Any,
        *,
        deferrable: bool = False,
    ) -> Any:
        if link not in self.links:
            return link.call_now(script, command)
        for i, (asked, sent, reply) in enumerate(self.replies):
            if asked is link and (sent is command or sent == command):
                del self.replies[i]
                return reply
        if self.asking:
            raise Ask(link, script, command, self.links)
        if deferrable:
            self.deferred.append((link, script, command))
            return DEFERRED
        if link.pool in self.failed:
            failure = self.failed[link.pool]
            if failure is not None:
                link._failed(failure)
            return UNAVAILABLE
        return link.call_now(script, command)

    def ask_in_turn(self, link: RedisLink, script: Script, command: Any, then: InTurn) -> None:
        """A breaker's admission (``command`` on ``link``) and then a take (``then``)
        that cannot go in one script: when asking, both are asked (see the module)."""
        if self.asking and link in self.links and then.link in self.links:
            raise Ask(link, script, command, self.links, then)

    def run(self, native: Callable[..., T], *args: Any) -> T:
        outer, steps.current = steps.current, self
        try:
            return native(*args)
        finally:
            steps.current = outer


#: The one connection of each loop to each Redis node (URL and timeout).
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Multiplexed]] = (
    weakref.WeakKeyDictionary()
)


def _multiplexed(link: RedisLink) -> Multiplexed:
    loop = asyncio.get_running_loop()
    own = _by_loop.get(loop)
    if own is None:
        own = _by_loop[loop] = {}
    url = link.node_url
    key = (url, link.timeout)
    found = own.get(key)
    if found is not None and found.pid == os.getpid():
        return found
    redis = _redis()
    settings = client_for(url, link.timeout, on_asyncio=True).connection_pool
    made = own[key] = Multiplexed(
        lambda: settings.connection_class(**settings.connection_kwargs),
        refused=redis.ResponseError,
        closed=(redis.ConnectionError,),
        timeout=link.timeout,
    )
    return made


async def _request(link: RedisLink, script: Script, command: Any) -> Any:
    """``command``'s reply; a script Redis does not have yet is loaded and run again."""
    mux = _multiplexed(link)
    try:
        return await mux.request(command)
    except link._no_script:
        return await mux.request(_load(link, script), command)


async def _asked(link: RedisLink, script: Script, command: Any) -> Any:
    """``_request``, sent again to the Cluster node a ``MOVED`` reply names (which
    ``link`` asks from now on, as the sync link does), up to ``MOVES_FOLLOWED`` times."""
    for hop in range(MOVES_FOLLOWED + 1):
        try:
            return await _request(link, script, command)
        except link._moved as moved:
            if hop == MOVES_FOLLOWED:
                raise
            link.follow(moved)
    raise AssertionError("unreachable")  # pragma: no cover


def _load(link: RedisLink, script: Script) -> Any:
    return link._packer.pack_command("SCRIPT", "LOAD", script.source)


async def ask(link: RedisLink, script: Script, command: Any, failed: dict[Any, Any]) -> Any:
    """``command``'s reply from redis.asyncio; UNAVAILABLE (the failure noted in
    ``failed``, counted and logged by the link); ONE_SLOT_EACH for keys in two slots."""
    if link._down_until and time.monotonic() < link._down_until:
        # A second command of the step to the same Redis is not sent either: it would
        # wait on the loop (during an outage, up to redis_timeout) for what the policy
        # gives without it.
        failed.setdefault(link.pool, None)
        return UNAVAILABLE
    try:
        reply = await _asked(link, script, command)
    except link._cross_slot:
        link.pool.clustered = True
        return ONE_SLOT_EACH
    except link._failures as exc:
        failed[link.pool] = exc
        link.leave_node(exc)
        link._failed(exc)
        return UNAVAILABLE
    if link._outage:
        link._recovered()
    return reply


async def _ask_all(asked: Ask, failed: dict[Any, Any]) -> list[Reply]:
    """The replies the step ``asked`` needs: its first command's and, for an admission
    asked in turn, the take's when the breaker's reply admits the call."""
    reply = await ask(asked.link, asked.script, asked.command, failed)
    replies: list[Reply] = [(asked.link, asked.command, reply)]
    then = asked.then
    if then is None or reply is ONE_SLOT_EACH:
        return replies
    # Redis failed: the policy decides. fail_closed refuses, fail_open admits, local asks
    # the stand-in (which may refuse: the take is then refunded, see _apply).
    admitted = asked.link.policy != "fail_closed" if reply is UNAVAILABLE else int(reply[0]) != 0
    if admitted:
        replies.append(
            (then.link, then.command, await ask(then.link, BUCKET, then.command, failed))
        )
    return replies


async def step(native: Callable[[], T], links: tuple[RedisLink, ...]) -> T:
    """``native()``, a native step that sends one Redis command on one of ``links``,
    asked and applied."""
    return await admission(native, None, None, links)


async def admission(
    native: Callable[[], T],
    give_back: Callable[[T], object] | None,
    breaker: Any,
    links: tuple[RedisLink, ...],
) -> T:
    """``native()`` asked on redis.asyncio and applied; an admission granted after its task
    was cancelled is given back with ``give_back(admission)``, so that no trial permit
    is lost with the task."""
    while True:
        asking = Step(links, asking=True)
        try:
            return asking.run(native)
        except Ask as first:
            # Without its traceback: its frames (this one too) would keep it, the native
            # step and the breaker alive in a cycle until the garbage collector ran.
            asked = first.with_traceback(None)
        reading = asyncio.ensure_future(_ask_all(asked, asking.failed))
        try:
            replies = await asyncio.shield(reading)
        except asyncio.CancelledError:
            reading.add_done_callback(
                functools.partial(
                    _apply_cancelled, asked, asking.failed, native, give_back, breaker
                )
            )
            raise
        if replies[0][2] is not ONE_SLOT_EACH:
            return _apply(asked, replies, asking.failed, native, breaker)
        # The breaker's and the budget's keys are in two Cluster slots (now known): asked
        # again, in turn.


def _apply(
    ask: Ask, replies: list[Reply], failed: dict[Any, Any], native: Callable[[], T], breaker: Any
) -> T:
    applying = Step(ask.link_set)
    applying.replies.extend(replies)
    applying.failed = failed
    try:
        return applying.run(native)
    finally:
        then = ask.then
        for link, command, reply in applying.replies:
            if (
                then is not None
                and link is then.link
                and command is then.command
                and reply is not UNAVAILABLE
                and taken(reply)[0]
            ):
                # Tokens taken for a call the step did not admit: given back.
                applying.posts.append((link, BUCKET, then.refund()))
        # An admission given back in the step (a full bulkhead's) is recorded after it.
        _send_later(applying, breaker)


def _apply_cancelled(
    ask: Ask,
    failed: dict[Any, Any],
    native: Callable[[], T],
    give_back: Callable[[T], object] | None,
    breaker: Any,
    done: asyncio.Future[list[Reply]],
) -> None:
    """Applies the replies an admission's cancelled task did not wait for, and gives back
    what it granted (a reply that starts it over grants nothing: left)."""
    if done.cancelled() or done.exception() is not None or give_back is None:
        return
    replies = done.result()
    if replies[0][2] is ONE_SLOT_EACH:
        return
    try:
        granted = _apply(ask, replies, failed, native, breaker)
    except Exception:  # refused: nothing to give back
        return
    giving = Step(ask.link_set)
    giving.run(give_back, granted)
    _send_later(giving, breaker)


#: The tasks sending what steps left to send (kept: a task nobody holds may be lost).
_sending: set[asyncio.Task[Any]] = set()


def _send_later(done: Step, breaker: Any) -> None:
    if done.posts or done.deferred:
        task = asyncio.ensure_future(_send(done, breaker))
        _sending.add(task)
        task.add_done_callback(_sending.discard)


async def outcome(
    breaker: Any, links: tuple[RedisLink, ...], native: Callable[..., T], *args: Any
) -> T:
    """``native(*args)``, a native step recording an outcome: its command sent after it,
    its transition told when the reply comes. A task cancelled meanwhile does not stop
    it: an outcome being recorded is recorded."""
    recording = Step(links)
    result = recording.run(native, *args)
    if recording.deferred:
        await asyncio.shield(_send(recording, breaker))
    return result


async def _send(done: Step, breaker: Any) -> None:
    """Writes ``done``'s posted commands, then asks its deferred ones and tells their
    transitions to ``breaker``'s listeners."""
    for link, script, command in done.posts:
        await _post(link, script, command)
    for link, script, command in done.deferred:
        reply = await ask(link, script, command, {})
        if reply is UNAVAILABLE or reply is ONE_SLOT_EACH:
            continue  # (ONE_SLOT_EACH: never for the one key of an outcome)
        if script is BREAKER and breaker is not None:
            was, now = transition(reply)
            breaker._transitioned(was, now)


async def _post(link: RedisLink, script: Script, command: Any) -> None:
    """Sends ``command``, whose reply changes nothing (a refund), and awaits that reply: a
    refusal in it, or a Redis gone meanwhile, is lost bookkeeping (counted and logged by
    the link). Awaited, not left to be read later: a command left unread when its loop
    ends (as ``asyncio.run`` ends) would be lost with the connection."""
    if link._down_until and time.monotonic() < link._down_until:
        return
    try:
        await _asked(link, script, command)
    except link._failures as exc:
        link.leave_node(exc)
        link._lost(exc)
