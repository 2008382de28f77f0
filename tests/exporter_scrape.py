"""Prints what Prometheus scrapes from GET /health/prometheus after some activity: a
breaker that opened, a limiter that rejected, an operation that succeeded and one that
failed, a failing health check. Run by tests/test_deploy.py in a process of its own, so
that the process-wide registries (breakers, operations, health checks) of the test run
are left as they were.

Usage: python exporter_scrape.py
"""

from __future__ import annotations

import socket
import sys
import urllib.request

from peak_resilience import _instances
from peak_resilience._guard import guard
from peak_resilience.http import start_health_server
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, health_check
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

    server = start_health_server(host="127.0.0.1", port=free_port())
    try:
        url = f"http://127.0.0.1:{server.port}/health/prometheus"
        with urllib.request.urlopen(url, timeout=10) as response:
            sys.stdout.write(response.read().decode())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
