"""Trader-grade circuit breaking: failure rate, slow calls, which outcomes count, open_for,
back-off, and the manual states FORCED_OPEN, DISABLED and METRICS_ONLY."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import backend_workers as workers
import pytest
from multiprocessing_helpers import run_all

from peak_resilience.errors import CircuitBreakerError
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.testing import ManualClock


class Timeout(Exception):
    pass


class InsufficientFunds(Exception):
    pass


def run(breaker: CircuitBreaker, outcome: str, clock: ManualClock | None = None) -> str:
    """One call through the native guard: "ok", "fail", or "slow" (advances the clock 2 s)."""

    def dependency() -> str:
        if outcome == "fail":
            raise Timeout()
        if outcome == "slow" and clock is not None:
            clock.advance(2.0)
        return outcome

    try:
        return breaker.call(dependency)()
    except Timeout:
        return "raised"
    except CircuitBreakerError:
        return "refused"


# Failure rate --------------------------------------------------------------------------


def test_half_the_calls_failing_opens_a_rate_breaker_the_streak_would_not(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=3, failure_rate_threshold=0.5, minimum_calls=6, clock=clock
    )
    for outcome in ["fail", "ok", "fail", "ok", "fail"]:
        run(breaker, outcome)
    assert breaker.state is CircuitState.CLOSED, "5 calls are below minimum_calls"
    run(breaker, "ok")
    assert breaker.state is CircuitState.CLOSED, "3 of 6 failed, but the last one succeeded"
    run(breaker, "fail")
    assert breaker.state is CircuitState.OPEN
    assert breaker.window_counts == (7, 4)


def test_a_time_window_only_counts_the_last_window_seconds(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        failure_threshold=100,
        failure_rate_threshold=0.5,
        minimum_calls=2,
        window_type="time",
        window_size=60,
        clock=clock,
    )
    run(breaker, "fail")
    clock.advance(60)
    run(breaker, "ok")
    run(breaker, "ok")
    run(breaker, "fail")
    assert breaker.state is CircuitState.CLOSED, "the first failure is a minute old"
    assert breaker.failure_rate == pytest.approx(1 / 3)
    run(breaker, "fail")
    assert breaker.state is CircuitState.OPEN


def test_a_bad_rate_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        CircuitBreaker(failure_rate_threshold=50)
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        CircuitBreaker(failure_rate_threshold=-0.1)
    with pytest.raises(ValueError, match="window_type"):
        CircuitBreaker(failure_rate_threshold=0.5, window_type="sliding")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="minimum_calls"):
        CircuitBreaker(failure_rate_threshold=0.5, minimum_calls=0)
    with pytest.raises(ValueError, match="backoff_multiplier"):
        CircuitBreaker(backoff_multiplier=0.5)


def test_set_settings_changes_the_rate_in_place_and_keeps_what_it_is_not_told(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(failure_rate_threshold=0.5, slow_call_duration=1.0, clock=clock)
    breaker.set_settings(5, 60.0, 1, failure_rate_threshold=0.25)
    assert breaker.failure_rate_threshold == 0.25
    assert breaker.slow_call_duration == 1.0


# Slow calls ----------------------------------------------------------------------------


def test_a_success_slower_than_slow_call_duration_counts_as_a_failure(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, slow_call_duration=1.5, clock=clock)
    assert run(breaker, "slow", clock) == "slow", "the caller still gets the value"
    assert run(breaker, "slow", clock) == "slow"
    assert breaker.state is CircuitState.OPEN
    assert breaker.slow_call_total == 2
    assert breaker.success_total == 0


def test_a_success_faster_than_slow_call_duration_is_a_success(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, slow_call_duration=5.0, clock=clock)
    run(breaker, "slow", clock)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.slow_call_total == 0


def test_a_slow_async_call_counts_as_a_failure(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, slow_call_duration=1.0, clock=clock)

    @breaker.call
    async def fetch() -> str:
        clock.advance(1.0)
        await asyncio.sleep(0)
        return "book"

    assert asyncio.run(fetch()) == "book"
    assert breaker.state is CircuitState.OPEN


def test_an_async_result_the_predicate_flags_counts_as_a_failure(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, failure_result=lambda r: r is None, clock=clock)

    @breaker.call
    async def fetch() -> None:
        await asyncio.sleep(0)

    asyncio.run(fetch())
    assert breaker.state is CircuitState.OPEN


# Which outcomes count ------------------------------------------------------------------


def test_an_ignored_exception_reaches_the_caller_and_counts_neither_way(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, ignore_exceptions=InsufficientFunds, clock=clock)

    @breaker.call
    def order() -> None:
        raise InsufficientFunds()

    for _ in range(3):
        with pytest.raises(InsufficientFunds):
            order()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failure_total == 0 and breaker.success_total == 0


def test_only_recorded_exceptions_count_as_failures(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, record_exceptions=(Timeout,), clock=clock)

    @breaker.call
    def order() -> None:
        raise InsufficientFunds()

    with pytest.raises(InsufficientFunds):
        order()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.success_total == 1
    assert run(breaker, "fail") == "raised"
    assert breaker.state is CircuitState.OPEN


def test_a_half_open_trial_ending_in_an_ignored_exception_gives_its_permit_back(
    clock: ManualClock,
) -> None:
    breaker = CircuitBreaker(
        failure_threshold=1, recovery_timeout=1, ignore_exceptions=InsufficientFunds, clock=clock
    )
    run(breaker, "fail")
    clock.advance(1)

    @breaker.call
    def order() -> None:
        raise InsufficientFunds()

    with pytest.raises(InsufficientFunds):
        order()
    assert run(breaker, "ok") == "ok", "the next call is the trial"
    assert breaker.state is CircuitState.CLOSED


def test_a_returned_value_the_predicate_flags_counts_as_a_failure(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        failure_threshold=2,
        failure_result=lambda reply: reply.get("status") == "error",
        clock=clock,
    )

    @breaker.call
    def place() -> dict[str, str]:
        return {"status": "error"}

    assert place() == {"status": "error"}, "the value still reaches the caller"
    place()
    assert breaker.state is CircuitState.OPEN


def test_bad_outcome_rules_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="record_exceptions"):
        CircuitBreaker(record_exceptions=(Timeout, "ValueError"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ignore_exceptions"):
        CircuitBreaker(ignore_exceptions=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="failure_result"):
        CircuitBreaker(failure_result="error")  # type: ignore[arg-type]


# Open for exactly Retry-After, and back-off --------------------------------------------


def test_open_for_refuses_for_exactly_that_long_then_trials(clock: ManualClock) -> None:
    breaker = CircuitBreaker(recovery_timeout=60, clock=clock)
    breaker.open_for(7.5)
    clock.advance(7.4)
    with pytest.raises(CircuitBreakerError) as refused:
        breaker.call(lambda: None)()
    assert refused.value.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN
    assert run(breaker, "ok") == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_failed_trials_back_off_exponentially_up_to_the_cap(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        failure_threshold=1,
        recovery_timeout=10,
        backoff_multiplier=3,
        max_recovery_timeout=60,
        clock=clock,
    )
    run(breaker, "fail")
    waits = [breaker.retry_after]
    for _ in range(3):
        clock.advance(breaker.retry_after)
        run(breaker, "fail")
        waits.append(breaker.retry_after)
    assert waits == [10, 30, 60, 60]
    assert breaker.failed_trials == 3


# Manual states -------------------------------------------------------------------------


def test_a_forced_open_breaker_refuses_past_its_timeout_until_reset(clock: ManualClock) -> None:
    breaker = CircuitBreaker(recovery_timeout=1, clock=clock)
    breaker.force_open()
    clock.advance(3600)
    assert breaker.state is CircuitState.FORCED_OPEN
    assert run(breaker, "ok") == "refused"
    breaker.reset()
    assert run(breaker, "ok") == "ok"


def test_a_disabled_breaker_runs_every_call_and_keeps_counting(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    breaker.disable()
    assert [run(breaker, "fail") for _ in range(3)] == ["raised"] * 3
    assert breaker.state is CircuitState.DISABLED
    assert breaker.failure_total == 3
    assert breaker.rejection_total == 0


def test_metrics_only_runs_the_calls_it_would_refuse_and_counts_them(clock: ManualClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, metrics_only=True, clock=clock)
    outcomes = [run(breaker, "fail") for _ in range(5)]
    assert outcomes == ["raised"] * 5, "nothing is refused"
    assert breaker.state is CircuitState.METRICS_ONLY
    assert breaker.shadow_state is CircuitState.OPEN
    assert breaker.would_reject_total == 3
    assert breaker.rejection_total == 0
    breaker.set_metrics_only(False)
    assert breaker.state is CircuitState.OPEN
    assert run(breaker, "ok") == "refused"


def test_each_manual_state_is_a_gauge_value_and_a_health_note(clock: ManualClock) -> None:
    from peak_resilience._health import check_circuit_breakers
    from peak_resilience.metrics import metrics

    forced = CircuitBreaker(name="policy-forced", clock=clock)
    disabled = CircuitBreaker(name="policy-disabled", clock=clock)
    shadow = CircuitBreaker(failure_threshold=1, name="policy-shadow", clock=clock)
    forced.force_open()
    disabled.disable()
    shadow.set_metrics_only(True)
    run(shadow, "fail")
    breakers = metrics.get_summary()["circuit_breakers"]
    assert breakers["policy-forced"]["state_code"] == 3
    assert breakers["policy-disabled"]["state_code"] == 4
    assert breakers["policy-shadow"]["state_code"] == 5
    assert breakers["policy-shadow"]["shadow_state"] == "open"
    healthy, message = check_circuit_breakers()
    assert not healthy
    assert "policy-forced (forced open until reset)" in message
    assert "disabled: policy-disabled" in message
    assert "metrics only: policy-shadow" in message


def test_a_manual_state_change_is_logged_and_counted(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = CircuitBreaker(name="manual", clock=clock)
    with caplog.at_level("INFO", logger="peak_resilience.resilience"):
        breaker.disable()
        breaker.reset()
    assert "CLOSED -> DISABLED" in caplog.text
    assert breaker.transition_count(CircuitState.CLOSED, CircuitState.DISABLED) == 1
    assert breaker.transition_count(CircuitState.DISABLED, CircuitState.CLOSED) == 1


# Configuration ---------------------------------------------------------------------------


RATED = """
[resilience]
circuit_breaker_threshold = 100

