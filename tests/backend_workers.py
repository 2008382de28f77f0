"""Functions run in child processes by the multi-process backend tests.

They live in a module of their own so that a spawned child imports only this, not a test
module. Each builds its limiter or breaker itself: a budget is found by name, never
inherited from the parent.
"""

from __future__ import annotations

from typing import Any

from peak_resilience import CircuitBreaker, RateLimiter

#: A window so long that nothing refills during a test: a budget of K admits exactly K.
NO_REFILL_WINDOW = 10_000_000.0


def limiter(name: str, budget: int, backend: dict[str, Any]) -> RateLimiter:
    return RateLimiter(budget, NO_REFILL_WINDOW, name=name, **backend)


def take_all(
    name: str, budget: int, backend: dict[str, Any], start: Any, attempts: int, results: Any
) -> None:
    """Waits at the start barrier, tries `attempts` acquires, reports how many passed."""
    mine = limiter(name, budget, backend)
    start.wait(30)
    results.put(sum(1 for _ in range(attempts) if mine.acquire()))


def drain(name: str, budget: int, backend: dict[str, Any], results: Any) -> None:
    """Takes tokens until the budget refuses one, reports how many it took."""
    mine = limiter(name, budget, backend)
    taken = 0
    while mine.acquire():
        taken += 1
    results.put(taken)


def spend_forever(name: str, budget: int, backend: dict[str, Any]) -> None:
    """Acquires in a tight loop until killed (the SIGKILL test's victim)."""
    mine = limiter(name, budget, backend)
    while True:
        mine.acquire()


def breaker(name: str, backend: dict[str, Any]) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, recovery_timeout=3600.0, name=name, **backend)


def fail_until_open(name: str, backend: dict[str, Any], results: Any) -> None:
    """Records failures through this process's breaker until it reads OPEN."""
    mine = breaker(name, backend)
    for _ in range(3):
        if mine.allow():
            mine.record_failure()
    results.put(mine.state.name)


def report_breaker(name: str, backend: dict[str, Any], results: Any) -> None:
    """Reports the state this process sees, and whether it would let a call through."""
    mine = breaker(name, backend)
    results.put((mine.state.name, mine.allow()))


def create_and_take(
    name: str, budget: int, backend: dict[str, Any], start: Any, attempts: int, results: Any
) -> None:
    """Builds its limiter only after the start barrier, so that every process tries to
    create the shared state at the same instant; reports how many acquires passed."""
    start.wait(30)
    mine = limiter(name, budget, backend)
    results.put(sum(1 for _ in range(attempts) if mine.acquire()))


def take_trial_and_hang(name: str, recovery: float, backend: dict[str, Any], holding: Any) -> None:
    """Takes the half-open trial permit, says so, then waits to be killed."""
    import time

    from peak_resilience import CircuitState

    mine = CircuitBreaker(failure_threshold=1, recovery_timeout=recovery, name=name, **backend)
    while not (mine.state is CircuitState.HALF_OPEN and mine.allow()):
        time.sleep(recovery / 20)
    holding.set()
    time.sleep(3600)


def rated_breaker(name: str, backend: dict[str, Any]) -> CircuitBreaker:
    """A breaker that opens on half of its last 10 calls failing (the streak never does)."""
    return CircuitBreaker(
        failure_threshold=1000,
        recovery_timeout=3600.0,
        name=name,
        failure_rate_threshold=0.5,
        minimum_calls=10,
        window_size=10,
        **backend,
    )


def report_rated_calls(
    name: str, backend: dict[str, Any], failures: int, successes: int, results: Any
) -> None:
    """Reports `failures` then `successes` calls through this process's rated breaker."""
    mine = rated_breaker(name, backend)
    for _ in range(failures):
        if mine.allow():
            mine.record_failure()
    for _ in range(successes):
        if mine.allow():
            mine.record_success()
    results.put(mine.state.name)


def force_open_breaker(name: str, backend: dict[str, Any], results: Any) -> None:
    """Holds this process's breaker open by hand."""
    mine = breaker(name, backend)
    mine.force_open()
    results.put(mine.state.name)


def take_all_windows(
    name: str,
    windows: list[tuple[int, float]],
    backend: dict[str, Any],
    start: Any,
    attempts: int,
    results: Any,
) -> None:
    """As take_all, on a budget of several windows."""
    mine = RateLimiter(limits=windows, name=name, **backend)
    start.wait(30)
    results.put(sum(1 for _ in range(attempts) if mine.acquire()))


def try_once(name: str, budget: int, backend: dict[str, Any], results: Any) -> None:
    """Reports whether one acquire passes (a budget paused elsewhere refuses it)."""
    results.put(limiter(name, budget, backend).acquire())
