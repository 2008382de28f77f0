"""observe(status, headers): what an exchange's reply says about the budget becomes the
limiter's state (issue 13): used counts to their windows, refusals to a pause."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable

import pytest
from multidict import CIMultiDict
from requests.structures import CaseInsensitiveDict

from peak_resilience import RateLimiter
from peak_resilience.testing import ManualClock

LONG = 10_000_000


def binance_limiter(
    make: Callable[..., RateLimiter] = RateLimiter, **kwargs: object
) -> RateLimiter:
    """Binance spot's budgets: weight 6000 a minute; orders 50 in 10 s and 160,000 a day."""
    limiter = make(limits=["6000/1m"], **kwargs)
    limiter.add_endpoint("orders", 50, 10, windows=[(160_000, 86_400)])
    return limiter


def tokens(limiter: RateLimiter, endpoint: str | None = None) -> list[int]:
    return [round(t) for t in limiter.bucket_for(endpoint).window_tokens()]


BINANCE_REPLY = {
    "content-type": "application/json;charset=UTF-8",
    "x-mbx-uuid": "7f5b0f5e-5b0a-4c0e-9d0e-0e0e0e0e0e0e",
    "x-mbx-used-weight": "5990",
    "x-mbx-used-weight-1m": "5990",
    "x-mbx-order-count-10s": "48",
    "x-mbx-order-count-1d": "1000",
}


def test_binance_used_weight_and_order_counts_set_their_windows(
    make_limiter: Callable[..., RateLimiter], clock: ManualClock
) -> None:
    limiter = binance_limiter(make_limiter, clock=clock)
    limiter.observe(200, BINANCE_REPLY)
    assert tokens(limiter) == [10]
    assert tokens(limiter, "orders") == [2, 159_000]
    assert sum(limiter.acquire("orders") for _ in range(5)) == 2


def test_header_names_are_matched_whatever_their_case(clock: ManualClock) -> None:
    spellings = [
        {k.upper(): v for k, v in BINANCE_REPLY.items()},
        {k.title(): v for k, v in BINANCE_REPLY.items()},
        CaseInsensitiveDict({k.upper(): v for k, v in BINANCE_REPLY.items()}),
        CIMultiDict({k.title(): v for k, v in BINANCE_REPLY.items()}),
    ]
    for headers in spellings:
        limiter = binance_limiter(clock=clock)
        limiter.observe(200, headers)
        assert tokens(limiter) == [10], type(headers)
        assert tokens(limiter, "orders") == [2, 159_000], type(headers)


def test_a_used_weight_sets_a_fixed_window_of_that_length_too(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["6000/1m fixed", "50/10s sliding"], clock=clock)
    limiter.observe(200, {"x-mbx-used-weight-1m": "5990", "x-mbx-order-count-10s": "49"})
    assert tokens(limiter) == [10, 1]


def test_a_dict_spelled_otherwise_is_read_on_every_reply(clock: ManualClock) -> None:
    limiter = binance_limiter(clock=clock)
    for used in (100, 5990, 2000):
        limiter.observe(200, {"X-MBX-USED-WEIGHT-1M": str(used), "Content-Type": "json"})
        assert tokens(limiter) == [6000 - used]
    limiter.observe(200, {"x-mbx-used-weight-1m": "10"})  # another spelling again
    assert tokens(limiter) == [5990]


