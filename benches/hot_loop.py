"""The hot paths timed in a plain ``itertools.repeat`` loop, beside their floors.

pytest-benchmark's own per-call overhead (~50 ns here) compresses ratios near 1x; a bare
loop does not. Each path is timed as the median of several rounds of ``N`` calls, the
rounds of every path interleaved so that a noisy neighbour hits them all alike.

    python benches/hot_loop.py                       # ratios to the floors
    python benches/hot_loop.py --against OTHER_PY    # before/after: the same paths under
                                                     # another interpreter (an older build)

With ``--against``, both interpreters run in turns, round by round, and the table gives
each path's median under this build and under the other, and their ratio.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROUNDS = 15
CALLS = 200_000


def _noop() -> None:
    return None


def _paths() -> dict[str, Callable[[], Any]]:
    """Each hot path as a zero-argument callable, built once."""
    from bench_with_resilience import driven  # the async rows, run to completion by hand

    from peak_resilience.errors import CircuitBreakerError
    from peak_resilience.rate_limiter import RateLimiter
    from peak_resilience.resilience import CircuitBreaker
    from peak_resilience.resilience_helpers import with_resilience
    from peak_resilience.testing import fresh_resilience

    limiter = RateLimiter(10**9, 1.0, name="hot-acquire")
    breaker = CircuitBreaker(name="hot-breaker")
    guarded = breaker.call(_noop)
    opened = CircuitBreaker(1, 3600.0, name="hot-open")
    opened.force_open()
    refused = opened.call(_noop)

    def refusal() -> None:
        # try/except rather than contextlib.suppress: the context manager's own cost
        # would hide the refusal's.
        try:  # noqa: SIM105
            refused()
        except CircuitBreakerError:
            pass

    fresh = fresh_resilience()
    fresh.__enter__()
    directory = tempfile.mkdtemp(prefix="peak-hot-")
    shared = RateLimiter(10**9, 1.0, name="hot-shared", backend="shared", shared_dir=directory)
    resilient = with_resilience("hot", "op", use_rate_limiter=True)(_noop)
    from peak_resilience.resilience_helpers import create_module_rate_limiter

    create_module_rate_limiter("hot").default_bucket.set_rate(10**9, 1.0)

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        return wrapper

    counter = itertools.count()
    paths: dict[str, Callable[[], Any]] = {
        "floor: next(count) (a C builtin call)": counter.__next__,
        "floor: a trivial *args/**kwargs decorator": decorator(_noop),
        "acquire()": limiter.acquire,
        "shared-memory acquire()": shared.acquire,
        "breaker-guarded no-op": guarded,
        "with_resilience (breaker, limiter, metrics)": resilient,
        "call refused by an open circuit (caught)": refusal,
    }
    try:  # issue 13's observe(), absent from older builds
        from bench_observe import BINANCE_REPLY, binance_limiter
    except ImportError:
        pass
    else:
        observing = binance_limiter()
        paths["observe() of a Binance reply's headers"] = functools.partial(
            observing.observe, 200, BINANCE_REPLY
        )

    async def async_noop() -> None:
        return None

    def async_decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await func(*args, **kwargs)

        return wrapper

    paths["floor: a trivial async wrapper (driven)"] = driven(async_decorator(async_noop))
    paths["with_resilience async (breaker, limiter, metrics; driven)"] = driven(
        with_resilience("hot", "async_op", use_rate_limiter=True)(async_noop)
    )
    try:  # issue 16's policies, absent from older builds (--against one of them)
        from peak_resilience.resilience import Retry
    except ImportError:
        return paths
    create_module_rate_limiter("hot-policies").default_bucket.set_rate(10**9, 1.0)
    paths["with_resilience + retry and bulkhead, not triggered"] = with_resilience(
        "hot-policies",
        "op",
        use_rate_limiter=True,
        retry=Retry(3, on=ConnectionError),
        max_concurrent=1000,
    )(_noop)
    # A timeout needs a running loop: these two are timed inside one (see _time).
    paths["with_resilience async, on a running loop (driven)"] = _on_loop(
        driven(with_resilience("hot-policies", "async_plain", use_rate_limiter=True)(async_noop))
    )
    paths["with_resilience async + retry, bulkhead, timeout, not triggered (ditto)"] = _on_loop(
        driven(
            with_resilience(
                "hot-policies",
                "async_op",
                use_rate_limiter=True,
                retry=Retry(3, on=ConnectionError),
                max_concurrent=1000,
                timeout=60.0,
            )(async_noop)
        )
    )
    return paths


def _on_loop(func: Callable[[], Any]) -> Callable[[], Any]:
    """Marks ``func`` to be timed inside a running event loop."""
    func.on_loop = True  # type: ignore[attr-defined]
    return func


def _time(func: Callable[[], Any], calls: int) -> float:
    """Seconds per call over one round of `calls` calls."""
    if getattr(func, "on_loop", False):
        import asyncio

        async def timed() -> float:
            # The same loop, with a loop running; `func` itself is called, as off the loop
            # (its `__call__` method-wrapper once cost these rows 10-40 ns per call).
            return _time_plainly(func, calls)

        return asyncio.run(timed())
    return _time_plainly(func, calls)


def _time_plainly(func: Callable[[], Any], calls: int) -> float:
    """Seconds per call over `calls` calls of `func` in a bare loop."""
    loop = itertools.repeat(None, calls)
    start = time.perf_counter()
    for _ in loop:
        func()
    return (time.perf_counter() - start) / calls


def _rounds(rounds: int, calls: int) -> dict[str, list[float]]:
    paths = _paths()
    for func in paths.values():
        _time(func, calls // 10)  # warm up
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, func in paths.items():
            times[name].append(_time(func, calls))
    return times


def _ns(seconds: float) -> str:
    return f"{seconds * 1e9:.1f} ns"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="another Python interpreter (an older build)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    if args.json:
        print(json.dumps(_rounds(args.rounds, args.calls)))
        return 0
    if args.against is None:
        medians = {k: statistics.median(v) for k, v in _rounds(args.rounds, args.calls).items()}
        floor = medians["floor: a trivial *args/**kwargs decorator"]
        async_floor = medians["floor: a trivial async wrapper (driven)"]
        print(
            f"| path (plain loop, median of {args.rounds} x {args.calls}) | time | vs decorator |"
        )
        print("|---|---|---|")
        for name, seconds in medians.items():
            # An async path is compared with the trivial async wrapper.
            reference = async_floor if "async" in name else floor
            print(f"| {name} | {_ns(seconds)} | {seconds / reference:.2f}x |")
        return 0
    ours: dict[str, list[float]] = {}
    theirs: dict[str, list[float]] = {}
    command = [sys.executable, __file__, "--json", "--rounds", "1", "--calls", str(args.calls)]
    other = [args.against, *command[1:]]
    for _ in range(args.rounds):
        # In turns, so that the machine's load hits both builds alike.
        for cmd, into in ((command, ours), (other, theirs)):
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            for name, values in json.loads(out).items():
                into.setdefault(name, []).extend(values)
    print(f"| path (plain loop, median of {args.rounds} runs) | this build | other build | ratio |")
    print("|---|---|---|---|")
    for name in ours:
        a, b = statistics.median(ours[name]), statistics.median(theirs.get(name, [float("nan")]))
        print(f"| {name} | {_ns(a)} | {_ns(b)} | {a / b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
