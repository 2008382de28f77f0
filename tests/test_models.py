"""Stateful property tests: the public objects against plain Python reference models,
over random operations and clock advances on the manual clock (hypothesis)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from peak_resilience.errors import CircuitBreakerError
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.testing import ManualClock


class ReferenceBucket:
    """A token bucket that counts in nanoseconds of refill: the obvious implementation."""

    def __init__(self, max_requests: int, window_ns: int, burst: int) -> None:
        self.interval = (window_ns + max_requests // 2) // max_requests
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
    @initialize(
        max_requests=st.integers(1, 50),
        window_ms=st.integers(1, 10_000),
        burst=st.integers(1, 50),
    )
    def create(self, max_requests: int, window_ms: int, burst: int) -> None:
        self.clock = ManualClock()
        self.limiter = RateLimiter(max_requests, window_ms / 1000, burst=burst, clock=self.clock)
        self.model = ReferenceBucket(max_requests, window_ms * 1_000_000, burst)
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


class BreakerMachine(RuleBasedStateMachine):
    @initialize(
        threshold=st.integers(1, 5),
        recovery_ms=st.integers(1, 2_000),
        trials=st.integers(1, 3),
    )
    def create(self, threshold: int, recovery_ms: int, trials: int) -> None:
        self.clock = ManualClock()
        self.now = 0
        self.breaker = CircuitBreaker(
            threshold, recovery_ms / 1000, "model", trials, clock=self.clock
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
