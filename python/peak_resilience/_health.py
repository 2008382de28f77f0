"""Health checks: the process-wide registry and the built-in checks.

Re-exported as ``peak_resilience.resilience.health_check`` (the guide's
``from src.core.resilience import health_check``).

The built-in checks here look at the native core and the live breakers and limiters; the
metrics recorder adds its own "metrics" check.

Every check runs on a worker thread, all at once, each bounded by its timeout. A check
still running from an earlier run is joined, not started again: a hung check holds one
thread, never one per request, and is reported as timed out until it returns.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from peak_resilience import _instances
from peak_resilience._circuit import CircuitState
from peak_resilience._fork import after_fork_in_child
from peak_resilience._labels import label_value
from peak_resilience._native import CircuitBreaker as _NativeBreaker
from peak_resilience._native import ManualClock, TokenBucket

__all__ = [
    "CheckFunction",
    "CheckOutcome",
    "CheckResult",
    "HealthCheckRegistry",
    "SystemStatus",
    "health_check",
]

logger = logging.getLogger("peak_resilience.health")

#: What a check function may return: ``(ok, message)`` or a bool (or, from an async
#: function, an awaitable of either).
CheckOutcome = tuple[bool, str] | bool
CheckFunction = Callable[[], CheckOutcome | Awaitable[CheckOutcome]]
SystemStatus = Literal["healthy", "degraded", "unhealthy"]


class CheckResult(TypedDict):
    """One check's outcome, as ``run_all()`` reports it."""

    healthy: bool
    message: str
    duration_ms: float
    critical: bool


def _valid_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (0 < timeout < float("inf"))
    ):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _interpret(outcome: object) -> tuple[bool, str]:
    """A check's return value as (healthy, message); anything else is unhealthy."""
    if isinstance(outcome, bool):
        return outcome, "ok" if outcome else "check returned False"
    if isinstance(outcome, tuple) and len(outcome) == 2 and isinstance(outcome[0], bool):
        return outcome[0], str(outcome[1])
    kind = type(outcome).__name__
    return False, f"check returned a {kind}, expected a bool or (bool, message)"


class _Workers:
    """Daemon threads that run checks. A thread is added only when none is idle, so the
    pool grows to the most checks ever in flight at once (a hung check holds one thread)
    and never blocks interpreter exit. Reusing threads matters under load: starting one
    waits for it to be scheduled, which costs milliseconds when 50 requests hold the GIL.
    """

    def __init__(self) -> None:
        self._runs: queue.SimpleQueue[_Run] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._started = 0

    def submit(self, run: _Run) -> None:
        with self._lock:
            spawn = self._idle == 0
            if spawn:
                self._started += 1
            else:
                self._idle -= 1
        self._runs.put(run)
        if spawn:
            name = f"peak-resilience-health-{self._started}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            run = self._runs.get()
            run.execute()
            # Idle before the result is announced: a caller that waited for it and runs
            # the checks again finds this thread free instead of starting another.
            with self._lock:
                self._idle += 1
            run.done.set()


_workers = _Workers()
#: Every registry, for the fork handler.
_registries: weakref.WeakSet[HealthCheckRegistry] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (a gunicorn worker of a ``--preload`` app) has none of the parent's
    threads: a pool that counted idle workers would hand every check to threads that do
    not exist, and a run in flight at the fork would never finish. Start afresh."""
    global _workers
    _workers = _Workers()
    for registry in list(_registries):
        registry._after_fork()


after_fork_in_child(_after_fork_in_child)


class _Run:
    """One execution of one check, on a worker thread."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.healthy = False
        self.message = ""
        self.duration = 0.0
        self._name = name
        self._fn = fn
        _workers.submit(self)

    def execute(self) -> None:
        try:
            outcome = self._fn()
            if inspect.isawaitable(outcome):
                import asyncio  # here: a caller that never awaits need not import it

                outcome = asyncio.run(_awaited(outcome))
            self.healthy, self.message = _interpret(outcome)
        except BaseException as exc:
            # The reason is the exception's type: its text may hold a DSN or a key, and
            # goes to the log only. Not even SystemExit may end a worker thread.
            logger.warning("health check %r raised", self._name, exc_info=True)
            self.healthy, self.message = False, f"check raised {type(exc).__name__}"
        finally:
            self.duration = time.monotonic() - self.started


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


@dataclass
class _Check:
    fn: Callable[[], Any]
    critical: bool
    timeout: float
    running: _Run | None = None


