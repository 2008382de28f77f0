"""Health checks: registration, outcomes, concurrency and timeouts, the built-in checks,
and "degraded" versus "unhealthy"."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator

import pytest

from peak_resilience._health import (
    HealthCheckRegistry,
    check_circuit_breakers,
    check_critical_circuit_breakers,
    check_resilience,
)
from peak_resilience._metrics.recorder import check_metrics
from peak_resilience.metrics import metrics
from peak_resilience.resilience import CircuitBreaker, health_check
from peak_resilience.testing import ManualClock

_names = itertools.count()


def unique(stem: str) -> str:
    return f"{stem}-{next(_names)}-{id(_names)}"


@pytest.fixture
def registry() -> HealthCheckRegistry:
    return HealthCheckRegistry()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so that a check a test left blocked returns and its thread ends."""
    event = threading.Event()
    yield event
    event.set()


def test_the_guides_check_returning_ok_and_message_is_reported_healthy(
    registry: HealthCheckRegistry,
) -> None:
    def check_database_connection() -> tuple[bool, str]:
        return True, "Database is healthy"

    registry.register("database", check_database_connection)
    result = registry.run_all()["database"]
    assert (result["healthy"], result["message"], result["critical"]) == (
        True,
        "Database is healthy",
        True,
    )
    assert result["duration_ms"] >= 0
    assert registry.is_system_healthy()


def test_a_check_may_return_a_bare_bool(registry: HealthCheckRegistry) -> None:
    registry.register("up", lambda: True)
    registry.register("down", lambda: False)
    results = registry.run_all()
    assert (results["up"]["healthy"], results["down"]["healthy"]) == (True, False)


def test_a_check_that_raises_is_unhealthy_with_the_type_but_not_the_text(
    registry: HealthCheckRegistry,
) -> None:
    def leaky() -> bool:
        raise ConnectionError("postgres://trader:hunter2@db/prod")

    registry.register("database", leaky)
    result = registry.run_all()["database"]
    assert result["healthy"] is False
    assert result["message"] == "check raised ConnectionError"
    assert not registry.is_system_healthy()


def test_a_check_returning_something_else_is_unhealthy_and_says_why(
    registry: HealthCheckRegistry,
) -> None:
    registry.register("odd", lambda: "yes")
    result = registry.run_all()["odd"]
    assert result["healthy"] is False
    assert "expected a bool or (bool, message)" in result["message"]


def test_an_async_check_is_run_to_completion(registry: HealthCheckRegistry) -> None:
    async def ping() -> tuple[bool, str]:
        await asyncio.sleep(0)
        return True, "pong"

    registry.register("async", ping)
    assert registry.run_all()["async"]["message"] == "pong"


def test_checks_run_concurrently(registry: HealthCheckRegistry) -> None:
    # Each check waits for the other: run one after the other, both would time out.
    both = threading.Barrier(2, timeout=10)

    def meet() -> bool:
        both.wait()
        return True

    registry.register("a", meet)
    registry.register("b", meet)
    results = registry.run_all()
    assert results["a"]["healthy"] and results["b"]["healthy"]


def test_a_check_past_its_timeout_is_unhealthy_and_the_others_still_report(
    registry: HealthCheckRegistry, release: threading.Event
) -> None:
    registry.register("hangs", lambda: release.wait(), timeout=0.05)
    registry.register("fine", lambda: True)
    results = registry.run_all()
    assert results["hangs"]["healthy"] is False
    assert results["hangs"]["message"] == "timed out after 0.05s"
    assert results["fine"]["healthy"] is True


def test_a_hung_check_is_not_started_again_while_it_still_runs(
    registry: HealthCheckRegistry, release: threading.Event
) -> None:
    started = []

    def hangs() -> bool:
        started.append(1)
        return release.wait()

    registry.register("hangs", hangs, timeout=0.05)
    for _ in range(3):
        assert registry.run_all()["hangs"]["healthy"] is False
    assert len(started) == 1  # one thread held, not one per request
    release.set()


def test_a_failing_non_critical_check_makes_the_system_degraded_not_unhealthy(
    registry: HealthCheckRegistry,
) -> None:
    registry.register("cache", lambda: (False, "cold"), critical=False)
    assert registry.status() == "degraded"
    assert registry.is_system_healthy()


