"""Stateful property tests: the public objects against plain Python reference models,
over random operations and clock advances on the manual clock (hypothesis).

The state machines exist twice, in Rust (memory and shared backends) and in Lua (the Redis
backend's scripts): each model runs against every engine, Redis' scripts reading the
manual clock through their test-only ``now``. Redis counts microseconds, so on its engine
the reference model rounds a token's interval to the microsecond as the store does."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from redis_server import RedisServer
from stress import scaled

from peak_resilience import _instances
from peak_resilience.config import configure
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.resilience_helpers import get_all_circuit_breakers, with_resilience
from peak_resilience.testing import ManualClock, fresh_resilience


@dataclass(frozen=True)
class Engine:
    """Where a model's breaker or limiter keeps its state."""

    backend: str
    #: The finest time step the engine counts: 1 ns natively, 1 us in Redis' scripts.
    resolution_ns: int = 1

    def place(self) -> dict[str, Any]:
        """The constructor keywords for a new object of its own (a fresh name)."""
        name = f"model-{next(_NAMES)}"
        if self.backend == "shared":
            return {"name": name, "backend": "shared", "shared_dir": _SHARED_DIR.name}
        if self.backend == "redis":
            assert _REDIS_URL, "the redis engine runs under the `redis_engine` fixture"
            return {"name": name, "backend": "redis", "redis_url": _REDIS_URL[0]}
        return {"name": name}

    def interval(self, native_ns: int) -> int:
        """A token's interval as the engine counts it: rounded up to its time step, as the
        Redis store does (never refilling faster than the rate)."""
        return -(-native_ns // self.resolution_ns) * self.resolution_ns


ENGINES = {
    "memory": Engine("memory"),
    "shared": Engine("shared"),
    "redis": Engine("redis", resolution_ns=1_000),
}
_NAMES = itertools.count()
_SHARED_DIR = tempfile.TemporaryDirectory(prefix="peak-models-")
#: The URL of the redis-server the redis engine runs on, while its tests run.
_REDIS_URL: list[str] = []


@pytest.fixture(scope="module")
def redis_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A redis-server of this module's own for the redis engine's models."""
    server = RedisServer(tmp_path_factory.mktemp("models-redis"))
    server.start()
    _REDIS_URL.append(server.url)
    try:
        yield
    finally:
        _REDIS_URL.clear()
        server.stop()


class ReferenceBucket:
    """A token bucket that counts in nanoseconds of refill: the obvious implementation."""

    def __init__(
        self, max_requests: int, window_ns: int, burst: int, engine: Engine = ENGINES["memory"]
    ) -> None:
        # Rounded up, as the native quota does: never refilling faster than the rate.
        self.interval = engine.interval(-(-window_ns // max_requests))
        self.capacity = self.interval * burst
        self.level = self.capacity
        self.burst = burst

    def advance(self, ns: int) -> None:
        self.level = min(self.capacity, self.level + ns)

    def acquire(self, cost: int) -> bool:
        need = cost * self.interval
        if need <= self.level:
            self.level -= need
            return True
        return False


class LimiterMachine(RuleBasedStateMachine):
    engine = ENGINES["memory"]

    @initialize(
        max_requests=st.integers(1, 50),
        window_ms=st.integers(1, 10_000),
        burst=st.integers(1, 50),
    )
    def create(self, max_requests: int, window_ms: int, burst: int) -> None:
        self.clock = ManualClock()
        self.limiter = RateLimiter(
            max_requests, window_ms / 1000, burst=burst, clock=self.clock, **self.engine.place()
        )
        self.model = ReferenceBucket(max_requests, window_ms * 1_000_000, burst, self.engine)
        self.allowed = self.rejected = 0

    @rule(micros=st.integers(0, 5_000_000))
    def advance(self, micros: int) -> None:
        self.clock.advance(micros / 1e6)
        self.model.advance(micros * 1000)

    @rule(data=st.data())
    def acquire(self, data: st.DataObject) -> None:
        cost = data.draw(st.integers(0, self.model.burst))
        expected = self.model.acquire(cost)
        assert self.limiter.acquire(cost=cost) is expected
        if expected:
            self.allowed += 1
        else:
            self.rejected += 1

    @invariant()
    def stats_count_every_call(self) -> None:
        if hasattr(self, "limiter"):
            stats = self.limiter.get_stats()
            assert (stats["allowed"], stats["rejected"]) == (self.allowed, self.rejected)
            assert abs(stats["tokens_available"] - self.model.level / self.model.interval) < 1e-6


class ReferenceBreaker:
    def __init__(self, threshold: int, recovery_ns: int, trials: int) -> None:
        self.threshold, self.recovery, self.trials = threshold, recovery_ns, trials
        self.state = CircuitState.CLOSED
        self.streak = self.due = self.admitted = self.succeeded = 0

    def observe(self, now: int) -> CircuitState:
        if self.state is CircuitState.OPEN and now >= self.due:
            self.state, self.admitted, self.succeeded = CircuitState.HALF_OPEN, 0, 0
        return self.state

    def open(self, now: int) -> None:
        self.state, self.due = CircuitState.OPEN, now + self.recovery

    def call(self, now: int, outcome: str) -> bool:
        state = self.observe(now)
        if state is CircuitState.OPEN or (
            state is CircuitState.HALF_OPEN and self.admitted >= self.trials
        ):
            return False
        if state is CircuitState.HALF_OPEN:
            self.admitted += 1
            if outcome == "success":
                self.succeeded += 1
                if self.succeeded >= self.trials:
                    self.state, self.streak = CircuitState.CLOSED, 0
            elif outcome == "failure":
                self.open(now)
            else:
                self.admitted -= 1
            return True
        if outcome == "success":
            self.streak = 0
        elif outcome == "failure":
            self.streak += 1
            if self.streak >= self.threshold:
                self.open(now)
        return True


class Failure(Exception):
    pass


#: What a wrapped call may raise, by outcome name.
RAISES: dict[str, type[BaseException]] = {
    "failure": Failure,
    "keyboard_interrupt": KeyboardInterrupt,
    "system_exit": SystemExit,
    "generator_exit": GeneratorExit,
    "cancelled": asyncio.CancelledError,
}
BASE_EXCEPTIONS = ["keyboard_interrupt", "system_exit", "generator_exit", "cancelled"]


class BreakerMachine(RuleBasedStateMachine):
    engine = ENGINES["memory"]

    @initialize(
        threshold=st.integers(1, 5),
        recovery_ms=st.integers(1, 2_000),
        trials=st.integers(1, 3),
    )
    def create(self, threshold: int, recovery_ms: int, trials: int) -> None:
        self.clock = ManualClock()
        self.now = 0
        place = self.engine.place()
        self.breaker = CircuitBreaker(
            threshold, recovery_ms / 1000, half_open_max_calls=trials, clock=self.clock, **place
        )
        self.model = ReferenceBreaker(threshold, recovery_ms * 1_000_000, trials)

        @self.breaker.call
        def dependency(outcome: str) -> str:
            if outcome == "failure":
                raise Failure
            if outcome == "interrupted":
                raise KeyboardInterrupt
            return outcome

        self.dependency = dependency

    @rule(millis=st.integers(0, 3_000))
    def advance(self, millis: int) -> None:
        self.clock.advance(millis / 1000)
        self.now += millis * 1_000_000

    @rule(outcome=st.sampled_from(["success", "failure", "interrupted"]))
    def call(self, outcome: str) -> None:
        expected_to_run = self.model.call(self.now, outcome)
        try:
            self.dependency(outcome)
            ran = True
        except (Failure, KeyboardInterrupt):
            ran = True
        except CircuitBreakerError:
            ran = False
        assert ran is expected_to_run

    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        self.model.state, self.model.streak = CircuitState.CLOSED, 0

    @rule()
    def open_for_the_recovery_timeout(self) -> None:
        self.breaker.open_for(self.breaker.recovery_timeout)
        self.model.open(self.now)

    @invariant()
    def state_matches(self) -> None:
        if hasattr(self, "breaker"):
            assert self.breaker.state is self.model.observe(self.now)
            if self.model.state is CircuitState.CLOSED:
                assert self.breaker.failure_count == self.model.streak


TestLimiterAgainstModel = LimiterMachine.TestCase
TestLimiterAgainstModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestBreakerAgainstModel = BreakerMachine.TestCase
TestBreakerAgainstModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)

#: The other engines: fewer examples each (a shared file or a Redis round trip per step).
ON_OTHER_ENGINES = settings(max_examples=40, stateful_step_count=40, deadline=None)


class SharedLimiterMachine(LimiterMachine):
    engine = ENGINES["shared"]


class RedisLimiterMachine(LimiterMachine):
    engine = ENGINES["redis"]


class SharedBreakerMachine(BreakerMachine):
    engine = ENGINES["shared"]


class RedisBreakerMachine(BreakerMachine):
    engine = ENGINES["redis"]


class TestSharedLimiterAgainstModel(SharedLimiterMachine.TestCase):  # type: ignore[name-defined]
    settings = ON_OTHER_ENGINES


@pytest.mark.usefixtures("redis_engine")
class TestRedisLimiterAgainstModel(RedisLimiterMachine.TestCase):  # type: ignore[name-defined]
    settings = ON_OTHER_ENGINES


class TestSharedBreakerAgainstModel(SharedBreakerMachine.TestCase):  # type: ignore[name-defined]
    settings = ON_OTHER_ENGINES


@pytest.mark.usefixtures("redis_engine")
class TestRedisBreakerAgainstModel(RedisBreakerMachine.TestCase):  # type: ignore[name-defined]
    settings = ON_OTHER_ENGINES


class WithResilienceMachine(RuleBasedStateMachine):
    """``with_resilience`` (breaker and limiter) against the two reference models composed
    as the decorator composes them: the breaker admits first, then the limiter; a refused
    token gives the breaker's admission back. Calls succeed, fail, or raise BaseException
    subclasses (which propagate and are no dependency failure); ``configure()`` reloads
    change the threshold in place (state and counts stay)."""

    engine = ENGINES["memory"]

    def __init__(self) -> None:
        super().__init__()
        # A module of its own: the shared and Redis engines keep state across examples.
        place = self.engine.place()
        self.module = place["name"].replace("-", "_")
        self.backend_keys = "".join(
            f"{key} = {value!r}\n".replace("'", '"')
            for key, value in (
                ("circuit_breaker_backend", place.get("backend")),
                ("rate_limit_backend", place.get("backend")),
                ("shared_dir", place.get("shared_dir")),
                ("redis_url", place.get("redis_url")),
            )
            if value is not None
        )
        self.directory = tempfile.TemporaryDirectory()
        self.path = Path(self.directory.name) / "config.toml"
        self.clock = ManualClock()
        self.fresh = fresh_resilience(self.clock)
        self.fresh.__enter__()
        self.now = 0
        self.successes = self.failures = 0

    def teardown(self) -> None:
        self.fresh.__exit__(None, None, None)
        self.directory.cleanup()

    def write(self, threshold: int) -> None:
        self.path.write_text(
            f"[resilience.{self.module}]\n"
            f"circuit_breaker_threshold = {threshold}\n"
            f"circuit_breaker_timeout = {self.recovery_ms / 1000}\n"
            f"half_open_max_calls = {self.trials}\n"
            f"rate_limit_requests = {self.requests}\n"
            f"rate_limit_window = {self.window_ms / 1000}\n"
            f"rate_limit_burst = {self.burst}\n" + self.backend_keys
        )
        configure(self.path, environ={})

    @initialize(
        threshold=st.integers(1, 5),
        recovery_ms=st.integers(1, 2_000),
        trials=st.integers(1, 3),
        requests=st.integers(1, 20),
        window_ms=st.integers(1, 5_000),
        burst=st.integers(1, 20),
    )
    def create(
        self,
        threshold: int,
        recovery_ms: int,
        trials: int,
        requests: int,
        window_ms: int,
        burst: int,
    ) -> None:
        self.recovery_ms, self.trials = recovery_ms, trials
        self.requests, self.window_ms, self.burst = requests, window_ms, burst
        self.write(threshold)
        self.breaker_model = ReferenceBreaker(threshold, recovery_ms * 1_000_000, trials)
        self.bucket_model = ReferenceBucket(requests, window_ms * 1_000_000, burst, self.engine)

        @with_resilience(self.module, "op", use_rate_limiter=True)
        def dependency(outcome: str) -> str:
            if outcome in RAISES:
                raise RAISES[outcome]()
            return outcome

        self.dependency = dependency
        self.breaker = get_all_circuit_breakers()[f"{self.module}.op"]

    @rule(millis=st.integers(0, 3_000))
    def advance(self, millis: int) -> None:
        self.clock.advance(millis / 1000)
        self.now += millis * 1_000_000
        self.bucket_model.advance(millis * 1_000_000)

    @rule(outcome=st.sampled_from(["success", "failure", *BASE_EXCEPTIONS]))
    def call(self, outcome: str) -> None:
        model = self.breaker_model
        state = model.observe(self.now)
        if state is CircuitState.OPEN or (
            state is CircuitState.HALF_OPEN and model.admitted >= model.trials
        ):
            expected = "open"
        elif not self.bucket_model.acquire(1):
            expected = "limited"  # the admission is given back: the model is unchanged
        else:
            expected = "ran"
            model.call(self.now, "interrupted" if outcome in BASE_EXCEPTIONS else outcome)
            self.successes += outcome == "success"
            self.failures += outcome == "failure"
        try:
            self.dependency(outcome)
            seen = "ran"
        except CircuitBreakerError:
            seen = "open"
        except RateLimitExceeded:
            seen = "limited"
        except tuple(RAISES.values()) as raised:
            assert type(raised) is RAISES[outcome], "the exception propagates as raised"
            seen = "ran"
        assert seen == expected

    @rule(threshold=st.integers(1, 5))
    def reload(self, threshold: int) -> None:
        self.write(threshold)
        self.breaker_model.threshold = threshold

    @invariant()
    def matches_the_models(self) -> None:
        if not hasattr(self, "breaker"):
            return
        model = self.breaker_model
        assert self.breaker.state is model.observe(self.now)
        if model.state is CircuitState.CLOSED:
            assert self.breaker.failure_count == model.streak
        assert (self.breaker.success_total, self.breaker.failure_total) == (
            self.successes,
            self.failures,
        )
        stats = _instances.operations[f"{self.module}.op"].snapshot()
        assert stats["successes"] == self.successes
        # BaseException subclasses are not dependency failures: only Failure is counted.
        assert stats["failures"] == ({"Failure": self.failures} if self.failures else {})


TestWithResilienceAgainstModel = WithResilienceMachine.TestCase
TestWithResilienceAgainstModel.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None
)


class SharedWithResilienceMachine(WithResilienceMachine):
    engine = ENGINES["shared"]


class RedisWithResilienceMachine(WithResilienceMachine):
    engine = ENGINES["redis"]


class TestSharedWithResilienceAgainstModel(SharedWithResilienceMachine.TestCase):  # type: ignore[name-defined]
    settings = ON_OTHER_ENGINES


@pytest.mark.usefixtures("redis_engine")
class TestRedisWithResilienceAgainstModel(RedisWithResilienceMachine.TestCase):  # type: ignore[name-defined]
    settings = ON_OTHER_ENGINES


LONG = settings(max_examples=scaled(3_000), stateful_step_count=100, deadline=None)


@pytest.mark.slow
class TestLimiterAgainstModelLong(LimiterMachine.TestCase):  # type: ignore[name-defined]
    settings = LONG


@pytest.mark.slow
class TestBreakerAgainstModelLong(BreakerMachine.TestCase):  # type: ignore[name-defined]
    settings = LONG


@pytest.mark.slow
class TestWithResilienceAgainstModelLong(WithResilienceMachine.TestCase):  # type: ignore[name-defined]
    settings = LONG
