"""Eight threads hammering one limiter, one breaker and one ``with_resilience`` function:
exact admission, every counter equal to the sum of the outcomes the callers saw, and no
deadlock (every thread ends). The full size (8 x 100,000 operations each) is marked slow;
the default run does 8 x 5,000 on the decorated function (the limiter and the breaker
have their short runs in test_threads.py)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from stress import scaled

from peak_resilience import _instances
from peak_resilience.config import configure
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.resilience_helpers import (
    get_all_circuit_breakers,
    get_all_rate_limiters,
    with_resilience,
)
from peak_resilience.testing import ManualClock

THREADS = 8
FULL = 100_000


def hammer(work: Callable[[int], Counter[str]]) -> Counter[str]:
    """Runs ``work(thread_index)`` on eight threads started together; sums what each saw."""
    start = threading.Barrier(THREADS)
    seen: list[Counter[str]] = [Counter() for _ in range(THREADS)]

    def run(me: int) -> None:
        start.wait()
        seen[me] = work(me)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (deadlock?)"
    return sum(seen, Counter())


@pytest.mark.slow
def test_one_limiter_admits_exactly_its_budget_to_eight_threads_of_100k() -> None:
    per_thread = scaled(FULL)
    budget = THREADS * per_thread * 3 // 8
    limiter = RateLimiter(budget, 3600.0, clock=ManualClock())

    def work(me: int) -> Counter[str]:
        return Counter("admitted" if limiter.acquire() else "refused" for _ in range(per_thread))

    outcomes = hammer(work)

    assert outcomes["admitted"] == budget
    assert outcomes["refused"] == THREADS * per_thread - budget
    stats = limiter.get_stats()
    assert (stats["allowed"], stats["rejected"]) == (outcomes["admitted"], outcomes["refused"])


@pytest.mark.slow
def test_one_breaker_counts_every_outcome_of_eight_threads_of_100k() -> None:
    per_thread = scaled(FULL)
    breaker = CircuitBreaker(failure_threshold=16_777_215, clock=ManualClock())

    @breaker.call
    def sometimes(i: int) -> int:
        if i % 3 == 0:
            raise ValueError(i)
        return i

    def work(me: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        for i in range(per_thread):
            try:
                sometimes(i)
                seen["ok"] += 1
            except ValueError:
                seen["failed"] += 1
        return seen

    outcomes = hammer(work)

    assert outcomes["ok"] + outcomes["failed"] == THREADS * per_thread
    assert breaker.success_total == outcomes["ok"]
    assert breaker.failure_total == outcomes["failed"]
    assert breaker.state is CircuitState.CLOSED


@pytest.fixture
def decorated_under_load(fresh: ManualClock) -> Iterator[None]:
    yield


def run_decorated(per_thread: int, threshold: int) -> None:
    """One ``with_resilience`` function on a budget of 3/8 of the calls; every third call
    raises, and every call in each thread's second half. Checks every outcome against the
    breaker, the limiter and the stats."""
    total = THREADS * per_thread
    budget = total * 3 // 8
    configure(
        environ={
            "PEAK_TRADE_RATE_LIMIT_REQUESTS": str(budget),
            "PEAK_TRADE_RATE_LIMIT_WINDOW": "3600",
            "PEAK_TRADE_CIRCUIT_BREAKER_THRESHOLD": str(threshold),
        }
    )

    @with_resilience("stress", "orders", use_rate_limiter=True)
    def place(i: int) -> int:
        if i % 3 == 0 or i >= per_thread // 2:
            raise ValueError(i)
        return i

    def work(me: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        for i in range(per_thread):
            try:
                place(i)
                seen["ok"] += 1
            except ValueError:
                seen["failed"] += 1
            except RateLimitExceeded:
                seen["rate_limited"] += 1
            except CircuitBreakerError:
                seen["open"] += 1
        return seen

    outcomes = hammer(work)

    assert sum(outcomes.values()) == total
    breaker = get_all_circuit_breakers()["stress.orders"]
    limiter = get_all_rate_limiters()["stress"].get_stats()
    stats = _instances.operations["stress.orders"].snapshot()
    # The breaker decides first, then the limiter: every call the breaker let through
    # took a token or was refused one, and a refused token gave the admission back.
    assert breaker.rejection_total == outcomes["open"]
    assert limiter["allowed"] == outcomes["ok"] + outcomes["failed"]
    assert limiter["rejected"] == outcomes["rate_limited"]
    assert limiter["allowed"] <= budget
    assert breaker.success_total == outcomes["ok"] == stats["successes"]
    assert breaker.failure_total == outcomes["failed"] == stats["failures"].get("ValueError", 0)
    if threshold > total:
        # The breaker never opens: the limiter admitted exactly its budget.
        assert outcomes["open"] == 0
        assert limiter["allowed"] == budget
        assert outcomes["rate_limited"] == total - budget
    else:
        assert outcomes["open"] > 0 and breaker.state is CircuitState.OPEN


def test_a_decorated_function_accounts_for_every_call_of_eight_threads(
    decorated_under_load: None,
) -> None:
    run_decorated(5_000, threshold=16_777_215)


def test_a_decorated_function_whose_breaker_trips_under_load_still_accounts_for_all(
    decorated_under_load: None,
) -> None:
    # A low threshold: the breaker opens mid-run (the manual clock never lets it recover),
    # and the refusals are counted as rejections, never lost or double counted.
    run_decorated(2_000, threshold=50)


@pytest.mark.slow
def test_a_decorated_function_accounts_for_every_call_of_eight_threads_of_100k(
    decorated_under_load: None,
) -> None:
    run_decorated(scaled(FULL), threshold=16_777_215)
