"""Choosing a backend in config.toml: `rate_limit_backend` and `circuit_breaker_backend`
per `[resilience.<module>]`, with `shared_dir`, `redis_url` and `on_backend_error`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience import RateLimiter
from peak_resilience.config import configure
from peak_resilience.resilience_helpers import (
    create_module_circuit_breaker,
    create_module_rate_limiter,
    with_resilience,
)
from peak_resilience.testing import ManualClock

WriteConfig = Callable[..., Path]


def test_a_module_configured_shared_puts_its_limiter_and_breakers_in_shared_dir(
    fresh: ManualClock, write_config: WriteConfig, tmp_path: Path
) -> None:
    shm = tmp_path / "shm"
    configure(
        write_config(
            "[resilience.live]\n"
            'rate_limit_backend = "shared"\n'
            'circuit_breaker_backend = "shared"\n'
            f'shared_dir = "{shm}"\n'
            "rate_limit_requests = 2\n"
        )
    )
    limiter = create_module_rate_limiter("live", "orders")
    breaker = create_module_circuit_breaker("live", "orders")
    assert (limiter.backend, breaker.backend) == ("shared", "shared")
    assert limiter.default_bucket.shared_path is not None
    assert limiter.default_bucket.shared_path.parent == shm
    assert breaker.shared_path is not None and breaker.shared_path.parent == shm


def test_another_module_stays_in_memory(
    fresh: ManualClock, write_config: WriteConfig, tmp_path: Path
) -> None:
    configure(
        write_config(
            f'[resilience.live]\nrate_limit_backend = "shared"\nshared_dir = "{tmp_path}"\n'
        )
    )
    assert create_module_rate_limiter("backtest", "orders").backend == "memory"


def test_a_module_configured_redis_shares_its_budget_through_redis(
    fresh: ManualClock, write_config: WriteConfig, redis_url: str
) -> None:
    configure(
        write_config(
            "[resilience.live]\n"
            'rate_limit_backend = "redis"\n'
            'circuit_breaker_backend = "redis"\n'
            f'redis_url = "{redis_url}"\n'
            'on_backend_error = "fail_closed"\n'
            "rate_limit_requests = 2\n"
            "rate_limit_window = 3600\n"
            "circuit_breaker_threshold = 1\n"
        )
    )
    calls: list[int] = []

    @with_resilience("live", "orders", use_rate_limiter=True)
    def submit() -> int:
        calls.append(1)
        return len(calls)

    limiter = create_module_rate_limiter("live", "orders")
    assert limiter.backend == "redis"
    assert create_module_circuit_breaker("live", "orders").backend == "redis"
    assert [submit(), submit()] == [1, 2]
    assert limiter.get_stats()["allowed"] == 2


def test_a_reconfigured_rate_reaches_the_redis_budget(
    fresh: ManualClock, write_config: WriteConfig, redis_url: str
) -> None:
    head = f'[resilience.live]\nrate_limit_backend = "redis"\nredis_url = "{redis_url}"\n'
    configure(write_config(head + "rate_limit_requests = 1\nrate_limit_window = 3600\n"))
    limiter = create_module_rate_limiter("live", "orders")
    assert limiter.acquire() and not limiter.acquire()
    configure(write_config(head + "rate_limit_requests = 3\nrate_limit_window = 3600\n"))
    # Same limiter, same Redis budget, now holding 3: two more tokens.
    assert [limiter.acquire(), limiter.acquire(), limiter.acquire()] == [True, True, False]


def test_a_disabled_redis_limiter_admits_everything(
    fresh: ManualClock, write_config: WriteConfig, redis_url: str
) -> None:
    configure(
        write_config(
            f'[resilience.live]\nrate_limit_backend = "redis"\nredis_url = "{redis_url}"\n'
            "rate_limit_requests = 1\nrate_limit_window = 3600\nrate_limit_enabled = false\n"
        )
    )
    limiter = create_module_rate_limiter("live", "orders")
    assert all(limiter.acquire() for _ in range(5))


@pytest.mark.shared_backend
def test_a_module_limiter_and_a_constructed_limiter_of_one_name_share_one_budget(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    # Neither names a shared_dir: the config's default and the constructor's are one
    # directory (/dev/shm/peak-resilience-<uid>), so both draw on one budget of 5.
    module = f"live{os.getpid()}"
    configure(
        write_config(
            f'[resilience.{module}]\nrate_limit_backend = "shared"\n'
            "rate_limit_requests = 5\nrate_limit_window = 60.0\n"
        )
    )
    from_config = create_module_rate_limiter(module, "orders")
    constructed = RateLimiter(5, 60.0, name=from_config.name, backend="shared", clock=fresh)
    path = from_config.default_bucket.shared_path
    assert path is not None and path == constructed.default_bucket.shared_path
    try:
        admitted = [from_config.acquire() for _ in range(3)]
        admitted += [constructed.acquire() for _ in range(5)]
        assert admitted.count(True) == 5
    finally:
        path.unlink()
