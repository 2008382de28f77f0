"""backend="redis" under many threads and idle periods: one bounded pool per process."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from redis_server import RedisServer

from peak_resilience import CircuitBreaker, RateLimiter
from peak_resilience._backends.choice import OnBackendError, backend_error_counts
from peak_resilience._backends.redis.pool import MAX_CONNECTIONS
from peak_resilience._guard import guard

SHORT_LIVED = 120
LONG_LIVED = 32
CALLS_EACH = 40
#: Objects of every long-lived thread (as a bot with many venues holds): 21 in all with
#: the two shared ones... times 32 threads.
OWN_OBJECTS = 19
DEADLINE = 120.0


def client_connections(admin: redis.Redis) -> int:
    """Connections the server has open, the admin's own not counted."""
    return len(admin.client_list()) - 1


def test_152_threads_share_a_bounded_number_of_connections(own_redis: RedisServer) -> None:
    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": own_redis.url}
    shared_limiter = RateLimiter(10**6, 3600, name="venue", **on_redis)
    shared_breaker = CircuitBreaker(5, 60, "venue", **on_redis)
    order = guard(lambda: "filled", breaker=shared_breaker, limiter=shared_limiter)
    errors: list[BaseException] = []
    results: list[str] = []
    lock = threading.Lock()
    errors_before = backend_error_counts()["redis"]

    def long_lived(n: int) -> None:
        try:
            own = [
                RateLimiter(10**6, 3600, name=f"t{n}-{i}", **on_redis) for i in range(OWN_OBJECTS)
            ]
            got = []
            for call in range(CALLS_EACH):
                got.append(order())
                assert own[call % OWN_OBJECTS].acquire()
            with lock:
                results.extend(got)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    def short_lived(n: int) -> None:
        try:
            mine = CircuitBreaker(5, 60, f"short-{n}", **on_redis)
            assert mine.allow()
            mine.record_success()
            with lock:
                results.append(order())
        except BaseException as exc:
            with lock:
                errors.append(exc)

    admin = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    threads = [threading.Thread(target=long_lived, args=(n,)) for n in range(LONG_LIVED)]
    threads += [threading.Thread(target=short_lived, args=(n,)) for n in range(SHORT_LIVED)]
    most = 0
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE
    for thread in threads:
        while thread.is_alive() and time.monotonic() < deadline:
            most = max(most, client_connections(admin))
            thread.join(0.01)
    assert not any(thread.is_alive() for thread in threads), "threads still running"
    most = max(most, client_connections(admin))
    assert errors == []
    assert results == ["filled"] * (LONG_LIVED * CALLS_EACH + SHORT_LIVED)
    # Nothing was decided by on_backend_error: every call reached Redis.
    assert backend_error_counts()["redis"] == errors_before
    print(f"\nmost connections open at once from {len(threads)} threads: {most}")
    assert 1 <= most <= MAX_CONNECTIONS
    # The main thread, after them all, is served as well.
    assert order() == "filled"


@pytest.mark.parametrize(
    ("policy", "budget", "admitted"), [("fail_closed", 5, True), ("fail_open", 1, False)]
)
def test_a_connection_the_server_closed_while_idle_is_not_an_outage(
    own_redis: RedisServer, policy: OnBackendError, budget: int, admitted: bool
) -> None:
    admin = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    admin.config_set("timeout", 1)  # the server closes a connection idle for 1 s
    limiter = RateLimiter(
        budget, 3600, name="idle", backend="redis", redis_url=own_redis.url, on_backend_error=policy
    )
    assert limiter.acquire()
    errors_before = backend_error_counts()["redis"]
    deadline = time.monotonic() + 10
    # Wait until the server has closed the limiter's connection (only the admin's left).
    while client_connections(admin) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client_connections(admin) == 0
    # fail_closed with budget left admits, fail_open with none refuses: Redis decided.
    assert limiter.acquire() is admitted
    assert limiter.redis_available
    assert backend_error_counts()["redis"] == errors_before
