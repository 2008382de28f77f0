"""Prints what Prometheus scrapes from GET /health/prometheus after some activity: a
breaker that opened, a limiter that rejected, an operation that succeeded and one that
failed, a failing health check, a bulkhead that refused, a retry and a timeout. Run by
tests/test_deploy.py in a process of its own, so that the process-wide registries
(breakers, operations, health checks) of the test run are left as they were.

Usage: python exporter_scrape.py
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import urllib.request

from peak_resilience import _instances
from peak_resilience._guard import guard
from peak_resilience.errors import BulkheadFull
from peak_resilience.http import start_health_server
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import Bulkhead, CircuitBreaker, Retry, health_check
from peak_resilience.testing import ManualClock

# The names the activity uses; tests/test_deploy.py looks for them in the scrape.
BREAKER = "deploy-check"
LIMITER = "deploy-check"
ENDPOINT = "fetch_ticker"
OPERATION = "deploy_check"
CHECK = "deploy_check"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def fails() -> None:
    raise ValueError("deliberate")


def guard_policies(clock: ManualClock, operation_name: str) -> None:
    """A bulkhead that refuses a call, a call retried once, an async call timed out."""
    bulkhead = Bulkhead(1, name=BREAKER)
    held = guard(lambda: guard(lambda: None, bulkhead=bulkhead)(), bulkhead=bulkhead)
    try:
        held()
    except BulkheadFull:
        pass
    else:
        raise AssertionError("the bulkhead let a second call in")
    retry = Retry(2, on=ValueError, backoff=0.0)
    _instances.retries[operation_name] = retry
    attempts: list[int] = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("deliberate, then fine")

    guard(flaky, retry=retry, sleep=clock.sleep)()

    async def hangs() -> None:
        await asyncio.Event().wait()

    timed = guard(hangs, timeout=0.01, on_timeout=lambda: _instances.count_timeout(operation_name))
    with contextlib.suppress(TimeoutError):
        asyncio.run(timed())
    _KEEP.append(bulkhead)


#: Held until the scrape: the bulkhead is exported while someone holds it.
_KEEP: list[object] = []


def main() -> None:
    clock = ManualClock(start=1000.0)
    breaker = CircuitBreaker(failure_threshold=1, name=BREAKER, clock=clock)
    limiter = RateLimiter(100, 60.0, name=LIMITER, clock=clock)
    limiter.add_endpoint(ENDPOINT, 1, 60.0)
    # A budget of several windows (the per-window gauge), paused (the pause gauge).
    exchange = RateLimiter(limits=["1200/60s", "50/10s"], name=f"{LIMITER}-windows", clock=clock)
    exchange.pause(30)
    operation = _instances.operation(OPERATION)

    guard(lambda: None, operation=operation)()
    try:
        guard(fails, breaker=breaker, operation=operation)()
    except ValueError:
        pass
    else:
        raise AssertionError("the guarded function's ValueError did not reach the caller")
    admitted = [limiter.acquire(ENDPOINT), limiter.acquire(ENDPOINT)]
    assert admitted == [True, False], admitted
    health_check.register(CHECK, lambda: (False, "deliberately failing"))
    guard_policies(clock, OPERATION)

    server = start_health_server(host="127.0.0.1", port=free_port())
    try:
        url = f"http://127.0.0.1:{server.port}/health/prometheus"
        with urllib.request.urlopen(url, timeout=10) as response:
            sys.stdout.write(response.read().decode())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
