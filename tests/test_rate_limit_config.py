"""Configuration of issue 8's rate limiting: ``rate_limits`` (several windows) and
``rate_limit_reserve`` (the priority lane), and with_resilience(priority="high")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience.config import ConfigError, configure
from peak_resilience.errors import RateLimitExceeded
from peak_resilience.resilience_helpers import create_module_rate_limiter, with_resilience
from peak_resilience.testing import ManualClock

WriteConfig = Callable[..., Path]

BINANCE = """
    [resilience.binance]
    rate_limits = ["1200/60s", "5/10s", "160000/1d"]
    rate_limit_reserve = 2
"""


def test_rate_limits_give_a_module_budget_several_windows(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(BINANCE))
    limiter = create_module_rate_limiter("binance", "orders")
    assert limiter.default_bucket.window_labels == ["60s", "10s", "86400s"]
    assert sum(limiter.acquire() for _ in range(10)) == 3  # 5 per 10 s, 2 kept back
    assert sum(limiter.acquire(priority="high") for _ in range(10)) == 2


def test_rate_limits_come_from_the_environment_as_a_comma_separated_list(
    fresh: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEAK_TRADE_BINANCE__RATE_LIMITS", "1200/60s, 4/10s")
    configure()
    limiter = create_module_rate_limiter("binance", "orders")
    assert [w[:2] for w in limiter.default_bucket.windows] == [(1200, 60.0), (4, 10.0)]


def test_a_malformed_window_is_a_config_error_naming_the_key(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    path = write_config('[resilience]\nrate_limits = ["1200/60"]\n')
    with pytest.raises(ConfigError, match=r"rate_limits.*'1200/60' is not"):
        configure(path)


def test_a_reserve_as_large_as_a_window_is_a_config_error(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    path = write_config(
        '[resilience]\nrate_limits = ["100/60s", "5/10s"]\nrate_limit_reserve = 5\n'
    )
    with pytest.raises(ConfigError, match=r"rate_limits/rate_limit_reserve: priority_reserve=5"):
        configure(path)


def test_a_reload_changes_the_windows_in_place_keeping_spent_tokens(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(BINANCE))
    limiter = create_module_rate_limiter("binance", "orders")
    assert limiter.acquire(cost=3)
    configure(write_config(BINANCE.replace('"5/10s"', '"10/10s"')))
    assert [round(t) for t in limiter.default_bucket.window_tokens()] == [1197, 7, 159997]


def test_a_high_priority_decorated_call_uses_the_reserve(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(BINANCE))

    @with_resilience("binance", "create_order", use_rate_limiter=True, use_circuit_breaker=False)
    def create_order() -> str:
        return "created"

    @with_resilience(
        "binance",
        "cancel_order",
        use_rate_limiter=True,
        use_circuit_breaker=False,
        priority="high",
    )
    def cancel_order() -> str:
        return "cancelled"

    assert [create_order() for _ in range(3)] == ["created"] * 3
    with pytest.raises(RateLimitExceeded):
        create_order()
    assert [cancel_order() for _ in range(2)] == ["cancelled"] * 2
    with pytest.raises(RateLimitExceeded):
        cancel_order()


def test_a_high_priority_async_call_uses_the_reserve(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(BINANCE))

    @with_resilience(
        "binance",
        "cancel_all",
        use_rate_limiter=True,
        use_circuit_breaker=False,
        priority="high",
    )
    async def cancel_all() -> str:
        return "cancelled"

    limiter = create_module_rate_limiter("binance", "x")
    assert limiter.acquire(cost=3)
    assert asyncio.run(cancel_all()) == "cancelled"


def test_a_paused_module_limiter_refuses_decorated_calls_with_the_pause_as_retry_after(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config(BINANCE))

    @with_resilience(
        "binance", "cancel", use_rate_limiter=True, use_circuit_breaker=False, priority="high"
    )
    def cancel() -> str:
        return "cancelled"

    create_module_rate_limiter("binance", "cancel").pause(30)
    with pytest.raises(RateLimitExceeded) as raised:
        cancel()
    assert raised.value.retry_after == pytest.approx(30)


def test_an_unknown_priority_is_refused_at_decoration(fresh: ManualClock) -> None:
    with pytest.raises(ValueError, match="priority must be"):
        with_resilience("binance", "x", use_rate_limiter=True, priority="urgent")(lambda: 1)