class HealthCheckRegistry:
    """Named checks of the parts a process depends on.

    ``critical`` checks decide readiness: when one fails the system is "unhealthy"
    (``/health`` answers 503). A failing non-critical check makes it "degraded": still
    serving (200), and reported.
    """

    def __init__(self) -> None:
        self._checks: dict[str, _Check] = {}
        self._lock = threading.Lock()
        self._critical_breakers: set[str] = set()
        _registries.add(self)

    def _after_fork(self) -> None:
        # The lock may have been held by a thread of the parent that the child lacks.
        self._lock = threading.Lock()
        for check in self._checks.values():
            check.running = None

    def register(
        self,
        name: str,
        fn: CheckFunction,
        *,
        critical: bool = True,
        timeout: float = 5.0,
    ) -> None:
        """Adds (or replaces) the check ``name``. ``fn()`` returns ``(ok, message)`` or a
        bool (an async function is run to completion); one that raises or runs past
        ``timeout`` seconds is reported unhealthy."""
        label_value(name, "health check name")
        if not callable(fn):
            raise ValueError(f"health check {name!r}: fn must be callable, got {fn!r}")
        if not isinstance(critical, bool):
            raise ValueError(f"health check {name!r}: critical must be a bool, got {critical!r}")
        check = _Check(fn, critical, _valid_timeout(timeout))
        with self._lock:
            self._checks[name] = check

    def unregister(self, name: str) -> None:
        """Removes the check ``name``; KeyError if there is none."""
        with self._lock:
            if name not in self._checks:
                raise KeyError(f"no health check named {name!r}")
            del self._checks[name]

    def names(self) -> list[str]:
        """The registered checks' names."""
        with self._lock:
            return list(self._checks)

    def run_all(self, *, critical_only: bool = False) -> dict[str, CheckResult]:
        """Runs every check (or only the critical ones) concurrently and returns each
        outcome by name; takes at most as long as the longest timeout."""
        with self._lock:
            checks = [
                (name, check)
                for name, check in self._checks.items()
                if check.critical or not critical_only
            ]
            runs: list[tuple[str, _Check, _Run]] = []
            for name, check in checks:
                run = check.running
                if run is None or run.done.is_set():
                    run = check.running = _Run(name, check.fn)
                runs.append((name, check, run))
        results: dict[str, CheckResult] = {}
        for name, check, run in runs:
            # A run joined from earlier has already used part of its time.
            remaining = run.started + check.timeout - time.monotonic()
            if run.done.wait(max(remaining, 0.0)):
                results[name] = {
                    "healthy": run.healthy,
                    "message": run.message,
                    "duration_ms": round(run.duration * 1000, 3),
                    "critical": check.critical,
                }
            else:
                results[name] = {
                    "healthy": False,
                    "message": f"timed out after {check.timeout:g}s",
                    "duration_ms": round((time.monotonic() - run.started) * 1000, 3),
                    "critical": check.critical,
                }
        return results

    @staticmethod
    def status_of(results: dict[str, CheckResult]) -> SystemStatus:
        """ "unhealthy" if a critical check failed, "degraded" if another one did."""
        failed = [r for r in results.values() if not r["healthy"]]
        if any(r["critical"] for r in failed):
            return "unhealthy"
        return "degraded" if failed else "healthy"

    def status(self) -> SystemStatus:
        """Runs the checks: "healthy", "degraded" or "unhealthy"."""
        return self.status_of(self.run_all())

    def is_system_healthy(self) -> bool:
        """Runs the checks; True when every critical one passes ("degraded" is healthy)."""
        return self.status() != "unhealthy"

    # -- breakers --------------------------------------------------------------------------

    def mark_breaker_critical(self, breaker: str | _NativeBreaker, critical: bool = True) -> None:
        """Makes an open ``breaker`` (or breaker name) fail readiness (``/health`` 503).
        By default an open breaker only makes the system "degraded": one failing exchange
        should not take a whole trading process out of its load balancer."""
        name = breaker if isinstance(breaker, str) else breaker.name
        if not isinstance(name, str) or not name:
            raise ValueError(f"breaker must be a breaker or a non-empty name, got {breaker!r}")
        with self._lock:
            if critical:
                self._critical_breakers.add(name)
            else:
                self._critical_breakers.discard(name)

    def critical_breakers(self) -> set[str]:
        """The names of the breakers marked critical."""
        with self._lock:
            return set(self._critical_breakers)


