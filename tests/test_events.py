"""Events: a breaker's or limiter's listeners, and the process-wide ones, are told of
transitions, refused calls and backend outages; a raising listener never breaks a call."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer

from peak_resilience import _native
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.events import (
    BackendOutage,
    BreakerTransition,
    CallRefused,
    Event,
    add_listener,
    remove_listener,
)
from peak_resilience.rate_limiter import RateLimiter
from peak_resilience.resilience import CircuitBreaker, CircuitState
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import ManualClock

CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


@pytest.fixture
def everything() -> Iterator[list[Event]]:
    """What a process-wide listener hears during the test."""
    heard: list[Event] = []
    add_listener(heard.append)
    try:
        yield heard
    finally:
        remove_listener(heard.append)


def transitions(events: list[Event]) -> list[tuple[CircuitState, CircuitState]]:
    return [(e.from_state, e.to_state) for e in events if isinstance(e, BreakerTransition)]


def test_a_listener_sees_closed_open_half_open_closed_in_order(clock: ManualClock) -> None:
    breaker = CircuitBreaker(2, 10.0, name="exchange", clock=clock)
    heard: list[Event] = []
    breaker.add_listener(heard.append)

    @breaker.call
    def fetch(fail: bool) -> str:
        if fail:
            raise ConnectionError("down")
        return "ticker"

    for _ in range(2):
        with pytest.raises(ConnectionError):
            fetch(True)
    clock.advance(10.0)
    assert fetch(False) == "ticker"

    assert transitions(heard) == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert {e.breaker for e in heard if isinstance(e, BreakerTransition)} == {"exchange"}


def test_a_refused_call_is_told_to_the_breakers_and_the_process_listeners(
    clock: ManualClock, everything: list[Event]
) -> None:
    breaker = CircuitBreaker(1, 30.0, name="orders", clock=clock)
    own: list[Event] = []
    breaker.add_listener(own.append)
    breaker.record_failure()
    guarded = breaker.call(lambda: "sent")

    with pytest.raises(CircuitBreakerError):
        guarded()

    (refused,) = [e for e in own if isinstance(e, CallRefused)]
    assert (refused.reason, refused.name, refused.retry_after) == ("circuit_open", "orders", 30.0)
    assert refused in everything
    assert (CLOSED, OPEN) in transitions(everything)


def test_a_rate_limited_call_is_told_to_the_limiters_listeners(
    fresh: ManualClock, write_config: object
) -> None:
    from peak_resilience.resilience_helpers import create_module_rate_limiter

    @with_resilience("market_data", "fetch_ticker", use_rate_limiter=True)
    def fetch_ticker() -> float:
        return 42_000.5

    limiter = create_module_rate_limiter("market_data")
    heard: list[Event] = []
    limiter.add_listener(heard.append)
    for _ in range(100):  # the default budget: 100 per 60 s
        fetch_ticker()
    with pytest.raises(RateLimitExceeded):
        fetch_ticker()

    assert heard == [CallRefused("rate_limited", "market_data", 0.6, None, heard[0].timestamp)]


def test_a_limiters_listener_is_not_told_of_another_limiters_refusals(
    fresh: ManualClock, write_config: object
) -> None:
    from peak_resilience.resilience_helpers import create_module_rate_limiter

    @with_resilience("account", "fetch_balance", use_rate_limiter=True)
    def fetch_balance() -> float:
        return 1_000.0

    market_data, account = (create_module_rate_limiter(m) for m in ("market_data", "account"))
    heard_by_market_data: list[Event] = []
    market_data.add_listener(heard_by_market_data.append)
    for _ in range(100):  # the default budget: 100 per 60 s
        fetch_balance()
    with pytest.raises(RateLimitExceeded):
        fetch_balance()
    heard_by_account: list[Event] = []
    account.add_listener(heard_by_account.append)
    with pytest.raises(RateLimitExceeded):
        fetch_balance()

    assert heard_by_market_data == []
    assert [(e.reason, e.name) for e in heard_by_account] == [("rate_limited", "account")]


def test_a_raising_listener_never_breaks_the_call_and_the_next_listener_still_hears(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = CircuitBreaker(1, 5.0, name="flaky-listener", clock=clock)

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    heard: list[Event] = []
    breaker.add_listener(broken)
    breaker.add_listener(heard.append)

    @breaker.call
    def submit() -> str:
        raise TimeoutError("exchange timeout")

    with caplog.at_level(logging.ERROR, logger="peak_resilience.events"):
        with pytest.raises(TimeoutError):  # the call's own exception, unchanged
            submit()
        with pytest.raises(CircuitBreakerError):
            submit()

    assert transitions(heard) == [(CLOSED, OPEN)]
    assert [type(e) for e in heard] == [BreakerTransition, CallRefused]
    logged = [r for r in caplog.records if r.name == "peak_resilience.events"]
    assert [r.levelno for r in logged] == [logging.ERROR, logging.ERROR]
    assert all("RuntimeError: listener bug" in r.getMessage() for r in logged)


def test_a_ctrl_c_that_lands_in_a_listener_still_interrupts_the_program(
    clock: ManualClock,
) -> None:
    # A SIGINT is handled where the main thread happens to be: in a transition listener,
    # which the breaker calls from its native code, it must not be swallowed with the
    # listener's other errors (the demo once kept running after Ctrl-C this way).
    import signal

    # Python's own Ctrl-C handler, whatever this run inherited (a background job of a
    # non-interactive shell starts with SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _a_ctrl_c_in_a_listener(clock)
    finally:
        signal.signal(signal.SIGINT, previous)


def _a_ctrl_c_in_a_listener(clock: ManualClock) -> None:
    breaker = CircuitBreaker(1, 5.0, name="ctrl-c-listener", clock=clock)

    def interrupted(event: Event) -> None:
        raise KeyboardInterrupt

    breaker.add_listener(interrupted)

    @breaker.call
    def submit() -> str:
        raise TimeoutError("exchange timeout")

    reached_after: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        try:
            submit()  # opens the circuit: the listener raises KeyboardInterrupt
        except TimeoutError:
            reached_after.append("the call's own error")
        for _ in range(1_000):  # the interrupt is delivered at the next bytecodes
            reached_after.append("more work")
    # Delivered within a few bytecodes (3.10 raises it while the call's own error is
    # still unwinding, later versions just after the except clause).
    assert len(reached_after) < 10
    assert breaker.state is OPEN


def test_refusals_reach_python_only_while_someone_listens(clock: ManualClock) -> None:
    gc.collect()  # the breakers (and listeners) of earlier tests are gone
    logging.getLogger("peak_resilience").setLevel(logging.INFO)  # DEBUG off
    try:
        assert not _native.rejection_log_enabled()
        breaker = CircuitBreaker(1, 5.0, name="quiet", clock=clock)
        breaker.add_listener(print)
        assert _native.rejection_log_enabled()
        breaker.remove_listener(print)
        assert not _native.rejection_log_enabled()
    finally:
        logging.getLogger("peak_resilience").setLevel(logging.NOTSET)


def test_removing_a_listener_that_never_listened_names_it() -> None:
    with pytest.raises(ValueError, match="is not listening"):
        RateLimiter(5, 1.0).remove_listener(print)
    with pytest.raises(TypeError, match="a listener must be callable"):
        add_listener("print")  # type: ignore[arg-type]


def test_a_redis_outage_and_its_end_are_told_to_the_breakers_listeners(
    tmp_path: Path, everything: list[Event]
) -> None:
    server = RedisServer(tmp_path)  # not started yet: Redis is down
    breaker = CircuitBreaker(3, 30.0, name="venue", backend="redis", redis_url=server.url)
    breaker.store.link.retry_interval = 0.0  # try Redis on every call
    heard: list[Event] = []
    breaker.add_listener(heard.append)
    guarded = breaker.call(lambda: "ok")

    assert guarded() == "ok"  # on_backend_error="local": the call still runs
    server.start()
    try:
        assert guarded() == "ok"
    finally:
        server.stop()

    outages = [e for e in heard if isinstance(e, BackendOutage)]
    assert [(e.backend, e.kind, e.name, e.available) for e in outages] == [
        ("redis", "breaker", "venue", False),
        ("redis", "breaker", "venue", True),
    ]
    assert outages[0].error is not None and "Connection" in outages[0].error
    assert outages == [e for e in everything if isinstance(e, BackendOutage)]


def test_a_refused_async_call_is_told_too(clock: ManualClock) -> None:
    import asyncio

    breaker = CircuitBreaker(1, 5.0, name="async-venue", clock=clock)
    heard: list[Event] = []
    breaker.add_listener(heard.append)
    breaker.record_failure()

    @breaker.call
    async def fetch() -> str:
        return "book"

    with pytest.raises(CircuitBreakerError):
        asyncio.run(fetch())
    assert [type(e) for e in heard] == [BreakerTransition, CallRefused]
    assert isinstance(heard[1], CallRefused) and heard[1].name == "async-venue"