def test_a_failing_critical_check_makes_the_system_unhealthy(
    registry: HealthCheckRegistry,
) -> None:
    registry.register("cache", lambda: (False, "cold"), critical=False)
    registry.register("exchange", lambda: (False, "unreachable"))
    assert registry.status() == "unhealthy"
    assert not registry.is_system_healthy()


def test_is_system_healthy_runs_the_checks_each_time(registry: HealthCheckRegistry) -> None:
    up = [True]
    registry.register("flag", lambda: up[0])
    assert registry.is_system_healthy()
    up[0] = False
    assert not registry.is_system_healthy()


def test_unregister_removes_a_check_and_an_unknown_name_is_a_key_error(
    registry: HealthCheckRegistry,
) -> None:
    registry.register("temporary", lambda: False)
    registry.unregister("temporary")
    assert registry.run_all() == {}
    with pytest.raises(KeyError, match="temporary"):
        registry.unregister("temporary")


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), "5", True])
def test_a_bad_timeout_is_refused_by_name(registry: HealthCheckRegistry, timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout"):
        registry.register("x", lambda: True, timeout=timeout)  # type: ignore[arg-type]


def test_a_check_that_is_not_callable_is_refused(registry: HealthCheckRegistry) -> None:
    with pytest.raises(ValueError, match=r"'db'.*callable"):
        registry.register("db", True)  # type: ignore[arg-type]


def test_the_built_in_checks_are_registered_on_import() -> None:
    assert {"metrics", "resilience", "circuit_breakers", "critical_circuit_breakers"} <= set(
        health_check.names()
    )


def test_the_resilience_check_probes_the_native_core() -> None:
    healthy, message = check_resilience()
    assert healthy, message
    assert message.startswith("native core ok")


def test_the_metrics_check_reports_recording_and_the_off_switch() -> None:
    assert check_metrics()[0]
    metrics.set_enabled(False)
    try:
        healthy, message = check_metrics()
    finally:
        metrics.set_enabled(True)
    assert healthy and "disabled" in message


def test_an_open_breaker_fails_the_non_critical_breaker_check_only(clock: ManualClock) -> None:
    name = unique("exchange")
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60, name=name, clock=clock)
    breaker.record_failure()
    clock.advance(18)
    healthy, message = check_circuit_breakers()
    assert not healthy and f"{name} (next trial in 42s)" in message
    assert check_critical_circuit_breakers()[0]
    assert health_check.run_all()["circuit_breakers"]["critical"] is False


def test_an_open_breaker_marked_critical_fails_readiness(clock: ManualClock) -> None:
    name = unique("orders")
    breaker = CircuitBreaker(failure_threshold=1, name=name, clock=clock)
    health_check.mark_breaker_critical(breaker)
    try:
        assert check_critical_circuit_breakers()[0]
        breaker.record_failure()
        healthy, message = check_critical_circuit_breakers()
        assert not healthy and name in message
        assert health_check.status() == "unhealthy"
    finally:
        health_check.mark_breaker_critical(name, critical=False)


def test_a_breaker_past_its_recovery_timeout_no_longer_counts_as_open(
    clock: ManualClock,
) -> None:
    name = unique("feed")
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=10, name=name, clock=clock)
    breaker.record_failure()
    assert name in check_circuit_breakers()[1]
    clock.advance(10)  # HALF_OPEN: a trial may go through
    assert name not in check_circuit_breakers()[1]


def health_workers() -> int:
    return sum(t.name.startswith("peak-resilience-health-") for t in threading.enumerate())


def test_repeated_runs_reuse_the_worker_threads(registry: HealthCheckRegistry) -> None:
    for name in ("a", "b", "c"):
        registry.register(name, lambda: True)
    registry.run_all()
    workers = health_workers()
    for _ in range(20):
        registry.run_all()
    assert health_workers() == workers


def test_a_check_that_calls_sys_exit_is_unhealthy_and_its_worker_survives(
    registry: HealthCheckRegistry,
) -> None:
    def exits() -> bool:
        raise SystemExit(3)

    registry.register("exits", exits)
    assert registry.run_all()["exits"]["message"] == "check raised SystemExit"
    workers = health_workers()
    registry.run_all()
    assert health_workers() == workers
