"""Successes a process has recorded in a closed circuit and not sent to Redis yet.

A call admitted in a closed circuit that succeeds moves nothing anyone waits on: it is
counted, it ends a failure streak, it counts in the failure-rate window. Sent as a script
of its own, it cost every admitted call a second script, which the server runs before the
next call's admission (that call waits behind it). Instead the process counts them by
admission code, and its next script on that breaker (an admission, an outcome, a read)
carries the counts: ``breaker.lua`` counts them first, as their own ``exit ok`` would
have. A breaker that sees no next call soon has them sent by one flusher thread
``CARRIED_AT_MOST`` seconds after the first, and at exit; a forked child starts with none
(its parent's are the parent's to send).

What other hosts read of them lags by at most that long (a read in this process carries
them). A call that fails to reach Redis gives back what it carried, for the next one: a
call that timed out after Redis ran it may then count its successes twice, the rarer and
milder error than losing them (as every call that found Redis down would).
"""

from __future__ import annotations

import atexit
import itertools
import threading
import time
import weakref
from collections.abc import Hashable
from typing import Protocol

from peak_resilience._fork import after_fork_in_child

__all__ = ["CARRIED_AT_MOST", "Carried", "Sender", "carried_for", "send_all"]

#: Seconds a success waits, at most, for the next call of its breaker to carry it before
#: the flusher sends it (a busy breaker's next call comes long before).
CARRIED_AT_MOST = 0.05


class Sender(Protocol):
    """What sends a breaker's carried successes on their own: one of its stores."""

    @property
    def available(self) -> bool: ...

    def send_carried(self, carried: tuple[int, ...]) -> bool:
        """Sends ``carried`` (ARGV pairs); False when Redis did not take them."""
        ...


class Carried:
    """The successes of one breaker in one Redis not sent yet, shared by every object of
    that breaker in this process, which ``sender`` sends on their own."""

    __slots__ = ("__weakref__", "_counts", "_lock", "_sender")

    def __init__(self, sender: Sender) -> None:
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self._sender = sender

    def add(self, code: int) -> None:
        """One success of a call admitted with ``code``."""
        with self._lock:
            self._counts[code] = self._counts.get(code, 0) + 1
        if self not in _due:
            _make_due(self, wake=True)

    def take(self) -> tuple[int, ...]:
        """The counts for a script to carry, as its ARGV pairs (admission, count): taken,
        so that no other call carries them too; () when there are none."""
        if not self._counts:
            return ()
        with self._lock:
            counts, self._counts = self._counts, {}
        return tuple(itertools.chain.from_iterable(sorted(counts.items())))

    def give_back(self, pairs: tuple[int, ...]) -> None:
        """What a call could not deliver (``take``'s pairs): for the breaker's next call,
        or the flusher's next round once Redis answers again (or exit)."""
        if not pairs:
            return
        with self._lock:
            for code, count in zip(pairs[::2], pairs[1::2], strict=True):
                self._counts[code] = self._counts.get(code, 0) + count
        _make_due(self, wake=False)

    def send(self) -> None:
        """Sends the counts now, on their own. Not during an outage: the flusher never
        knocks on a Redis that failed (a call of the breaker does, and carries them)."""
        if not self._sender.available:
            _make_due(self, wake=False)
            return
        pairs = self.take()
        if pairs and not self._sender.send_carried(pairs):
            self.give_back(pairs)

    def forget(self) -> None:
        """A forked child's: the counts are the parent's to send."""
        self._lock = threading.Lock()
        self._counts = {}


#: One per breaker (its Redis client and key) in this process, while an object uses it.
_by_breaker: weakref.WeakValueDictionary[Hashable, Carried] = weakref.WeakValueDictionary()
#: Those with counts to send (held here until sent, whatever objects are left).
_due: set[Carried] = set()
_wake = threading.Event()
_flusher: threading.Thread | None = None
_lock = threading.Lock()
#: Held through a round of sending: one that starts meanwhile waits, so that once it
#: returns, every count taken before it is in Redis (or given back).
_sending = threading.Lock()


def carried_for(breaker: Hashable, sender: Sender) -> Carried:
    """The successes not sent yet of ``breaker``, which ``sender`` sends on their own."""
    with _lock:
        found = _by_breaker.get(breaker)
        if found is None:
            found = _by_breaker[breaker] = Carried(sender)
        return found


def _make_due(carried: Carried, *, wake: bool) -> None:
    global _flusher
    with _lock:
        _due.add(carried)
        if wake and _flusher is None:
            _flusher = threading.Thread(target=_flush, name="peak-resilience-flusher", daemon=True)
            _flusher.start()
    if wake:
        _wake.set()


def _flush() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        # Meanwhile a busy breaker's next call carries its counts (taken: never twice).
        time.sleep(CARRIED_AT_MOST)
        send_all()


def send_all() -> None:
    """Sends every count not sent yet (the flusher's round; at exit)."""
    with _sending:
        with _lock:
            due = list(_due)
            _due.clear()
        for carried in due:
            carried.send()


def _after_fork() -> None:
    global _flusher, _wake, _lock, _sending
    _flusher = None
    _wake = threading.Event()
    _lock = threading.Lock()
    _sending = threading.Lock()
    _due.clear()
    for carried in list(_by_breaker.values()):
        carried.forget()


atexit.register(send_all)
after_fork_in_child(_after_fork)
