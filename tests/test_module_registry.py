"""The module registry: one breaker per operation, one limiter per module, reconfigured in
place by a later configure()."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from peak_resilience import config
from peak_resilience.config import ConfigError, configure
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.resilience import CircuitState
from peak_resilience.resilience_helpers import (
    create_module_circuit_breaker,
    create_module_rate_limiter,
    get_all_circuit_breakers,
    get_all_rate_limiters,
    with_resilience,
)
from peak_resilience.testing import ManualClock

WriteConfig = Callable[..., Path]


class ExchangeDown(Exception):
    pass


def failing() -> None:
    raise ExchangeDown()


def test_a_module_breaker_is_registered_as_module_dot_operation_and_is_always_the_same(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(
        write_config(
            "[resilience.portfolio]\ncircuit_breaker_threshold = 3\ncircuit_breaker_timeout = 30\n"
        )
    )

    breaker = create_module_circuit_breaker("portfolio", "calculation")

    assert breaker is create_module_circuit_breaker("portfolio", "calculation")
    assert breaker.name == "portfolio.calculation"
    assert (breaker.failure_threshold, breaker.recovery_timeout) == (3, 30.0)
    assert get_all_circuit_breakers() == {"portfolio.calculation": breaker}


def test_the_decorator_uses_the_registered_breaker_of_its_operation(fresh: ManualClock) -> None:
    guarded = with_resilience("data", "fetch")(failing)
    breaker = create_module_circuit_breaker("data", "fetch")

    with pytest.raises(ExchangeDown):
        guarded()

    assert breaker.failure_count == 1
    assert set(get_all_circuit_breakers()) == {"data.fetch"}


def test_every_operation_of_a_module_gets_the_modules_one_limiter(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience.live]\nrate_limit_requests = 30\n"))

    limiter = create_module_rate_limiter("live", "orders")

    assert create_module_rate_limiter("live", "ticker") is limiter
    assert limiter.name == "live"
    assert limiter.default_bucket.capacity == 30
    assert get_all_rate_limiters() == {"live": limiter}


def test_a_breaker_reset_through_get_all_circuit_breakers_closes_the_circuit(
    fresh: ManualClock,
) -> None:
    guarded = with_resilience("data", "fetch")(failing)
    create_module_circuit_breaker("data", "fetch").force_open()

    get_all_circuit_breakers()["data.fetch"].reset()

    with pytest.raises(ExchangeDown):
        guarded()


def test_a_decorator_applied_before_configure_follows_the_configuration_loaded_later(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    orders = with_resilience("live", "orders")(failing)  # import time: built-in defaults
    with pytest.raises(ExchangeDown):
        orders()

    configure(write_config("[resilience.live]\ncircuit_breaker_threshold = 2\n"))  # main()
    with pytest.raises(ExchangeDown):
        orders()  # the second consecutive failure: the streak survived the reload

    with pytest.raises(CircuitBreakerError):
        orders()


def test_a_reload_keeps_the_tokens_already_spent(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    quote = with_resilience("live", "quote", use_rate_limiter=True)(lambda: 1)
    quote()
    quote()  # 2 of the default 100

    configure(write_config("[resilience.live]\nrate_limit_requests = 3\n"))

    assert quote() == 1
    with pytest.raises(RateLimitExceeded):
        quote()


def test_a_reload_changes_the_recovery_timeout_of_an_open_circuit(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience.live]\ncircuit_breaker_threshold = 1\n", name="a.toml"))
    breaker = create_module_circuit_breaker("live", "orders")
    with pytest.raises(ExchangeDown):
        with_resilience("live", "orders")(failing)()

    configure(
        write_config(
            "[resilience.live]\ncircuit_breaker_threshold = 1\ncircuit_breaker_timeout = 5\n"
        )
    )

    assert breaker.recovery_timeout == 5.0
    assert breaker.state is CircuitState.OPEN  # the state survived the reload


def test_disabling_and_re_enabling_the_breaker_by_reload_is_followed(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience.live]\ncircuit_breaker_threshold = 1\n", name="on.toml"))
    orders = with_resilience("live", "orders")(failing)
    with pytest.raises(ExchangeDown):
        orders()
    with pytest.raises(CircuitBreakerError):
        orders()

    configure(
        write_config(
            "[resilience.live]\ncircuit_breaker_threshold = 1\ncircuit_breaker_enabled = false\n",
            name="off.toml",
        )
    )
    for _ in range(3):
        with pytest.raises(ExchangeDown):  # straight through, and the circuit stays closed
            orders()

    configure(write_config("[resilience.live]\ncircuit_breaker_threshold = 1\n", name="on.toml"))
    with pytest.raises(ExchangeDown):
        orders()
    with pytest.raises(CircuitBreakerError):
        orders()


def test_disabling_and_re_enabling_rate_limiting_by_reload_is_followed(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience.live]\nrate_limit_requests = 1\n", name="on.toml"))
    quote = with_resilience("live", "quote", use_rate_limiter=True)(lambda: 1)
    quote()
    with pytest.raises(RateLimitExceeded):
        quote()

    configure(
        write_config(
            "[resilience.live]\nrate_limit_requests = 1\nrate_limit_enabled = false\n",
            name="off.toml",
        )
    )
    assert [quote() for _ in range(5)] == [1] * 5

    configure(write_config("[resilience.live]\nrate_limit_requests = 1\n", name="on.toml"))
    with pytest.raises(RateLimitExceeded):
        quote()


def test_a_reload_making_a_module_fail_safe_turns_failures_into_the_fallback(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    limit = with_resilience("risk", "limit", fallback=0.0)(failing)
    with pytest.raises(ExchangeDown):
        limit()

    configure(write_config("[resilience.risk]\nfail_safe_defaults = true\n"))

    assert limit() == 0.0


def test_a_reload_making_a_module_fail_safe_is_refused_when_a_function_has_no_fallback(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    before = config.active()
    with_resilience("risk", "limit")(failing)
    path = write_config("[resilience.risk]\nfail_safe_defaults = true\n")

    with pytest.raises(ConfigError, match=r"\[resilience.risk\] fail_safe_defaults: .*failing"):
        configure(path)

    assert config.active() is before


def test_a_bad_reload_leaves_breakers_and_limiters_as_they_were(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    configure(write_config("[resilience.live]\ncircuit_breaker_threshold = 2\n", name="a.toml"))
    breaker = create_module_circuit_breaker("live", "orders")

    with pytest.raises(ConfigError):
        configure(
            write_config(
                "[resilience.live]\ncircuit_breaker_threshold = 1\nrate_limit_window = 0\n"
            )
        )

    assert breaker.failure_threshold == 2


def test_without_configure_the_first_breaker_reads_the_working_directorys_config_toml(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    write_config("[resilience.live]\ncircuit_breaker_threshold = 2\n", name="config.toml")

    assert create_module_circuit_breaker("live", "orders").failure_threshold == 2


def test_without_configure_the_environment_applies_too(
    fresh: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEAK_TRADE_LIVE__RATE_LIMIT_REQUESTS", "7")

    assert create_module_rate_limiter("live", "orders").default_bucket.capacity == 7


def test_state_transitions_are_logged_as_warning_when_opening_and_info_otherwise(
    fresh: ManualClock, write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    configure(
        write_config(
            "[resilience.live]\ncircuit_breaker_threshold = 1\ncircuit_breaker_timeout = 10\n"
        )
    )
    outcomes = iter([ExchangeDown(), None])

    @with_resilience("live", "orders")
    def orders() -> None:
        error = next(outcomes)
        if error is not None:
            raise error

    caplog.set_level(logging.DEBUG, logger="peak_resilience")
    with pytest.raises(ExchangeDown):
        orders()
    fresh.advance(10)
    orders()

    transitions = [
        (r.name, r.levelname, r.getMessage()) for r in caplog.records if "->" in r.getMessage()
    ]
    assert transitions == [
        ("peak_resilience.resilience", "WARNING", "circuit breaker 'live.orders': CLOSED -> OPEN"),
        ("peak_resilience.resilience", "INFO", "circuit breaker 'live.orders': OPEN -> HALF_OPEN"),
        (
            "peak_resilience.resilience",
            "INFO",
            "circuit breaker 'live.orders': HALF_OPEN -> CLOSED",
        ),
    ]


def test_each_refused_call_is_logged_at_debug_under_the_guides_loggers(
    fresh: ManualClock, write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    configure(
        write_config("[resilience.live]\ncircuit_breaker_threshold = 1\nrate_limit_requests = 1\n")
    )
    orders = with_resilience("live", "orders")(failing)
    quote = with_resilience("live", "quote", use_rate_limiter=True, fallback=None)(lambda: 1)
    with pytest.raises(ExchangeDown):
        orders()
    caplog.set_level(logging.DEBUG, logger="peak_resilience")

    for _ in range(2):
        with pytest.raises(CircuitBreakerError):
            orders()
    quote()
    quote()  # refused, answered by the fallback: still logged

    # A refusal's line starts "<operation> refused"; other lines may say "refused" too (a
    # dropped Redis breaker of an earlier test, collected now: "Connection refused").
    refusals = [
        (r.name, r.levelname) for r in caplog.records if re.match(r"\S+ refused\b", r.getMessage())
    ]
    assert refusals == [
        ("peak_resilience.resilience", "DEBUG"),
        ("peak_resilience.resilience", "DEBUG"),
        ("peak_resilience.rate_limiter", "DEBUG"),
    ]
    assert "live.quote refused by rate limiter 'live': retry in 60.000s" in caplog.text


def test_async_refusals_are_logged_once_per_refused_call(
    fresh: ManualClock, write_config: WriteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    configure(write_config("[resilience.live]\nrate_limit_requests = 1\n"))

    @with_resilience("live", "stream", use_rate_limiter=True, max_wait=60)
    async def stream() -> int:
        return 1

    @with_resilience("live", "snapshot", use_rate_limiter=True)
    async def snapshot() -> int:
        return 2

    caplog.set_level(logging.DEBUG, logger="peak_resilience")

    async def scenario() -> None:
        await stream()
        await stream()  # waits 60 s for its token: not a refusal
        with pytest.raises(RateLimitExceeded):
            await snapshot()

    asyncio.run(scenario())

    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1


def test_breakers_made_while_configure_runs_in_another_thread_end_with_its_settings(
    fresh: ManualClock, write_config: WriteConfig
) -> None:
    paths = [
        write_config(f"[resilience.live]\ncircuit_breaker_threshold = {n}\n", name=f"{n}.toml")
        for n in (2, 3)
    ]
    start = threading.Barrier(3)

    def reconfigure() -> None:
        start.wait()
        for round_ in range(40):
            configure(paths[round_ % 2])

    def make_breakers(prefix: str) -> None:
        start.wait()
        for i in range(200):
            with_resilience("live", f"{prefix}{i}")(failing)

    threads = [
        threading.Thread(target=reconfigure),
        threading.Thread(target=make_breakers, args=("a",)),
        threading.Thread(target=make_breakers, args=("b",)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    thresholds = {b.failure_threshold for b in get_all_circuit_breakers().values()}
    assert len(get_all_circuit_breakers()) == 400
    assert thresholds == {3}  # the last configure() reached every breaker
