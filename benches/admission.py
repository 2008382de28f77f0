"""Correctness beside speed: how many requests each limiter admits when 8 threads share a
budget of K (with the switch interval at 1 us, so threads interleave inside acquires).

    python benches/admission.py

Exactly K is right; more means the limiter lost updates under contention.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

THREADS = 8
BUDGET = 2_000
ATTEMPTS_PER_THREAD = 1_000
WINDOW = 3600.0  # long enough that nothing refills during the run


def admitted(acquire: Callable[[], bool]) -> int:
    counts = [0] * THREADS
    start = threading.Barrier(THREADS)

    def work(slot: int) -> None:
        start.wait()
        counts[slot] = sum(1 for _ in range(ATTEMPTS_PER_THREAD) if acquire())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return sum(counts)


def ours() -> Callable[[], bool]:
    from peak_resilience.rate_limiter import RateLimiter

    return RateLimiter(BUDGET, WINDOW).acquire


def token_bucket() -> Callable[[], bool]:
    import token_bucket as tb

    limiter = tb.Limiter(BUDGET / WINDOW, BUDGET, tb.MemoryStorage())
    return lambda: bool(limiter.consume(b"key"))


def limits_fixed_window() -> Callable[[], bool]:
    from limits import RateLimitItemPerHour
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter

    limiter, item = FixedWindowRateLimiter(MemoryStorage()), RateLimitItemPerHour(BUDGET)
    return lambda: bool(limiter.hit(item, "key"))


def pyrate_limiter() -> Callable[[], bool]:
    from pyrate_limiter import Duration, Limiter, Rate

    limiter = Limiter(Rate(BUDGET, Duration.HOUR))
    return lambda: bool(limiter.try_acquire("key", 1, False))


def main() -> int:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        print(f"| limiter | admitted of a budget of {BUDGET} (8 threads) | exact |")
        print("|---|---|---|")
        for name, make in [
            ("peak-resilience", ours),
            ("token-bucket", token_bucket),
            ("limits (fixed window)", limits_fixed_window),
            ("pyrate-limiter", pyrate_limiter),
        ]:
            try:
                count = admitted(make())
            except ImportError:
                print(f"| {name} | not installed | |")
                continue
            print(f"| {name} | {count} | {'yes' if count == BUDGET else 'NO'} |")
    finally:
        sys.setswitchinterval(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
