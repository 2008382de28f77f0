"""Retries: opt-in per exception class, back-off with full jitter, retry_after honoured,
a budget that keeps an outage from multiplying the load, every attempt guarded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peak_resilience import _instances
from peak_resilience._guard import guard
from peak_resilience.config import ConfigError, configure
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import Bulkhead, CircuitBreaker, Retry
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import ManualClock


class Flaky:
    """Fails ``failures`` times with ``error``, then returns "filled"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "filled"


def test_nothing_is_retried_unless_its_class_is_declared(fresh: ManualClock) -> None:
    flaky = Flaky(1, ConnectionError("reset"))
    submit = with_resilience("exchange", "submit_order", retry=Retry(3))(flaky)
    with pytest.raises(ConnectionError):
        submit()
    assert flaky.calls == 1


def test_a_declared_failure_is_retried_until_it_succeeds(fresh: ManualClock) -> None:
    flaky = Flaky(2, ConnectionError("reset"))
    fetch = with_resilience("exchange", "fetch", retry=Retry(3, on=ConnectionError))(flaky)
    assert fetch() == "filled"
    assert flaky.calls == 3
    assert _instances.retries["exchange.fetch"].retries == 2


def test_attempts_count_the_first_call(fresh: ManualClock) -> None:
    flaky = Flaky(10, TimeoutError("slow"))
    fetch = with_resilience("exchange", "fetch", retry=Retry(4, on=(TimeoutError,)))(flaky)
    with pytest.raises(TimeoutError):
        fetch()
    assert flaky.calls == 4


def test_the_back_off_is_jittered_below_the_growing_ceiling(fresh: ManualClock) -> None:
    flaky = Flaky(5, ConnectionError("reset"))
    retry = Retry(6, on=ConnectionError, backoff=1.0, multiplier=2.0, max_backoff=5.0)
    start = fresh.now()
    fetch = with_resilience("exchange", "fetch", retry=retry, use_circuit_breaker=False)(flaky)
    assert fetch() == "filled"
    waited = fresh.now() - start
    # Five retries, each waiting at most min(5, 2**n): 1 + 2 + 4 + 5 + 5.
    assert 0 <= waited <= 17.0


def test_a_retry_waits_at_least_the_retry_after_the_exception_carries(
    fresh: ManualClock,
) -> None:
    limiter = RateLimiter(1, 10.0, clock=fresh)
    retry = Retry(2, on=RateLimitExceeded, backoff=0.0)
    calls: list[float] = []

    def fetch() -> str:
        calls.append(fresh.now())
        return "ticker"

    guarded = guard(fetch, limiter=limiter, retry=retry, sleep=fresh.sleep)
    assert guarded() == "ticker"
    assert guarded() == "ticker"
    assert calls[1] - calls[0] == pytest.approx(10.0)


def test_a_hook_extracts_the_wait_from_an_exchange_error(fresh: ManualClock) -> None:
    class ExchangeBusy(Exception):
        def __init__(self, headers: dict[str, str]) -> None:
            super().__init__("busy")
            self.headers = headers

    flaky = Flaky(1, ExchangeBusy({"Retry-After": "7"}))
    retry = Retry(
        2,
        on=ExchangeBusy,
        backoff=0.0,
        retry_after=lambda exc: float(exc.headers["Retry-After"]),
    )
    start = fresh.now()
    assert with_resilience("exchange", "fetch", retry=retry)(flaky)() == "filled"
    assert fresh.now() - start == pytest.approx(7.0)


def test_with_a_budget_of_20_percent_an_outage_of_10000_calls_makes_about_2000_retries(
    fresh: ManualClock,
) -> None:
    outage = Flaky(10**9, ConnectionError("exchange down"))
    retry = Retry(5, on=ConnectionError, backoff=0.0, budget=0.2, min_retries_per_second=10)
    fetch = with_resilience("exchange", "fetch", retry=retry, use_circuit_breaker=False)(outage)
    for _ in range(10_000):
        with pytest.raises(ConnectionError):
            fetch()
    retries = outage.calls - 10_000
    # 20 % of the calls, plus the floor's one-second burst (the clock does not move).
    assert 1_990 <= retries <= 2_010
    assert _instances.retries["exchange.fetch"].retries == retries


def test_every_attempt_passes_the_breaker(fresh: ManualClock) -> None:
    breaker = CircuitBreaker(2, 60.0, clock=fresh)
    outage = Flaky(10**9, ConnectionError("down"))
    guarded = guard(outage, breaker=breaker, retry=Retry(5, on=ConnectionError), sleep=fresh.sleep)
    with pytest.raises(CircuitBreakerError):
        guarded()
    assert outage.calls == 2


def test_every_attempt_takes_its_tokens(fresh: ManualClock) -> None:
    limiter = RateLimiter(3, 3600.0, clock=fresh)
    outage = Flaky(10**9, ConnectionError("down"))
    guarded = guard(outage, limiter=limiter, retry=Retry(3, on=ConnectionError), sleep=fresh.sleep)
    with pytest.raises(ConnectionError):
        guarded()
    assert outage.calls == 3
    assert not limiter.acquire()


def test_every_attempt_takes_a_bulkhead_slot_and_gives_it_back(fresh: ManualClock) -> None:
    bulkhead = Bulkhead(1)
    seen: list[int] = []

    def failing() -> None:
        seen.append(bulkhead.in_flight)
        raise ConnectionError("down")

    guarded = guard(
        failing, bulkhead=bulkhead, retry=Retry(3, on=ConnectionError), sleep=fresh.sleep
    )
    with pytest.raises(ConnectionError):
        guarded()
    assert seen == [1, 1, 1]
    assert bulkhead.in_flight == 0


