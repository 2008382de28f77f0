"""Issue 13: ``observe()`` of a Binance reply's headers (target: under 1 us), beside a
plain acquire for scale.

The reply is what Binance spot sends on a REST call (20 headers, three of them counts the
preset reads), as a plain dict in lower case (HTTP/2), as the case-insensitive mapping of
requests (ccxt's sync client) and as a plain dict in upper case (ccxt's async client
keeps the server's spelling).

Ratios (for `benches/ratios.py`):
- "observe": test_ours_observe_binance_reply <= 1 us (a bound, issue 13).
- "observe": test_ours_observe_binance_reply_in_the_servers_case and
  test_ours_observe_binance_reply_requests_headers / test_ours_acquire_for_scale (for
  information).
"""

from __future__ import annotations

from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from peak_resilience.rate_limiter import RateLimiter

BINANCE_REPLY = {
    "content-type": "application/json;charset=UTF-8",
    "content-length": "1043",
    "connection": "keep-alive",
    "date": "Wed, 02 Dec 2026 04:40:00 GMT",
    "server": "nginx",
    "vary": "Accept-Encoding",
    "x-mbx-uuid": "7f5b0f5e-5b0a-4c0e-9d0e-0e0e0e0e0e0e",
    "x-mbx-used-weight": "1187",
    "x-mbx-used-weight-1m": "1187",
    "x-mbx-order-count-10s": "3",
    "x-mbx-order-count-1d": "1204",
    "strict-transport-security": "max-age=31536000; includeSubdomains",
    "x-frame-options": "SAMEORIGIN",
    "x-xss-protection": "1; mode=block",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'self'",
    "cache-control": "no-cache, no-store, must-revalidate",
    "expires": "0",
    "x-cache": "Miss from cloudfront",
    "via": "1.1 0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a.cloudfront.net (CloudFront)",
}


def binance_limiter() -> RateLimiter:
    limiter = RateLimiter(limits=["6000/1m"], name="bench-observe")
    limiter.add_endpoint("orders", 50, 10, windows=[(160_000, 86_400)])
    limiter.set_reply_headers("binance")
    return limiter


@pytest.mark.benchmark(group="observe")
def test_ours_observe_binance_reply(benchmark: Any) -> None:
    limiter = binance_limiter()
    benchmark(limiter.observe, 200, BINANCE_REPLY)
    assert round(limiter.default_bucket.window_tokens()[0]) >= 6000 - 1187


@pytest.mark.benchmark(group="observe")
def test_ours_observe_binance_reply_requests_headers(benchmark: Any) -> None:
    limiter = binance_limiter()
    headers = CaseInsensitiveDict(BINANCE_REPLY)
    benchmark(limiter.observe, 200, headers)
    assert round(limiter.bucket_for("orders").window_tokens()[0]) >= 50 - 3


@pytest.mark.benchmark(group="observe")
def test_ours_observe_binance_reply_in_the_servers_case(benchmark: Any) -> None:
    # ccxt's async client hands on a plain dict spelled as the server sent it.
    limiter = binance_limiter()
    headers = {name.upper(): value for name, value in BINANCE_REPLY.items()}
    benchmark(limiter.observe, 200, headers)
    assert round(limiter.default_bucket.window_tokens()[0]) >= 6000 - 1187


@pytest.mark.benchmark(group="observe")
def test_ours_acquire_for_scale(benchmark: Any) -> None:
    limiter = RateLimiter(10**9, 1.0, burst=10**12)
    assert benchmark(limiter.acquire) is True