def test_without_an_orders_endpoint_order_counts_go_to_the_observed_budget(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(limits=["6000/1m", "50/10s"], clock=clock)
    limiter.observe(200, BINANCE_REPLY)
    assert tokens(limiter) == [10, 2]


def test_a_429_pauses_for_its_retry_after_in_seconds(
    make_limiter: Callable[..., RateLimiter],
) -> None:
    limiter = make_limiter(10, LONG)
    limiter.observe(429, {"Retry-After": "30"})
    assert not limiter.acquire()
    assert limiter.paused_for == pytest.approx(30, abs=1)


def test_a_retry_after_may_be_an_http_date() -> None:
    limiter = RateLimiter(10, LONG)
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    limiter.observe(429, {"retry-after": in_a_minute})
    assert limiter.paused_for == pytest.approx(60, abs=2)


def test_a_429_without_retry_after_pauses_as_configured(clock: ManualClock) -> None:
    limiter = RateLimiter(10, LONG, clock=clock)
    limiter.set_reply_headers("binance", retry_after=5)
    limiter.observe(429, {})
    assert limiter.paused_for == pytest.approx(5)
    clock.advance(5)
    assert limiter.acquire()


def test_an_error_reply_with_retry_after_pauses_too(clock: ManualClock) -> None:
    limiter = RateLimiter(10, LONG, clock=clock)
    limiter.observe(503, {"Retry-After": "7"})
    assert limiter.paused_for == pytest.approx(7)
    limiter.resume()
    limiter.observe(500, {})
    assert limiter.paused_for == 0.0


def test_repeated_418s_pause_twice_as_long_each_time_until_a_reply_gets_through(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(10, LONG, clock=clock)
    pauses = []
    for _ in range(3):
        limiter.observe(418, {"Retry-After": "100"})
        pauses.append(round(limiter.paused_for))
        clock.advance(limiter.paused_for)
    limiter.observe(200, {})
    limiter.observe(418, {})
    pauses.append(round(limiter.paused_for))
    assert pauses == [120, 240, 480, 120]


def test_a_418_never_pauses_for_less_than_its_retry_after(clock: ManualClock) -> None:
    limiter = RateLimiter(10, LONG, clock=clock)
    limiter.observe(418, {"Retry-After": "7200"})
    assert limiter.paused_for == pytest.approx(7200)


def test_an_unreadable_header_is_ignored_and_logged_once_a_minute(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter(limits=["6000/1m"], clock=clock, name="observed")
    caplog.set_level(logging.WARNING, logger="peak_resilience.rate_limiter")
    for _ in range(100):
        limiter.observe(200, {"x-mbx-used-weight-1m": "lots"})
        limiter.observe(429, {"Retry-After": "soon"})
    assert tokens(limiter) == [6000]
    messages = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(messages) == 2
    assert "x-mbx-used-weight-1m" in messages[0]
    assert "'lots'" in messages[0]
    assert "Retry-After 'soon'" in messages[1]


def test_a_reply_that_is_not_headers_at_all_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter(10, LONG, name="odd-reply")
    caplog.set_level(logging.WARNING, logger="peak_resilience.rate_limiter")
    limiter.observe(200, None)  # type: ignore[arg-type]
    limiter.observe("429", {"x-mbx-used-weight-1m": "-4"})  # type: ignore[arg-type]
    assert limiter.acquire()
    assert "reply not applied" in caplog.text


def test_generic_ratelimit_remaining_sets_the_window_of_that_limit(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["100/1m", "10/1s"], clock=clock)
    limiter.observe(200, {"RateLimit-Limit": "100", "RateLimit-Remaining": "40"})
    assert tokens(limiter) == [40, 10]
    limiter.observe(200, {"X-RateLimit-Limit": "10", "X-RateLimit-Used": "7"})
    assert tokens(limiter) == [40, 3]


def test_nothing_remaining_pauses_until_the_reset(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["100/1m"], clock=clock)
    limiter.observe(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "12"})
    assert limiter.paused_for == pytest.approx(12)
    limiter.resume()
    reset_at = str(int(time.time()) + 30)  # some exchanges send the Unix time
    limiter.observe(200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset_at})
    assert limiter.paused_for == pytest.approx(30, abs=2)


def test_headers_named_by_the_user_set_the_windows_they_name(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["1200/1m", "20/1s"], clock=clock)
    limiter.add_endpoint("private", 300, 60)
    limiter.set_reply_headers(
        "none", used={"X-Weight-Minute": "1m", "X-Private-Used": ("private", 0)}
    )
    limiter.observe(200, {"x-weight-minute": "1000", "x-private-used": "299"})
    assert tokens(limiter) == [200, 20]
    assert tokens(limiter, "private") == [1]


def test_the_preset_none_reads_no_header_but_still_pauses(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["6000/1m"], clock=clock)
    limiter.set_reply_headers("none")
    limiter.observe(200, BINANCE_REPLY)
    assert tokens(limiter) == [6000]
    limiter.observe(429, {"Retry-After": "2"})
    assert limiter.paused_for == pytest.approx(2)


def test_an_unknown_preset_is_refused_when_configured() -> None:
    limiter = RateLimiter(10, 1)
    with pytest.raises(ValueError, match="preset 'bitmex' is not one of"):
        limiter.set_reply_headers("bitmex")


def test_an_endpoint_added_after_a_reply_gets_the_next_replies(clock: ManualClock) -> None:
    limiter = RateLimiter(limits=["6000/1m"], clock=clock)
    limiter.observe(200, BINANCE_REPLY)
    limiter.add_endpoint("orders", 50, 10)
    limiter.observe(200, BINANCE_REPLY)
    assert tokens(limiter, "orders") == [2]


def test_a_reply_reaches_every_process_sharing_the_budget(
    make_shared_limiter: Callable[..., RateLimiter], clock: ManualClock
) -> None:
    observing = binance_limiter(make_shared_limiter, clock=clock)
    other = binance_limiter(make_shared_limiter, clock=clock)
    observing.observe(200, BINANCE_REPLY)
    assert sum(other.acquire() for _ in range(20)) == 10
    observing.observe(429, {"Retry-After": "60"})
    assert not other.acquire("orders")
