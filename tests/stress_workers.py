"""Work run in child processes by the multi-process stress tests (a module of its own,
so that a spawned child imports only this)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from peak_resilience import CircuitBreaker, RateLimiter

THREADS_PER_PROCESS = 2
NO_REFILL_WINDOW = 10_000_000.0


def _threads(work: Any) -> Counter[str]:
    seen = [Counter[str]() for _ in range(THREADS_PER_PROCESS)]

    def run(me: int) -> None:
        seen[me] = work()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS_PER_PROCESS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return sum(seen, Counter())


def acquire_many(budget: int, shared_dir: str, start: Any, per_thread: int, results: Any) -> None:
    """Two threads acquiring `per_thread` times each from the shared budget "stress"."""
    limiter = RateLimiter(
        budget, NO_REFILL_WINDOW, name="stress", backend="shared", shared_dir=shared_dir
    )
    start.wait(60)
    outcomes = _threads(
        lambda: Counter("admitted" if limiter.acquire() else "refused" for _ in range(per_thread))
    )
    results.put(dict(outcomes))


def call_many(shared_dir: str, start: Any, per_thread: int, results: Any) -> None:
    """Two threads calling a function guarded by the shared breaker "stress", one call in
    three failing (the threshold is out of reach: every call runs and is counted)."""
    breaker = CircuitBreaker(16_777_215, 3600.0, "stress", backend="shared", shared_dir=shared_dir)

    @breaker.call
    def sometimes(i: int) -> int:
        if i % 3 == 0:
            raise ValueError(i)
        return i

    def work() -> Counter[str]:
        seen: Counter[str] = Counter()
        for i in range(per_thread):
            try:
                sometimes(i)
                seen["succeeded"] += 1
            except ValueError:
                seen["failed"] += 1
        return seen

    start.wait(60)
    results.put(dict(_threads(work)))
