"""``peak-resilience bench``: the quick ratio table, measured in this process with timeit.

The full, side-by-side pytest-benchmark suite lives in the repository (``scripts/bench``);
this is the same questions answered in a few seconds wherever the package is installed.
Peers are measured when they are installed.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import timeit
from collections.abc import Callable
from typing import Any

from peak_resilience._breaker import CircuitBreaker
from peak_resilience._limiter import RateLimiter
from peak_resilience.errors import CircuitBreakerError

__all__ = ["bench", "run"]


def _noop() -> None:
    return None


class _Plain(Exception):
    pass


def _raise() -> None:
    raise _Plain


def _catching(call: Callable[[], Any], error: type[BaseException]) -> Callable[[], None]:
    def run() -> None:
        # try/except, not contextlib.suppress: the floor is what a plain raise costs.
        try:  # noqa: SIM105
            call()
        except error:
            pass

    return run


def _decorated(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def _ns(call: Callable[[], Any], number: int) -> float:
    """Best of 5 runs of ``number`` calls, in ns per call (the least disturbed run)."""
    number = max(number, 1)  # the peers' share of a small --number may round to 0
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e9


def _peers() -> dict[str, Callable[[], Any]]:
    peers: dict[str, Callable[[], Any]] = {}
    try:
        from limits import RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import FixedWindowRateLimiter

        fixed, item = FixedWindowRateLimiter(MemoryStorage()), RateLimitItemPerSecond(10**12)
        peers["limits fixed window hit"] = lambda: fixed.hit(item, "k")
    except ImportError:
        pass
    try:
        import pybreaker

        peers["pybreaker decorated no-op"] = pybreaker.CircuitBreaker()(_noop)
    except ImportError:
        pass
    return peers


def run(number: int) -> list[tuple[str, float, str, float]]:
    limiter = RateLimiter(10**9, 1.0, burst=10**12, name="bench")
    guarded = CircuitBreaker(name="bench").call(_noop)
    opened = CircuitBreaker(recovery_timeout=1e6, name="bench-open")
    opened.open_for(1e6)
    floors = {
        "builtin call next(count)": _ns(itertools.count().__next__, number),
        "*args/**kwargs decorator": _ns(_decorated(_noop), number),
        "raise + catch": _ns(_catching(_raise, _Plain), number),
    }
    ours = {
        "acquire()": _ns(limiter.acquire, number),
        "breaker-guarded no-op": _ns(guarded, number),
        "call refused by an open circuit": _ns(
            _catching(opened.call(_noop), CircuitBreakerError), number // 4
        ),
    }
    rows = [
        (
            "acquire()",
            ours["acquire()"],
            "builtin call next(count)",
            floors["builtin call next(count)"],
        ),
        (
            "breaker-guarded no-op",
            ours["breaker-guarded no-op"],
            "*args/**kwargs decorator",
            floors["*args/**kwargs decorator"],
        ),
        (
            "call refused by an open circuit",
            ours["call refused by an open circuit"],
            "raise + catch",
            floors["raise + catch"],
        ),
    ]
    for name, call in _peers().items():
        mine = ours["acquire()"] if "limits" in name else ours["breaker-guarded no-op"]
        label = "acquire()" if "limits" in name else "breaker-guarded no-op"
        rows.append((label, mine, name, _ns(call, number // 10)))
    return rows


def bench(args: argparse.Namespace) -> int:
    print(f"{'ours':<32} {'ns':>7}   {'reference':<28} {'ns':>7}   ratio")
    for mine, mine_ns, ref, ref_ns in run(args.number):
        print(f"{mine:<32} {mine_ns:7.1f}   {ref:<28} {ref_ns:7.1f}   {mine_ns / ref_ns:5.2f}x")
    print("ratio = ours / reference (below 1: ours is cheaper). Full suite: scripts/bench")
    return 0
