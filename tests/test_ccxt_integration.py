"""peak_resilience.integrations.ccxt: a limiter (and a breaker) in front of real ccxt
exchanges, sync and async, talking to a fake Binance on loopback (issue 13)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

ccxt = pytest.importorskip("ccxt")
ccxt_async = pytest.importorskip("ccxt.async_support")

from fake_exchange import FakeExchange, fake_exchange  # noqa: E402

from peak_resilience import RateLimiter  # noqa: E402
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded  # noqa: E402
from peak_resilience.integrations.ccxt import install  # noqa: E402
from peak_resilience.resilience import CircuitBreaker  # noqa: E402

#: ccxt's binance spot costs are 0.2 a unit of Binance weight.
BINANCE_SPOT = 5


@pytest.fixture
def server() -> Iterator[FakeExchange]:
    with fake_exchange(used_before=5000) as state:
        yield state


def binance(server: FakeExchange, module: object = ccxt) -> object:
    exchange = module.binance({"timeout": 5000})  # type: ignore[attr-defined]
    exchange.urls["api"]["public"] = server.url
    return exchange


def tokens(limiter: RateLimiter) -> int:
    return round(limiter.get_stats()["tokens_available"])


def test_each_request_takes_ccxts_cost_as_weight_and_the_reply_sets_the_budget(
    server: FakeExchange,
) -> None:
    limiter = RateLimiter(limits=["6000/1m"], name="ccxt-sync")
    exchange = install(binance(server), limiter, weight_per_cost=BINANCE_SPOT)
    assert exchange.fetch_time() > 0  # type: ignore[attr-defined]
    assert server.requests == 1
    # The exchange's count, not our estimate (5999), refilled at 100 a second since.
    assert 6000 - 5001 <= tokens(limiter) < 6000 - 5001 + 100
    assert limiter.get_stats()["allowed"] == 1


def test_an_exchange_installed_on_an_endpoint_feeds_that_endpoints_budget(
    server: FakeExchange,
) -> None:
    limiter = RateLimiter(limits=["6000/1m"], name="ccxt-endpoint")
    limiter.add_endpoint("binance-spot", windows=["6000/1m"])
    exchange = install(
        binance(server), limiter, weight_per_cost=BINANCE_SPOT, endpoint="binance-spot"
    )
    exchange.fetch_time()  # type: ignore[attr-defined]
    spot = round(limiter.get_stats("binance-spot")["tokens_available"])
    assert 6000 - 5001 <= spot < 6000 - 5001 + 100  # the reply's count, on that budget
    assert tokens(limiter) == 6000  # the limiter's own budget untouched


def test_a_429_pauses_the_budget_and_later_requests_are_not_sent(server: FakeExchange) -> None:
    limiter = RateLimiter(limits=["6000/1m"], name="ccxt-429")
    exchange = install(binance(server), limiter, weight_per_cost=BINANCE_SPOT, timeout=0.2)
    server.refuse_with = (429, "30")
    with pytest.raises(ccxt.DDoSProtection):
        exchange.fetch_time()  # type: ignore[attr-defined]
    assert 29 < limiter.paused_for <= 30
    with pytest.raises(RateLimitExceeded) as refused:
        exchange.fetch_time()  # type: ignore[attr-defined]
    assert refused.value.limiter == "ccxt-429"
    assert server.requests == 1


@pytest.mark.shared_backend
def test_processes_sharing_one_api_key_share_one_budget(
    server: FakeExchange, tmp_path: Path
) -> None:
    def limiter() -> RateLimiter:
        return RateLimiter(
            limits=["6000/1m"], name="api-key-1", backend="shared", shared_dir=tmp_path
        )

    first = install(binance(server), limiter(), weight_per_cost=BINANCE_SPOT)
    other = limiter()  # another worker's limiter of the same key
    first.fetch_time()  # type: ignore[attr-defined]
    assert 6000 - 5001 <= tokens(other) < 6000 - 5001 + 100


def test_an_open_breaker_refuses_without_sending_or_taking_a_token(
    server: FakeExchange,
) -> None:
    limiter = RateLimiter(limits=["6000/1m"], name="ccxt-breaker")
    breaker = CircuitBreaker(
        failure_threshold=2,
        recovery_timeout=60,
        name="ccxt-binance",
        record_exceptions=ccxt.NetworkError,
    )
    exchange = install(binance(server), limiter, breaker=breaker, weight_per_cost=BINANCE_SPOT)
    server.refuse_with = (503, None)
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            exchange.fetch_time()  # type: ignore[attr-defined]
    with pytest.raises(CircuitBreakerError):
        exchange.fetch_time()  # type: ignore[attr-defined]
    assert server.requests == 2
    assert limiter.get_stats()["allowed"] == 2


def test_an_async_exchange_is_guarded_the_same_way(server: FakeExchange) -> None:
    limiter = RateLimiter(limits=["6000/1m"], name="ccxt-async")

    async def run() -> list[int]:
        exchange = install(binance(server, ccxt_async), limiter, weight_per_cost=BINANCE_SPOT)
        try:
            times = [await exchange.fetch_time() for _ in range(3)]  # type: ignore[attr-defined]
            server.refuse_with = (418, "120")
            with pytest.raises(ccxt.DDoSProtection):
                await exchange.fetch_time()  # type: ignore[attr-defined]
            return times
        finally:
            await exchange.close()  # type: ignore[attr-defined]

    assert all(t > 0 for t in asyncio.run(run()))
    assert server.requests == 4
    # The exchange's count (ccxt's async client keeps the server's case), refilled at
    # 100 a second since: without the replies the budget would be nearly full.
    assert 6000 - 5003 <= tokens(limiter) < 6000 - 5003 + 100
    assert limiter.paused_for == pytest.approx(120, abs=1)


def test_only_a_ccxt_exchange_and_a_peak_resilience_limiter_are_accepted() -> None:
    limiter = RateLimiter(10, 1)
    with pytest.raises(TypeError, match="not a ccxt exchange"):
        install(object(), limiter)
    with pytest.raises(TypeError, match="limiter must be a peak_resilience RateLimiter"):
        install(ccxt.binance(), object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight_per_cost must be a positive number"):
        install(ccxt.binance(), limiter, weight_per_cost=0)
