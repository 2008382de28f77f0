"""Stateful property tests of the fixed and sliding windows against plain Python models
(hypothesis), on every engine: Rust in memory and in a shared file, Lua on Redis (its
script reading the manual clock through the test-only ``now``)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from test_models import ENGINES, ON_OTHER_ENGINES, redis_engine

from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.testing import ManualClock

__all__ = ["redis_engine"]  # the fixture, for the Redis engine's test case below

#: A calendar minute starts here (epoch seconds), so fixed windows start at the clock's 0.
START_NS = 1_699_956_000 * 10**9


class ReferenceWindow:
    """A window counted the obvious way: every admitted request's instant in a list."""

    def __init__(self, kind: str, limit: int, length_ns: int) -> None:
        self.kind, self.limit, self.length = kind, limit, length_ns
        self.admitted: list[int] = []

    def used(self, now: int) -> int:
        if self.kind == "fixed":
            start = now // self.length * self.length
            return sum(1 for t in self.admitted if t >= start)
        return sum(1 for t in self.admitted if t + self.length > now)

    def take(self, now: int, cost: int) -> bool:
        if self.used(now) + cost > self.limit:
            return False
        self.admitted += [now] * cost
        return True

    def give_back(self, cost: int, now: int, oldest: bool) -> None:
        """Removes the take's own ``cost`` entries (the newest, as the take was just made),
        or the ``cost`` oldest live ones (Redis' sliding window: no record of whose)."""
        if not oldest:
            del self.admitted[len(self.admitted) - cost :]
            return
        live = [i for i, t in enumerate(self.admitted) if t + self.length > now][:cost]
        self.admitted = [t for i, t in enumerate(self.admitted) if i not in live]

    def sync(self, now: int, used: int) -> None:
        if self.kind == "fixed":
            start = now // self.length * self.length
            self.admitted = [t for t in self.admitted if t < start]
        else:
            self.admitted = []
            used = min(used, self.limit)
        self.admitted += [now] * used


class KindMachine(RuleBasedStateMachine):
    engine = ENGINES["memory"]

    @initialize(
        kind=st.sampled_from(["fixed", "sliding"]),
        limit=st.integers(1, 20),
        length_ms=st.sampled_from([1, 250, 1000, 60_000]),
    )
    def create(self, kind: str, limit: int, length_ms: int) -> None:
        self.clock = ManualClock(START_NS / 1e9)
        self.now = START_NS
        spec = f"{limit}/{length_ms / 1000}s {kind}"
        self.limiter = RateLimiter(limits=[spec], clock=self.clock, **self.engine.place())
        self.model = ReferenceWindow(kind, limit, length_ms * 1_000_000)

    @rule(millis=st.integers(0, 2_000))
    def advance(self, millis: int) -> None:
        self.clock.advance(millis / 1000)
        self.now += millis * 1_000_000

    @rule(data=st.data())
    def acquire(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(1, self.model.limit))
        assert self.limiter.acquire(cost=cost) is self.model.take(self.now, cost)

    @rule(data=st.data())
    def reserve_then_settle(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(1, self.model.limit))
        actual = data.draw(st.integers(0, cost))
        reservation = self.limiter.reserve(cost)
        assert (reservation is not None) is self.model.take(self.now, cost)
        if reservation is not None:
            reservation.settle(actual)
            oldest = self.engine.backend == "redis" and self.model.kind == "sliding"
            self.model.give_back(cost - actual, self.now, oldest)

    @rule(data=st.data())
    def sync(self, data: st.DataObject) -> None:
        used = data.draw(st.integers(0, self.model.limit))
        self.limiter.sync(used)
        self.model.sync(self.now, used)

    @invariant()
    def tokens_are_the_limit_less_what_counts(self) -> None:
        if hasattr(self, "limiter"):
            expected = max(self.model.limit - self.model.used(self.now), 0)
            assert self.limiter.get_stats()["tokens_available"] == expected


TestKindsAgainstModel = KindMachine.TestCase
TestKindsAgainstModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


class SharedKindMachine(KindMachine):
    engine = ENGINES["shared"]


class RedisKindMachine(KindMachine):
    engine = ENGINES["redis"]


class TestSharedKindsAgainstModel(SharedKindMachine.TestCase):  # type: ignore[name-defined]
    settings = ON_OTHER_ENGINES


@pytest.mark.usefixtures("redis_engine")
class TestRedisKindsAgainstModel(RedisKindMachine.TestCase):  # type: ignore[name-defined]
    settings = ON_OTHER_ENGINES
