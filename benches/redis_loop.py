"""Redis-guarded calls beside one redis-py PING, timed in a plain loop (issue 12).

A round trip to Redis on loopback is ~50-150 us on a shared machine and moves by tens of
percent between runs, so the paths are timed in interleaved rounds (each round times
every path once, a noisy neighbour hits them all alike) and each ratio is the median of
the per-round ratios, beside the medians of the times.

    python benches/redis_loop.py [--rounds 15] [--calls 2000]

Starts its own redis-server on loopback (``redis-server`` must be on PATH).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import RedisServer

#: The finest rate Redis counts (one per microsecond): never runs out during a run.
REDIS_BIG = 10**6


def _paths(url: str) -> dict[str, Callable[[], Any]]:
    import redis

    from peak_resilience import CircuitBreaker, RateLimiter
    from peak_resilience._guard import guard

    on_redis: dict[str, Any] = {"backend": "redis", "redis_url": url}
    client = redis.Redis.from_url(url)
    admitted = guard(
        lambda: None,
        breaker=CircuitBreaker(5, 60, "loop-admitted", **on_redis),
        limiter=RateLimiter(REDIS_BIG, 1.0, name="loop-admitted", **on_redis),
    )
    refused = guard(
        lambda: "sent",
        breaker=CircuitBreaker(5, 60, "loop-refused", **on_redis),
        limiter=RateLimiter(1, 3600, name="loop-refused", **on_redis),
        fallback="refused",
    )
    assert refused() == "sent" and refused() == "refused"
    acquire = RateLimiter(REDIS_BIG, 1.0, name="loop-acquire", **on_redis).acquire
    return {
        "floor: one redis-py PING": client.ping,
        "Redis-guarded call, admitted (breaker + limiter)": admitted,
        "Redis-guarded call, refused by the limiter": refused,
        "Redis acquire()": acquire,
    }


def _time(func: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in itertools.repeat(None, calls):
        func()
    return (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            paths = _paths(server.url)
            for func in paths.values():
                _time(func, args.calls // 10)  # warm up: scripts loaded, connections open
            times: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, func in paths.items():
                    times[name].append(_time(func, args.calls))
        finally:
            server.stop()
    floor = times["floor: one redis-py PING"]
    print(f"| path (plain loop, {args.rounds} rounds x {args.calls}) | median | vs PING |")
    print("|---|---|---|")
    for name, values in times.items():
        ratio = statistics.median(v / f for v, f in zip(values, floor, strict=True))
        print(f"| {name} | {statistics.median(values) * 1e6:.1f} us | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