def _open_breakers(breakers: Iterable[_NativeBreaker]) -> dict[str, float | None]:
    """Open breakers by name, each with the seconds until its next trial call (None when
    held open by ``force_open()``, until reset)."""
    opened: dict[str, float | None] = {}
    for breaker in breakers:
        code = breaker.state_code
        if code == CircuitState.FORCED_OPEN:
            opened[breaker.name] = None
        elif code == CircuitState.OPEN and opened.get(breaker.name, 0.0) is not None:
            opened[breaker.name] = max(breaker.retry_after, opened.get(breaker.name) or 0.0)
    return dict(sorted(opened.items()))


def _manual_modes(breakers: Iterable[_NativeBreaker]) -> str:
    """ ", 2 disabled: a, b" and the like for the breakers that do not enforce."""
    modes: dict[str, set[str]] = {}
    for breaker in breakers:
        code = breaker.state_code
        if code in (CircuitState.DISABLED, CircuitState.METRICS_ONLY):
            modes.setdefault(CircuitState(code).name.lower(), set()).add(breaker.name)
    return "".join(
        f", {len(names)} {mode.replace('_', ' ')}: {', '.join(sorted(names)[:10])}"
        for mode, names in sorted(modes.items())
    )


def _shared_file_problems() -> list[str]:
    """What happened to the shared files of live limiters and breakers, if anything: one
    truncated under this process (its state is lost: calls raise), or deleted or replaced
    (processes started since use another file: the host's budget is split). One ``stat``
    per shared object, so only here, never per call."""
    objects: list[TokenBucket | _NativeBreaker] = list(_instances.alive(_instances.breakers))
    for limiter in _instances.alive(_instances.limiters):
        objects.append(limiter.default_bucket)
        # As they read: a health check makes no bucket for an endpoint not used yet.
        objects.extend(limiter._endpoint_buckets_to_read().values())
    problems = {p for o in objects if (p := o.shared_file_problem()) is not None}
    return sorted(problems)


def _describe_open(opened: dict[str, float | None]) -> str:
    shown = ", ".join(
        f"{name} (forced open until reset)"
        if wait is None
        else f"{name} (next trial in {wait:.0f}s)"
        for name, wait in list(opened.items())[:10]
    )
    more = f" and {len(opened) - 10} more" if len(opened) > 10 else ""
    return f"{len(opened)} open: {shown}{more}"


def check_circuit_breakers() -> tuple[bool, str]:
    """Built-in, not critical: fails (degraded) while any breaker is open."""
    breakers = _instances.alive(_instances.breakers)
    opened = _open_breakers(breakers)
    modes = _manual_modes(breakers)
    if opened:
        return False, _describe_open(opened) + modes
    return True, f"{len(breakers)} breakers, none open{modes}"


def check_critical_circuit_breakers() -> tuple[bool, str]:
    """Built-in, critical: fails while a breaker marked critical is open."""
    critical = health_check.critical_breakers()
    if not critical:
        return True, "no breaker is marked critical"
    breakers = _instances.alive(_instances.breakers)
    opened = {n: w for n, w in _open_breakers(breakers).items() if n in critical}
    if opened:
        return False, "critical " + _describe_open(opened)
    return True, f"{len(critical)} critical breakers, none open"


def check_resilience() -> tuple[bool, str]:
    """Built-in, critical: the native core answers and decides correctly, and every
    shared limiter's and breaker's file is still the one this process uses."""
    clock = ManualClock()
    breaker = _NativeBreaker(1, 1.0, "health-probe", 1, clock=clock)
    breaker.record_failure()
    opened = breaker.state_code == CircuitState.OPEN and not breaker.allow()
    clock.advance(1.0)
    recovers = breaker.state_code == CircuitState.HALF_OPEN
    bucket = TokenBucket(1, 1.0, None, clock)
    limits = bucket.acquire() and not bucket.acquire()
    if not (opened and recovers and limits):
        return False, "native core answered wrongly to a probe breaker or bucket"
    problems = _shared_file_problems()
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        return False, "; ".join(problems[:5]) + more
    return True, (
        f"native core ok; {len(_instances.breakers)} breakers, "
        f"{len(_instances.limiters)} rate limiters"
    )


#: The process-wide registry of the guide.
health_check = HealthCheckRegistry()
health_check.register("resilience", check_resilience, critical=True, timeout=2.0)
health_check.register("circuit_breakers", check_circuit_breakers, critical=False, timeout=2.0)
health_check.register(
    "critical_circuit_breakers", check_critical_circuit_breakers, critical=True, timeout=2.0
)
