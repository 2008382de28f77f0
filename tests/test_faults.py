"""Faults inside a guarded call: BaseException subclasses (KeyboardInterrupt, SystemExit,
GeneratorExit, asyncio.CancelledError) propagate as raised and are no dependency failure;
an async call cancelled from outside (task.cancel()) gives its half-open permit back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from peak_resilience import _instances
from peak_resilience.config import configure
from peak_resilience.errors import CircuitBreakerError
from peak_resilience.resilience import CircuitState
from peak_resilience.resilience_helpers import get_all_circuit_breakers, with_resilience
from peak_resilience.testing import ManualClock

BASE_EXCEPTIONS = [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError]


class ExchangeDown(Exception):
    pass


@pytest.fixture
def live(fresh: ManualClock, tmp_path: Path) -> ManualClock:
    path = tmp_path / "faults.toml"
    path.write_text(
        "[resilience.live]\ncircuit_breaker_threshold = 1\ncircuit_breaker_timeout = 10\n"
    )
    configure(path, environ={})
    return fresh


@pytest.mark.parametrize("exc_type", BASE_EXCEPTIONS)
def test_a_base_exception_in_a_decorated_call_propagates_and_is_not_a_failure(
    live: ManualClock, exc_type: type[BaseException]
) -> None:
    @with_resilience("live", f"interrupted_{exc_type.__name__}")
    def place() -> None:
        raise exc_type()

    for _ in range(5):
        with pytest.raises(exc_type):
            place()

    breaker = get_all_circuit_breakers()[f"live.interrupted_{exc_type.__name__}"]
    assert breaker.state is CircuitState.CLOSED  # threshold 1: one failure would open it
    assert (breaker.failure_total, breaker.success_total) == (0, 0)
    stats = _instances.operations[f"live.interrupted_{exc_type.__name__}"].snapshot()
    assert stats["failures"] == {} and stats["successes"] == 0


@pytest.mark.parametrize("exc_type", BASE_EXCEPTIONS)
def test_a_base_exception_in_an_async_decorated_call_propagates_and_is_not_a_failure(
    live: ManualClock, exc_type: type[BaseException]
) -> None:
    @with_resilience("live", f"async_interrupted_{exc_type.__name__}")
    async def place() -> None:
        raise exc_type()

    async def scenario() -> None:
        for _ in range(5):
            with pytest.raises(exc_type):
                await place()

    asyncio.run(scenario())
    breaker = get_all_circuit_breakers()[f"live.async_interrupted_{exc_type.__name__}"]
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_total == 0


@pytest.mark.parametrize("exc_type", BASE_EXCEPTIONS)
def test_a_base_exception_during_the_half_open_trial_gives_the_permit_back(
    live: ManualClock, exc_type: type[BaseException]
) -> None:
    outcomes = iter([ExchangeDown(), exc_type(), None])

    @with_resilience("live", f"trial_{exc_type.__name__}")
    def place() -> str:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        return "filled"

    with pytest.raises(ExchangeDown):
        place()
    with pytest.raises(CircuitBreakerError):
        place()
    live.advance(10)
    with pytest.raises(exc_type):
        place()  # the one trial call, interrupted: neither success nor failure

    assert place() == "filled"  # the permit came back: a second trial is admitted
    assert get_all_circuit_breakers()[f"live.trial_{exc_type.__name__}"].state is (
        CircuitState.CLOSED
    )


def test_a_task_cancelled_during_its_half_open_trial_gives_the_permit_back(
    live: ManualClock,
) -> None:
    started = asyncio.Event()
    calls: list[str] = []

    @with_resilience("live", "cancelled_trial")
    async def fetch(fail: bool) -> str:
        calls.append("run")
        if fail:
            raise ExchangeDown()
        if len(calls) == 2:
            started.set()
            await asyncio.Event().wait()  # hangs until cancelled
        return "quote"

    async def scenario() -> None:
        with pytest.raises(ExchangeDown):
            await fetch(True)
        live.advance(10)
        trial = asyncio.create_task(fetch(False))
        await started.wait()
        with pytest.raises(CircuitBreakerError):
            await fetch(False)  # the trial holds the only permit
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        assert await fetch(False) == "quote"

    asyncio.run(scenario())
    breaker = get_all_circuit_breakers()["live.cancelled_trial"]
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_total == 1