def test_the_fallback_comes_after_the_retries(fresh: ManualClock) -> None:
    outage = Flaky(10**9, ConnectionError("down"))
    fetch = with_resilience(
        "exchange",
        "fetch",
        retry=Retry(3, on=ConnectionError),
        fallback="cached",
        fallback_on_failure=True,
    )(outage)
    assert fetch() == "cached"
    assert outage.calls == 3


def test_async_calls_are_retried_through_the_guard(fresh: ManualClock) -> None:
    calls = 0

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("reset")
        return "filled"

    guarded = with_resilience("exchange", "fetch", retry=Retry(3, on=ConnectionError))(fetch)
    assert asyncio.run(guarded()) == "filled"
    assert calls == 3


def test_a_bad_retry_setting_is_an_error_naming_it() -> None:
    with pytest.raises(TypeError, match="on must be an exception class"):
        Retry(3, on="ConnectionError")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget must be a fraction"):
        Retry(3, budget=1.5)
    with pytest.raises(ValueError, match="attempts must be a positive integer"):
        Retry(0)


def test_the_retry_keys_of_a_module_retry_its_operations(
    fresh: ManualClock, write_config: Any
) -> None:
    configure(
        write_config(
            """
            [resilience.exchange]
            retry_attempts = 3
            retry_on = ["ConnectionError", "socket.timeout"]
            retry_backoff = 0
            """
        )
    )
    flaky = Flaky(2, ConnectionError("reset"))
    assert with_resilience("exchange", "fetch")(flaky)() == "filled"
    assert flaky.calls == 3


def test_without_retry_on_the_retry_keys_retry_nothing(
    fresh: ManualClock, write_config: Any
) -> None:
    configure(write_config("[resilience.exchange]\nretry_attempts = 3\n"))
    flaky = Flaky(1, ConnectionError("reset"))
    with pytest.raises(ConnectionError):
        with_resilience("exchange", "fetch")(flaky)()
    assert flaky.calls == 1


def test_a_retry_on_that_names_no_exception_class_is_a_config_error(
    fresh: ManualClock, write_config: Any
) -> None:
    path = write_config('[resilience.exchange]\nretry_on = ["ConectionError"]\n')
    with pytest.raises(ConfigError, match=r"retry_on.*'ConectionError' is not a builtin"):
        configure(path)
    path = write_config('[resilience]\nretry_on = ["json.dumps"]\n')
    with pytest.raises(ConfigError, match=r"retry_on.*'json.dumps' is not an exception class"):
        configure(path)


#: A module retrying ConnectionError at once; its attempts are added per test.
RETRYING_CONNECTION_ERRORS = (
    '[resilience.exchange]\nretry_on = ["ConnectionError"]\nretry_backoff = 0\n'
)


def test_a_reload_changes_the_retry_keys_of_a_decorated_operation_in_place(
    fresh: ManualClock, write_config: Any
) -> None:
    configure(write_config(RETRYING_CONNECTION_ERRORS + "retry_attempts = 2\n"))
    flaky = Flaky(2, ConnectionError("reset"))
    fetch = with_resilience("exchange", "fetch")(flaky)
    with pytest.raises(ConnectionError):
        fetch()

    configure(
        write_config(
            RETRYING_CONNECTION_ERRORS + "retry_attempts = 4\nretry_budget = 0.5\n", name="b.toml"
        )
    )
    flaky.calls = 0
    assert fetch() == "filled"
    assert flaky.calls == 3
    retry = fetch.retry  # type: ignore[attr-defined]
    assert (retry.attempts, retry.budget) == (4, 0.5)


def test_a_reload_with_one_attempt_turns_the_retries_off(
    fresh: ManualClock, write_config: Any
) -> None:
    configure(write_config(RETRYING_CONNECTION_ERRORS + "retry_attempts = 3\n"))
    flaky = Flaky(1, ConnectionError("reset"))

    @with_resilience("exchange", "fetch")
    async def fetch() -> str:
        return flaky()

    configure(write_config(RETRYING_CONNECTION_ERRORS + "retry_attempts = 1\n", name="off.toml"))
    with pytest.raises(ConnectionError):
        asyncio.run(fetch())
    assert flaky.calls == 1


def test_a_reload_that_adds_retries_to_an_operation_decorated_without_is_refused(
    fresh: ManualClock, write_config: Any
) -> None:
    with_resilience("exchange", "fetch")(Flaky(0, ConnectionError()))
    path = write_config(
        '[resilience.exchange]\nretry_attempts = 3\nretry_on = ["ConnectionError"]\n'
    )
    with pytest.raises(ConfigError, match="cannot add retries") as refused:
        configure(path)
    assert refused.value.key == "retry_attempts"


def test_a_reload_leaves_a_retry_given_to_the_decorator_alone(
    fresh: ManualClock, write_config: Any
) -> None:
    fetch = with_resilience("exchange", "fetch", retry=Retry(5, on=ConnectionError))(
        Flaky(0, ConnectionError())
    )
    configure(write_config("[resilience.exchange]\nretry_attempts = 2\n"))
    assert fetch.retry.attempts == 5  # type: ignore[attr-defined]
