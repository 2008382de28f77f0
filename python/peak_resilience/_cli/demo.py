"""``peak-resilience demo``: an order loop against a simulated exchange, guarded by
``with_resilience`` with the ``[resilience.demo]`` settings of the shipped config.toml.

The exchange answers with latency spikes, goes down for a stretch in the middle of the run
and enforces a rate limit of its own (50/s). Our limiter (40/s, burst 10) keeps the loop
under it; the breaker opens during the outage, fails fast, half-opens and closes again. On
a terminal the view updates in place; otherwise each event is a plain line.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

from peak_resilience._circuit import CircuitState
from peak_resilience._config.active import configure
from peak_resilience._config.environment import ENV_PREFIX, env_name
from peak_resilience._config.load import load_config
from peak_resilience._events import BreakerTransition, Event
from peak_resilience._http.server import start_health_server
from peak_resilience._modules.registry import (
    create_module_circuit_breaker,
    create_module_rate_limiter,
    with_resilience,
)
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded

__all__ = ["demo", "run"]

MODULE = "demo"
#: Used when the configuration in force has no [resilience.demo] table.
DEMO_DEFAULTS = {
    "CIRCUIT_BREAKER_THRESHOLD": "3",
    "CIRCUIT_BREAKER_TIMEOUT": "2",
    "RATE_LIMIT_REQUESTS": "40",
    "RATE_LIMIT_WINDOW": "1",
    "RATE_LIMIT_BURST": "10",
}


#: The simulated exchange's latency spikes: how often, how long.
SPIKE_CHANCE = 0.05
SPIKE_SECONDS = 0.02


class ExchangeDown(ConnectionError):
    """The simulated exchange is unreachable."""


class ExchangeRateLimited(Exception):
    """The simulated exchange answered 429: we sent faster than it allows."""


class SimulatedExchange:
    """Fills orders with occasional latency spikes; down between ``outage`` fractions of the
    run; answers 429 past ``limit_per_second``."""

    def __init__(self, duration: float, seed: int = 7, limit_per_second: int = 50) -> None:
        self.started = time.monotonic()
        self.outage = (duration * 0.3, duration * 0.5)
        self.rng = random.Random(seed)
        self.limit = limit_per_second
        self.recent: deque[float] = deque()
        self.lock = threading.Lock()

    def submit_order(self, symbol: str, side: str) -> str:
        now = time.monotonic()
        with self.lock:
            while self.recent and now - self.recent[0] >= 1.0:
                self.recent.popleft()
            self.recent.append(now)
            if len(self.recent) > self.limit:
                raise ExchangeRateLimited("429 Too Many Requests")
        elapsed = now - self.started
        if self.outage[0] <= elapsed < self.outage[1]:
            raise ExchangeDown("exchange unreachable")
        if self.rng.random() < SPIKE_CHANCE:
            time.sleep(SPIKE_SECONDS)  # a latency spike
        return f"{side} {symbol} filled"


@dataclass
class Tally:
    filled: int = 0
    failed: int = 0
    fast_failed: int = 0
    rate_limited: int = 0
    exchange_429: int = 0
    last_wait: float = 0.0
    spikes: int = 0
    slowest: float = 0.0
    events: deque[str] = field(default_factory=lambda: deque(maxlen=6))


def _settings_for_demo(config_path: str | None) -> Any:
    config = load_config(config_path)
    if MODULE not in config.modules:
        for key, value in DEMO_DEFAULTS.items():
            os.environ.setdefault(f"{ENV_PREFIX}{env_name(MODULE)}__{key}", value)
    return configure(config_path)


def _start_server(port: int | None) -> Any:
    if port is None:
        return None
    return start_health_server(host="127.0.0.1", port=port)


def _header(duration: float, exchange: SimulatedExchange, config: Any, server: Any) -> list[str]:
    """What the demo will show, said before it starts."""
    settings = config.module(MODULE)
    down_from, down_to = exchange.outage
    header = [
        f"demo: {duration:g}s of orders at ~100/s against a simulated exchange that",
        f"  - answers with latency spikes ({SPIKE_SECONDS * 1000:.0f} ms on ~"
        f"{SPIKE_CHANCE:.0%} of orders): each one is shown",
        f"  - is down from {down_from:.1f}s to {down_to:.1f}s: the breaker opens, fails fast, "
        "half-opens and closes",
        f"  - allows {exchange.limit} orders/s (429 past that): our limiter keeps the loop "
        "under it",
        f"[resilience.{MODULE}] from {config.source or 'built-in defaults'}: breaker opens after "
        f"{settings.circuit_breaker_threshold} failures for {settings.circuit_breaker_timeout:g}s, "
        f"limit {settings.rate_limit_requests}/{settings.rate_limit_window:g}s "
        f"(burst {settings.burst})",
    ]
    if server is not None:
        header.append(
            f"health endpoints: {server.url}/health  {server.url}/health/prometheus "
            "(until the demo exits; Ctrl-C stops it with a summary)"
        )
    return header


def run(
    duration: float = 10.0,
    port: int | None = 0,
    config_path: str | None = None,
    live: bool | None = None,
    out: TextIO | None = None,
) -> int:
    """Runs the demo for ``duration`` seconds (or until Ctrl-C: 130, after the summary)."""
    out = out or sys.stdout
    live = out.isatty() if live is None else live
    config = _settings_for_demo(config_path)
    exchange = SimulatedExchange(duration)
    breaker = create_module_circuit_breaker(MODULE, "submit_order")
    limiter = create_module_rate_limiter(MODULE)
    tally = Tally()
    started = time.monotonic()

    def event(line: str) -> None:
        line = f"{time.monotonic() - started:5.2f}s  {line}"
        tally.events.append(line)
        if not live:
            print(line, file=out, flush=True)

    def on_transition(seen: Event) -> None:
        if isinstance(seen, BreakerTransition):
            event(f"breaker {seen.breaker}: {seen.from_state} -> {seen.to_state}")

    breaker.add_listener(on_transition)

    @with_resilience(MODULE, "submit_order", use_rate_limiter=True)
    def submit_order(symbol: str, side: str) -> str:
        return exchange.submit_order(symbol, side)

    server = _start_server(port)
    interrupted = False
    try:
        header = _header(duration, exchange, config, server)
        print("\n".join(header), file=out, flush=True)
        rng = random.Random(11)
        next_frame = next_line = 0.0
        try:
            while (now := time.monotonic()) - started < duration:
                symbol = rng.choice(["BTC/EUR", "ETH/EUR", "SOL/EUR"])
                sent = time.perf_counter()
                try:
                    submit_order(symbol, rng.choice(["buy", "sell"]))
                    tally.filled += 1
                    took = time.perf_counter() - sent
                    if took >= SPIKE_SECONDS / 2:
                        tally.spikes += 1
                        tally.slowest = max(tally.slowest, took)
                        event(f"latency spike: {symbol} filled in {took * 1000:.1f} ms")
                except RateLimitExceeded as refused:
                    tally.rate_limited += 1
                    tally.last_wait = refused.retry_after
                except CircuitBreakerError:
                    tally.fast_failed += 1
                except ExchangeRateLimited:
                    tally.exchange_429 += 1
                except ExchangeDown:
                    tally.failed += 1
                if live and now >= next_frame:
                    _draw(
                        out,
                        header,
                        tally,
                        breaker.state,
                        limiter.get_stats(),
                        now - started,
                        duration,
                    )
                    next_frame = now + 0.2
                elif not live and now >= next_line:
                    if next_line:
                        print(f"{now - started:5.2f}s  {_counts(tally)}", file=out, flush=True)
                    next_line = now + 1.0
                time.sleep(0.01)
        except KeyboardInterrupt:
            interrupted = True
        elapsed = min(time.monotonic() - started, duration)
        if live:
            _draw(out, header, tally, breaker.state, limiter.get_stats(), elapsed, duration)
        if interrupted:
            print(f"interrupted (Ctrl-C) after {elapsed:.2f}s of {duration:g}s", file=out)
        stats = limiter.get_stats()
        print(
            f"done: {_counts(tally)}; limiter rejection rate {stats['rejection_rate']:.0%}, "
            f"exchange 429s {tally.exchange_429}",
            file=out,
            flush=True,
        )
    finally:
        breaker.remove_listener(on_transition)
        # Last: the health endpoints answer for as long as the demo runs.
        if server is not None:
            server.stop()
    return 130 if interrupted else 0


def _counts(tally: Tally) -> str:
    return (
        f"filled {tally.filled}, failed {tally.failed}, fast-failed {tally.fast_failed}, "
        f"rate-limited {tally.rate_limited} (next token in {tally.last_wait * 1000:.0f} ms), "
        f"latency spikes {tally.spikes} (slowest {tally.slowest * 1000:.0f} ms)"
    )


def _draw(
    out: TextIO,
    header: list[str],
    tally: Tally,
    state: CircuitState,
    stats: dict[str, Any],
    elapsed: float,
    duration: float,
) -> None:
    lines = [
        *header,
        f"t={elapsed:5.1f}s / {duration:.0f}s   breaker demo.submit_order: {state.name:<9}",
        f"orders: filled {tally.filled:5d}  failed {tally.failed:4d}  "
        f"fast-failed {tally.fast_failed:4d}  rate-limited {tally.rate_limited:5d}",
        f"limiter: {stats['tokens_available']:5.1f} tokens, rejection rate "
        f"{stats['rejection_rate']:4.0%}, last wait {tally.last_wait * 1000:4.0f} ms, "
        f"exchange 429s {tally.exchange_429}",
        f"latency: {tally.spikes} spikes, slowest {tally.slowest * 1000:.1f} ms",
        "events:",
        *(f"  {event}" for event in tally.events),
    ]
    # Redraw in place: home the cursor, clear to the end of the screen, draw.
    out.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n")
    out.flush()


def demo(args: argparse.Namespace) -> int:
    # The demo shows each transition itself: the breaker's own WARNING lines would only
    # repeat them on stderr (and tear the live view).
    breaker_log = logging.getLogger("peak_resilience.resilience")
    level = breaker_log.level
    breaker_log.setLevel(logging.ERROR)
    try:
        return run(duration=args.duration, port=args.port, config_path=args.config, live=args.live)
    finally:
        breaker_log.setLevel(level)
