"""The demo: an order loop against a simulated exchange that fails for a while.

It shows the two things the package does: the breaker opening on consecutive failures
(and failing fast until its recovery timeout), and the limiter rejecting past its budget.
"""

from __future__ import annotations

import random
import time

from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker


class SimulatedExchange:
    """Answers orders, except during an outage window, when it raises."""

    def __init__(self, outage_start: float, outage_end: float) -> None:
        self.outage = (outage_start, outage_end)
        self.started = time.monotonic()

    def submit_order(self, symbol: str) -> str:
        elapsed = time.monotonic() - self.started
        if self.outage[0] <= elapsed < self.outage[1]:
            raise ConnectionError("exchange unreachable")
        return f"filled {symbol}"


def run(duration: float = 3.0) -> int:
    exchange = SimulatedExchange(outage_start=duration * 0.2, outage_end=duration * 0.45)
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=duration * 0.2, name="orders")
    limiter = RateLimiter(max_requests=40, window_seconds=1.0, burst=10, name="exchange")
    submit = breaker.call(exchange.submit_order)
    counts = {"filled": 0, "failed": 0, "fast-failed": 0, "rate-limited": 0}
    last_state = breaker.state
    print(f"demo: {duration:.1f}s of orders at ~100/s against a 40/s limit; outage mid-run")
    deadline = time.monotonic() + duration
    rng = random.Random(7)
    while time.monotonic() < deadline:
        symbol = rng.choice(["BTC/EUR", "ETH/EUR", "SOL/EUR"])
        try:
            if not limiter.acquire():
                raise RateLimitExceeded(limiter.name, None, limiter.get_wait_time())
            submit(symbol)
            counts["filled"] += 1
        except RateLimitExceeded:
            counts["rate-limited"] += 1
        except CircuitBreakerError:
            counts["fast-failed"] += 1
        except ConnectionError:
            counts["failed"] += 1
        if breaker.state is not last_state:
            print(f"  breaker 'orders': {last_state} -> {breaker.state}")
            last_state = breaker.state
        time.sleep(0.01)
    print("  " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    stats = limiter.get_stats()
    print(f"  limiter rejection rate: {stats['rejection_rate']:.0%}")
    return 0
