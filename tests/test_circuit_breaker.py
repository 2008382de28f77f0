"""CircuitBreaker: CLOSED -> OPEN after consecutive failures, a trial after the timeout."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from peak_resilience.errors import CircuitBreakerError
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.testing import ManualClock


class Boom(Exception):
    pass


def failing() -> None:
    raise Boom("dependency down")


def test_the_guides_manual_breaker_opens_after_five_failures(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        failure_threshold=5, recovery_timeout=60.0, name="my_operation", clock=clock
    )
    calls = []

    @breaker.call
    def risky_operation() -> None:
        calls.append(1)
        raise Boom()

    for _ in range(5):
        with pytest.raises(Boom):
            risky_operation()
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitBreakerError) as rejected:
        risky_operation()
    assert len(calls) == 5
    message = str(rejected.value)
    assert "CircuitBreaker" in message
    assert "my_operation" in message
    assert "60.000s" in message
    assert rejected.value.name == "my_operation"
    assert rejected.value.retry_after == pytest.approx(60.0)


def test_a_success_resets_the_consecutive_failure_count(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=clock)
    guarded = breaker.call(lambda fail: failing() if fail else "ok")
    for fail in (True, True, False, True, True):
        with contextlib.suppress(Boom):
            guarded(fail)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_count == 2


def test_after_the_recovery_timeout_one_trial_runs_and_success_closes(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30, clock=clock)
    with pytest.raises(Boom):
        breaker.call(failing)()
    clock.advance(29.999)
    assert breaker.state is CircuitState.OPEN
    clock.advance(0.001)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.call(lambda: "recovered")() == "recovered"
    assert breaker.state is CircuitState.CLOSED


def test_a_failed_trial_opens_the_circuit_for_another_timeout(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30, clock=clock)
    guarded = breaker.call(failing)
    with pytest.raises(Boom):
        guarded()
    clock.advance(30)
    with pytest.raises(Boom):
        guarded()
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(30)


def test_half_open_lets_exactly_one_trial_through_by_default(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1, clock=clock)
    with pytest.raises(Boom):
        breaker.call(failing)()
    clock.advance(1)
    seen = []

    @breaker.call
    def trial() -> str:
        # A second caller arriving while the trial runs is refused.
        with pytest.raises(CircuitBreakerError, match="HALF_OPEN"):
            breaker.call(lambda: None)()
        seen.append("trial")
        return "ok"

    assert trial() == "ok"
    assert seen == ["trial"]


def test_the_functions_own_exception_reaches_the_caller_unchanged(clock: ManualClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    error = Boom("exact instance")

    @breaker.call
    def raises() -> None:
        raise error

    with pytest.raises(Boom) as caught:
        raises()
    assert caught.value is error


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_pass_through_and_count_neither_way(
    clock: ManualClock, exc_type: type[BaseException]
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)

    @breaker.call
    def interrupted() -> None:
        raise exc_type()

    with pytest.raises(exc_type):
        interrupted()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_total == 0
    assert breaker.success_total == 0


def test_an_interrupted_trial_gives_its_permit_back(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1, clock=clock)
    with pytest.raises(Boom):
        breaker.call(failing)()
    clock.advance(1)

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupt)()
    assert breaker.call(lambda: "second trial")() == "second trial"
    assert breaker.state is CircuitState.CLOSED


def test_async_functions_are_guarded_and_a_cancelled_trial_releases_its_permit(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=5, clock=clock)

    @breaker.call
    async def fetch(fail: bool) -> str:
        if fail:
            raise Boom()
        return "data"

    @breaker.call
    async def cancelled() -> None:
        raise asyncio.CancelledError()

    async def scenario() -> None:
        assert await fetch(False) == "data"
        for _ in range(2):
            with pytest.raises(Boom):
                await fetch(True)
        with pytest.raises(CircuitBreakerError):
            await fetch(False)
        clock.advance(5)
        with pytest.raises(asyncio.CancelledError):
            await cancelled()
        assert await fetch(False) == "data"

    asyncio.run(scenario())
    assert breaker.state is CircuitState.CLOSED
    assert fetch.__name__ == "fetch"


def test_methods_can_be_decorated_and_receive_self(clock: ManualClock) -> None:
    breaker = CircuitBreaker(clock=clock)

    class Portfolio:
        def __init__(self) -> None:
            self.value = 42

        @breaker.call
        def calculate(self, factor: int) -> int:
            """Calculate portfolio metrics."""
            return self.value * factor

    assert Portfolio().calculate(2) == 84
    assert Portfolio.calculate.__doc__ == "Calculate portfolio metrics."


def test_a_guarded_method_read_without_calling_is_bound_to_its_instance(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(clock=clock)

    class Portfolio:
        def __init__(self, value: int) -> None:
            self.value = value

        @breaker.call
        def calculate(self, factor: int) -> int:
            return self.value * factor

    small, large = Portfolio(1), Portfolio(100)
    bound = large.calculate  # kept for later, as a callback would be
    assert bound.__self__ is large
    assert [small.calculate(3), bound(3), Portfolio.calculate(small, 5)] == [3, 300, 5]
    assert breaker.get_stats()["successes"] == 3


def test_decoration_keeps_name_docstring_and_wrapped(clock: ManualClock) -> None:
    breaker = CircuitBreaker(clock=clock)

    def load_market_data(symbol: str) -> str:
        """Load market data."""
        return symbol

    guarded = breaker.call(load_market_data)
    assert guarded.__name__ == "load_market_data"
    assert guarded.__doc__ == "Load market data."
    assert guarded.__wrapped__ is load_market_data  # type: ignore[attr-defined]


def test_allow_and_record_drive_the_breaker_without_a_decorator(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=1, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.allow() is False
    clock.advance(1)
    assert breaker.allow() is True
    assert breaker.allow() is False
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED


def test_reset_and_force_open(clock: ManualClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    breaker.force_open()
    assert breaker.state is CircuitState.FORCED_OPEN
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_count == 0


def test_state_changes_are_counted_per_transition(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1, clock=clock)
    with pytest.raises(Boom):
        breaker.call(failing)()
    clock.advance(1)
    breaker.call(lambda: None)()
    closed, half_open, open_ = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN
    assert breaker.transition_count(closed, open_) == 1
    assert breaker.transition_count(open_, half_open) == 1
    assert breaker.transition_count(half_open, closed) == 1


def test_transitions_are_logged_opening_as_a_warning(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, name="orders", clock=clock)
    with caplog.at_level("INFO", logger="peak_resilience"), pytest.raises(Boom):
        breaker.call(failing)()
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert "'orders': CLOSED -> OPEN" in record.getMessage()


def test_the_state_enum_has_the_gauge_values() -> None:
    assert [int(s) for s in (CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN)] == [
        0,
        1,
        2,
    ]
    assert str(CircuitState.OPEN) == "OPEN"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_threshold": 0}, "failure_threshold must be a positive integer, got 0"),
        ({"failure_threshold": -3}, "failure_threshold must be a positive integer, got -3"),
        (
            {"recovery_timeout": 0},
            "recovery_timeout must be a positive finite number of seconds, got 0",
        ),
        ({"recovery_timeout": -60.0}, "got -60.0"),
        ({"half_open_max_calls": 0}, "half_open_max_calls must be a positive integer"),
        ({"name": ""}, "name must be a non-empty str"),
    ],
)
def test_impossible_settings_are_a_value_error_naming_the_parameter(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_a_clock_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"clock must be a peak_resilience\.testing\.ManualClock"):
        CircuitBreaker(clock=object())  # type: ignore[arg-type]


def test_decorating_something_not_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        CircuitBreaker().call(42)  # type: ignore[arg-type]


def test_a_refusal_by_hand_reads_like_any_exception() -> None:
    assert str(CircuitBreakerError("custom")) == "custom"
    assert CircuitBreakerError("custom").name == ""


def backend_arguments(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> dict[str, object]:
    """A breaker's keyword arguments for `backend` (a real redis-server for "redis")."""
    where: dict[str, object] = {"backend": backend}
    if backend == "shared":
        where["shared_dir"] = str(tmp_path)
    elif backend == "redis":
        where["redis_url"] = request.getfixturevalue("redis_url")
    return where


