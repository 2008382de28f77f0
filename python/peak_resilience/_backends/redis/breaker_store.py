"""A circuit breaker's state in Redis: opened by one host, open on every host.

The store under a ``CircuitBreaker(backend="redis")``: the native breaker asks it to
admit each call and tells it each outcome, and applies ``on_backend_error`` itself when
the store answers None (Redis unreachable). The state machine is the native one's, as
one Lua script (``breaker.lua``): each step is one ``EVALSHA``, atomic on the server and
timed by Redis' clock (``TIME``). The state is one hash under a key with a ``{...}`` hash
tag, for Redis Cluster. Times cross to the native breaker in nanoseconds; Lua counts
microseconds.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from peak_resilience._backends.redis.bucket_store import BUCKET, RedisBucketStore
from peak_resilience._backends.redis.carried import carried_for
from peak_resilience._backends.redis.connection import (
    DEFERRED,
    ONE_SLOT_EACH,
    UNAVAILABLE,
    InTurn,
    RedisLink,
    RedisStore,
    Script,
    steps,
)

if TYPE_CHECKING:
    from peak_resilience._native import ManualClock

__all__ = ["BREAKER", "RedisBreakerStore", "transition"]

BREAKER = Script.load("breaker.lua")
#: One guarded call's admission: breaker.lua's enter and bucket.lua's take in one script.
ADMISSION = Script(
    Script.load("admission.lua")
    .source.replace("--BREAKER--", BREAKER.source)
    .replace("--BUCKET--", BUCKET.source)
)

#: The admission the native breaker sends for an outcome recorded by hand.
_INFERRED = -1
_NS_PER_US = 1000
#: The kind of a half-open trial's admission (kind + 4 * period), the one whose outcome
#: can move the circuit.
_TRIAL = 2
_NO_TRANSITION = ("ok", "release")
#: Packed commands kept per kind, at most (one per set of successes carried: a few).
_PACKED_KEPT = 16
#: An exit's reply when no transition happened: (from, to).
_NOTHING_CHANGED = (-1, -1)


def _entered(reply: Any) -> tuple[int, int, int, int]:
    return int(reply[0]), int(reply[1]) * _NS_PER_US, int(reply[2]), int(reply[3])


def transition(reply: Any) -> tuple[int, int]:
    """An exit's or a command's reply as the native breaker reads it: (from, to)."""
    return int(reply[2]), int(reply[3])


def _key(name: str) -> str:
    return f"peak-resilience:{{breaker:{name}}}"


def _us(nanos: int) -> int:
    return round(nanos / _NS_PER_US)


class RedisBreakerStore(RedisStore):
    """One breaker's state in Redis (see ``rust/python/store.rs`` for the protocol)."""

    def __init__(self, name: str, link: RedisLink, clock: ManualClock | None) -> None:
        super().__init__(link, clock)
        self.key = _key(name)
        self._settings: tuple[bytes, ...] = ()
        self._policy: tuple[bytes, ...] = ()
        #: The packed commands almost every call sends (packing fourteen arguments costs
        #: more than the script runs on the server), by the successes they carry (one
        #: success of one code, in a steady stream of calls): "enter", and the admissions
        #: (enter and take) by bucket key, cost and lane too.
        self._enters: dict[tuple[int, ...], Any] = {}
        self._admissions: dict[tuple[str, int, bool, tuple[int, ...]], Any] = {}
        #: This breaker's successes not sent yet (see carried.py).
        self._carried = carried_for((link.client, self.key), self)

    def configure(
        self,
        failure_threshold: int,
        recovery_timeout: int,
        half_open_max_calls: int,
        failure_rate_ppm: int,
        minimum_calls: int,
        window_is_time: bool,
        window_size: int,
        backoff_multiplier: float,
        max_recovery_timeout: int,
    ) -> None:
        """Encodes the native breaker's settings once, for every call after."""
        self._settings = (
            str(failure_threshold).encode(),
            str(_us(recovery_timeout)).encode(),
            str(half_open_max_calls).encode(),
        )
        self._enters = {}
        self._admissions = {}
        self._policy = (
            str(failure_rate_ppm).encode(),
            str(minimum_calls).encode(),
            b"1" if window_is_time else b"0",
            str(_us(window_size) if window_is_time else window_size).encode(),
            repr(float(backoff_multiplier)).encode(),
            str(_us(max_recovery_timeout)).encode(),
        )

    def _arguments(
        self,
        op: bytes,
        admission: int = 0,
        outcome: bytes = b"",
        argument: int = 0,
        carried: tuple[int, ...] = (),
    ) -> tuple[Any, ...]:
        return (
            self.key,
            op,
            *self._settings,
            admission,
            outcome,
            *self._policy,
            argument,
            self.now(),
            *carried,
        )

    def _carrying(self) -> tuple[int, ...]:
        """The successes the next script carries (taken), or none in an async step: its
        command is asked on the loop, then the native step runs again to apply the reply,
        and must send the same command both times (they are sent by the next sync call,
        or by the flusher)."""
        if steps.current is not None:
            return ()
        return self._carried.take()

    def _run(self, op: bytes, admission: int = 0, outcome: bytes = b"", argument: int = 0) -> Any:
        carried = self._carrying()
        reply = self.link.run(BREAKER, *self._arguments(op, admission, outcome, argument, carried))
        if reply is UNAVAILABLE:
            self._carried.give_back(carried)
        return reply

    def send_carried(self, carried: tuple[int, ...]) -> bool:
        """The flusher's: ``carried`` sent on their own (see carried.py)."""
        reply = self.link.run(BREAKER, *self._arguments(b"carry", carried=carried))
        return reply is not UNAVAILABLE

    def _enter_command(self, carried: tuple[int, ...] = ()) -> Any:
        if self._clock is not None:
            return self.link.pack(BREAKER, *self._arguments(b"enter", carried=carried))
        packed = self._enters.get(carried)
        if packed is None:
            if len(self._enters) > _PACKED_KEPT:
                self._enters.clear()
            packed = self.link.pack(BREAKER, *self._arguments(b"enter", carried=carried))
            self._enters[carried] = packed
        return packed

    def enter(self) -> tuple[int, int, int, int] | None:
        carried = self._carrying()
        reply = self.link.run_packed(BREAKER, self._enter_command(carried))
        if reply is UNAVAILABLE:
            self._carried.give_back(carried)
            return None
        return _entered(reply)

    def enter_and_take(self, bucket: RedisBucketStore, cost: int, high: bool) -> Any:
        """``enter``, then (if admitted) ``bucket``'s ``take(cost, high)``, in one script
        call (``admission.lua``): (enter's reply, take's reply or None when the breaker
        refused); None when Redis failed the call; False when the two are not on one
        Redis node (Cluster: two slots), and each must be asked on its own."""
        link = self.link
        if bucket.link.pool is not link.pool or link.clustered:
            step = steps.current
            if step is not None:
                # An async call's: the two commands are asked on the loop, one after
                # the other, before the native step asks each on its own (on_loop).
                step.ask_in_turn(
                    link,
                    BREAKER,
                    self._enter_command(),
                    InTurn(
                        bucket.link,
                        bucket.take_command(cost, high),
                        functools.partial(bucket.refund_command, cost),
                    ),
                )
            return False
        carried = self._carrying()
        packed = self._admissions.get((bucket.key, cost, high, carried))
        if packed is None:
            own = self._arguments(b"enter", carried=carried)[1:]
            packed = link.pack_keys(
                ADMISSION,
                (self.key, bucket.key),
                len(own),
                *own,
                *bucket.take_arguments(cost, high),
            )
            if self._clock is None and bucket._clock is None:
                if len(self._admissions) > _PACKED_KEPT:
                    self._admissions.clear()
                self._admissions[(bucket.key, cost, high, carried)] = packed
        reply = link.run_packed(ADMISSION, packed)
        if reply is UNAVAILABLE or reply is ONE_SLOT_EACH:
            self._carried.give_back(carried)
            return None if reply is UNAVAILABLE else False
        fields = reply.split()  # enter's 7 integers, then take's 2 (admission.lua)
        took = (fields[7] == b"1", int(fields[8]) * _NS_PER_US) if len(fields) > 7 else None
        return _entered(fields), took

    def exit(self, admission: int, outcome: str) -> tuple[int, int] | None:
        code = -1 if admission == _INFERRED else admission
        if code >= 0 and code % 4 != _TRIAL and outcome in _NO_TRANSITION:
            # A call admitted in a closed circuit (or outside the machine) that succeeded
            # or never ran changes no state that anyone waits on: a success is carried by
            # the breaker's next script (carried.py), and a release has nothing to give
            # back (only a trial holds a permit).
            if outcome == "ok":
                self._carried.add(code)
            return _NOTHING_CHANGED
        carried = self._carrying()
        reply = self.link.record(
            BREAKER, *self._arguments(b"exit", code, outcome.encode(), carried=carried)
        )
        if reply is UNAVAILABLE:
            self._carried.give_back(carried)
            return None
        if reply is DEFERRED:
            # An async call's: its transition is told when the reply comes (on_loop).
            return _NOTHING_CHANGED
        return transition(reply)

    def read(self) -> tuple[int, int, int, int, int, int] | None:
        reply = self._run(b"state")
        if reply is UNAVAILABLE:
            return None
        return (
            int(reply[4]),
            int(reply[5]),
            int(reply[1]) * _NS_PER_US,
            int(reply[6]),
            int(reply[2]),
            int(reply[3]),
        )

    def command(self, op: str, argument: int) -> tuple[int, int] | None:
        if op == "open_for":
            argument = max(_us(argument), 1)
        reply = self._run(op.encode(), argument=argument)
        if reply is UNAVAILABLE:
            return None
        return int(reply[2]), int(reply[3])

    def window(self) -> tuple[int, int, int] | None:
        reply = self._run(b"window")
        if reply is UNAVAILABLE:
            return None
        calls, failures, failed_trials = (int(v) for v in reply)
        return calls, failures, failed_trials

    def counters(self) -> list[int] | None:
        reply = self._run(b"stats")
        if reply is UNAVAILABLE:
            return None
        return [int(v) if v is not None else 0 for v in reply]
