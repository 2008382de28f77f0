"""The stress runs on the backends that share state: eight threads of 100k on a shared
and a Redis budget, and four processes of two threads on a shared budget and a shared
breaker. Exact admission, every shared counter equal to the outcomes the callers saw.
Marked slow: ``scripts/test-slow`` runs them in a short form."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stress_workers as workers
from multiprocessing_helpers import CONTEXT, run_all
from stress import scaled

from peak_resilience import CircuitBreaker, RateLimiter

THREADS = 8
PROCESSES = 4
FULL = 100_000


def hammer(work: Callable[[], Counter[str]]) -> Counter[str]:
    start = threading.Barrier(THREADS)
    seen = [Counter[str]() for _ in range(THREADS)]

    def run(me: int) -> None:
        start.wait()
        seen[me] = work()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    return sum(seen, Counter())


@pytest.mark.slow
def test_a_shared_or_redis_budget_admits_exactly_itself_to_eight_threads(
    make_shared_limiter: Callable[..., RateLimiter],
) -> None:
    probe = make_shared_limiter(1, 1.0, name="probe")
    redis = probe.backend == "redis"
    # Redis answers in tens of microseconds, not nanoseconds: a tenth of the size there.
    per_thread = max(1, scaled(FULL) // (10 if redis else 1))
    budget = THREADS * per_thread * 3 // 8
    limiter = make_shared_limiter(budget, 10_000_000.0, name="stress")

    outcomes = hammer(
        lambda: Counter("admitted" if limiter.acquire() else "refused" for _ in range(per_thread))
    )

    assert outcomes["admitted"] == budget
    assert outcomes["refused"] == THREADS * per_thread - budget
    if not redis:  # the Redis limiter's own tallies are per-process display counts
        stats = limiter.get_stats()
        assert (stats["allowed"], stats["rejected"]) == (outcomes["admitted"], outcomes["refused"])


@pytest.mark.slow
def test_four_processes_of_two_threads_admit_exactly_one_shared_budget(tmp_path: Path) -> None:
    per_thread = scaled(FULL) // 2
    total = PROCESSES * workers.THREADS_PER_PROCESS * per_thread
    budget = total * 3 // 8
    shared_dir = str(tmp_path / "shm")
    start = CONTEXT.Barrier(PROCESSES + 1)
    reports: list[dict[str, Any]] = run_all(
        workers.acquire_many, [(budget, shared_dir, start, per_thread)] * PROCESSES, start
    )
    outcomes = sum((Counter(r) for r in reports), Counter())

    assert outcomes["admitted"] == budget
    assert outcomes["refused"] == total - budget
    limiter = RateLimiter(
        budget, workers.NO_REFILL_WINDOW, name="stress", backend="shared", shared_dir=shared_dir
    )
    stats = limiter.get_stats()
    assert (stats["allowed"], stats["rejected"]) == (outcomes["admitted"], outcomes["refused"])


@pytest.mark.slow
def test_four_processes_of_two_threads_lose_no_count_on_one_shared_breaker(
    tmp_path: Path,
) -> None:
    per_thread = scaled(FULL) // 2
    shared_dir = str(tmp_path / "shm")
    start = CONTEXT.Barrier(PROCESSES + 1)
    reports: list[dict[str, Any]] = run_all(
        workers.call_many, [(shared_dir, start, per_thread)] * PROCESSES, start
    )
    outcomes = sum((Counter(r) for r in reports), Counter())

    breaker = CircuitBreaker(16_777_215, 3600.0, "stress", backend="shared", shared_dir=shared_dir)
    assert outcomes["succeeded"] + outcomes["failed"] == (
        PROCESSES * workers.THREADS_PER_PROCESS * per_thread
    )
    assert breaker.success_total == outcomes["succeeded"]
    assert breaker.failure_total == outcomes["failed"]