@pytest.mark.parametrize("backend", ["memory", "shared", "redis"])
def test_a_trial_long_after_a_state_read_half_opened_the_circuit_is_the_only_one(
    backend: str, clock: ManualClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A scrape reads HALF_OPEN as the timeout passes; the first real call comes a minute
    # later. A second call during that trial is refused, and the trial's failure reopens.
    where = backend_arguments(backend, tmp_path, request)
    breaker = CircuitBreaker(1, 10, name="scraped", clock=clock, **where)  # type: ignore[arg-type]
    with pytest.raises(Boom):
        breaker.call(failing)()
    clock.advance(10)
    assert breaker.state is CircuitState.HALF_OPEN
    clock.advance(60)
    second: list[str] = []

    def trial() -> None:
        try:
            breaker.call(lambda: "second trial ran")()
        except CircuitBreakerError:
            second.append("refused")
        raise Boom("still down")

    with pytest.raises(Boom):
        breaker.call(trial)()
    assert second == ["refused"]
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("backend", ["memory", "shared", "redis"])
def test_a_success_recorded_by_hand_with_no_trial_permit_out_does_not_close_the_circuit(
    backend: str, clock: ManualClock, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where = backend_arguments(backend, tmp_path, request)
    breaker = CircuitBreaker(1, 10, name="by-hand", clock=clock, **where)  # type: ignore[arg-type]
    breaker.record_failure()
    clock.advance(10)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.record_success()  # no allow(): no trial permit taken
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