[resilience.venue]
circuit_breaker_failure_rate = 0.5
circuit_breaker_minimum_calls = 4
circuit_breaker_window_type = "time"
circuit_breaker_window_seconds = 30
circuit_breaker_slow_call_duration = 2.5
circuit_breaker_backoff_multiplier = 2
circuit_breaker_max_timeout = 300
"""


def test_a_modules_breaker_takes_the_policy_keys(
    fresh: ManualClock, write_config: Callable[[str], Path]
) -> None:
    from peak_resilience.config import configure
    from peak_resilience.resilience_helpers import create_module_circuit_breaker

    configure(write_config(RATED))
    breaker = create_module_circuit_breaker("venue", "orders")
    assert breaker.failure_rate_threshold == 0.5
    assert (breaker.minimum_calls, breaker.window_type, breaker.window_size) == (4, "time", 30.0)
    assert (breaker.slow_call_duration, breaker.backoff_multiplier) == (2.5, 2.0)
    assert breaker.max_recovery_timeout == 300.0
    other = create_module_circuit_breaker("spot", "orders")
    assert other.failure_rate_threshold is None, "[resilience] sets no rate"


def test_reloading_without_a_rate_turns_it_off_in_place(
    fresh: ManualClock, write_config: Callable[[str], Path]
) -> None:
    from peak_resilience.config import configure
    from peak_resilience.resilience_helpers import create_module_circuit_breaker

    configure(write_config(RATED))
    breaker = create_module_circuit_breaker("venue", "orders")
    configure(write_config("[resilience]\ncircuit_breaker_metrics_only = true\n", name="b.toml"))
    assert breaker.failure_rate_threshold is None
    assert breaker.state is CircuitState.METRICS_ONLY


def test_a_bad_policy_key_names_the_key(write_config: Callable[[str], Path]) -> None:
    from peak_resilience.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"circuit_breaker_failure_rate.*fraction"):
        load_config(write_config("[resilience]\ncircuit_breaker_failure_rate = 50\n"))
    with pytest.raises(ConfigError, match="circuit_breaker_window_type"):
        load_config(write_config('[resilience]\ncircuit_breaker_window_type = "sliding"\n'))


# Shared between processes ----------------------------------------------------------------


@pytest.fixture
def shared(tmp_path: Path) -> dict[str, Any]:
    return {"backend": "shared", "shared_dir": str(tmp_path / "shm")}


@pytest.mark.shared_backend
def test_failures_reported_by_several_processes_fill_one_failure_rate_window(
    shared: dict[str, Any],
) -> None:
    # Three processes report 2 failures and 1 success each: 6 of 9 calls, then the tenth.
    reports = run_all(workers.report_rated_calls, [("venue", shared, 2, 1)] * 3)
    assert reports == ["CLOSED"] * 3, "9 calls are below minimum_calls"
    assert run_all(workers.report_rated_calls, [("venue", shared, 1, 0)]) == ["OPEN"]
    assert workers.rated_breaker("venue", shared).window_counts == (10, 7)


@pytest.mark.shared_backend
def test_a_breaker_forced_open_by_one_process_refuses_in_all(shared: dict[str, Any]) -> None:
    assert run_all(workers.force_open_breaker, [("venue", shared)]) == ["FORCED_OPEN"]
    reports = run_all(workers.report_breaker, [("venue", shared)] * 2)
    assert reports == [("FORCED_OPEN", False)] * 2


def test_a_shared_breaker_with_another_failure_rate_is_refused(shared: dict[str, Any]) -> None:
    CircuitBreaker(name="venue", failure_rate_threshold=0.5, **shared)
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        CircuitBreaker(name="venue", failure_rate_threshold=0.25, **shared)


# Prometheus ------------------------------------------------------------------------------


def test_the_policy_families_are_exported_alike_by_both_writers(clock: ManualClock) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from peak_resilience.metrics import metrics

    def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    shadow = CircuitBreaker(failure_threshold=1, name="export-shadow", clock=clock)
    shadow.set_metrics_only(True)
    run(shadow, "fail")
    run(shadow, "ok")  # would have been refused
    slow = CircuitBreaker(failure_threshold=5, slow_call_duration=1.0, name="export-slow")
    slow.record_success()
    forced = CircuitBreaker(name="export-forced", clock=clock)
    forced.force_open()

    registry = CollectorRegistry()
    metrics.register_collector(registry)
    try:
        theirs = samples(generate_latest(registry).decode())
    finally:
        metrics.unregister_collector(registry)
    ours = samples(metrics.exposition(None)[0].decode())

    def of(family: str, name: str) -> tuple[float | None, float | None]:
        key = (family, frozenset({("name", name)}))
        return ours.get(key), theirs.get(key)

    assert of("peak_trade_circuit_breaker_state", "export-shadow") == (5, 5)
    assert of("peak_trade_circuit_breaker_shadow_state", "export-shadow") == (2, 2)
    assert of("peak_trade_circuit_breaker_would_reject_total", "export-shadow") == (1, 1)
    assert of("peak_trade_circuit_breaker_slow_calls_total", "export-slow") == (0, 0)
    assert of("peak_trade_circuit_breaker_state", "export-forced") == (3, 3)
    forced_changes = (
        "peak_trade_circuit_breaker_state_changes_total",
        frozenset(
            {("name", "export-forced"), ("from_state", "closed"), ("to_state", "forced_open")}
        ),
    )
    assert ours[forced_changes] == theirs[forced_changes] == 1
