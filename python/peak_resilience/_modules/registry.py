"""The registry of per-module breakers and limiters, and ``with_resilience``.

Re-exported by ``peak_resilience.resilience_helpers`` (the guide's
``from src.core.resilience_helpers import with_resilience``), whose docstring says what a
module's budget and breakers are. The registry builds them on first use, remembers every
decorated function, and follows ``configure()``: it refuses a configuration that would
leave a fail-safe function without a fallback, and applies the others in place.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, overload

from peak_resilience import _instances
from peak_resilience._breaker import CircuitBreaker
from peak_resilience._bulkhead import Bulkhead
from peak_resilience._config.active import active, add_listener, lock
from peak_resilience._config.errors import ConfigError
from peak_resilience._config.load import Config
from peak_resilience._config.parameters import Placement, breaker_parameters, limiter_parameters
from peak_resilience._config.schema import TABLE, Settings
from peak_resilience._events import announce_refusal
from peak_resilience._guard import MISSING, guard, typed
from peak_resilience._labels import label_value
from peak_resilience._limiter import RateLimiter

# The guide's Debugging section turns these up: breaker events under "resilience", rate
# limiting under "rate_limiter".
from peak_resilience._logging import breaker_log as _breaker_log
from peak_resilience._logging import limiter_log as _limiter_log
from peak_resilience._logging import log_refusal
from peak_resilience._modules.build import (
    build_breaker,
    build_limiter,
    build_retry,
    update_breaker,
    update_limiter,
)
from peak_resilience._native import Guard, ManualClock, OperationStats, Retry
from peak_resilience.errors import BulkheadFull, CircuitBreakerError, RateLimitExceeded

__all__ = [
    "ModuleRegistry",
    "create_module_circuit_breaker",
    "create_module_rate_limiter",
    "get_all_circuit_breakers",
    "get_all_rate_limiters",
    "with_resilience",
]

P = ParamSpec("P")
R = TypeVar("R")


def _rejection_log(
    name: str, breaker: CircuitBreaker | None, limiter: RateLimiter | None
) -> Callable[[BaseException], None]:
    """Logs each refused call of operation ``name`` at DEBUG and tells the event listeners
    of the breaker or limiter that refused it (called on refusals only)."""

    def on_reject(refusal: BaseException) -> None:
        if isinstance(refusal, RateLimitExceeded):
            log_refusal(
                _limiter_log,
                name,
                "%s refused by rate limiter %r: retry in %.3fs",
                name,
                refusal.limiter,
                refusal.retry_after,
            )
            announce_refusal(refusal, None if limiter is None else limiter._listeners)
        elif isinstance(refusal, CircuitBreakerError):
            log_refusal(_breaker_log, name, "%s refused: %s", name, refusal)
            announce_refusal(refusal, None if breaker is None else breaker._listeners)
        elif isinstance(refusal, BulkheadFull):
            log_refusal(_breaker_log, name, "%s refused: %s", name, refusal)

    return on_reject


def _name(value: object, what: str) -> str:
    return label_value(value, what)


@dataclass(frozen=True)
class _Decorated:
    """A function decorated by ``with_resilience``, remembered so that a new configuration
    can be checked against it and applied to it."""

    module: str
    qualname: str
    guard: Guard
    has_fallback: bool
    fallback_on_failure: bool
    #: Whether its bulkhead and its retries follow the module's keys (else the
    #: decorator's own ``max_concurrent=`` / ``retry=`` hold, whatever a reload says).
    bulkhead_from_config: bool = False
    retry_from_config: bool = False


class ModuleRegistry:
    """The breakers, limiters and decorated functions of every module, on one clock."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        self.limiters: dict[str, RateLimiter] = {}
        self.bulkheads: dict[str, Bulkhead] = {}
        self._breaker_modules: dict[str, str] = {}
        #: Where each object's state lives, as built: a reload may not move it.
        self._placements: dict[tuple[str, str], Placement] = {}
        self._decorated: list[_Decorated] = []

    def breaker(self, module: str, operation: str) -> CircuitBreaker:
        name = f"{_name(module, 'module')}.{_name(operation, 'operation')}"
        found = self.breakers.get(name)
        if found is not None:
            return found
        with lock():
            found = self.breakers.get(name)
            if found is None:
                settings = active().module(module)
                found = build_breaker(name, module, settings, self.clock)
                self.breakers[name] = found
                self._breaker_modules[name] = module
                self._placements[("breaker", name)] = breaker_parameters(settings).placement
        return found

    def limiter(self, module: str) -> RateLimiter:
        found = self.limiters.get(_name(module, "module"))
        if found is not None:
            return found
        with lock():
            found = self.limiters.get(module)
            if found is None:
                settings = active().module(module)
                found = build_limiter(module, module, settings, self.clock)
                self.limiters[module] = found
                self._placements[("limiter", module)] = limiter_parameters(settings).placement
        return found

    def bulkhead(self, name: str, max_concurrent: int, settings: Settings) -> Bulkhead:
        """The bulkhead of operation ``name``: every function decorated as the operation
        shares its slots. Its cap is the first one asked for; its wait and backend are
        the module's ``settings``."""
        with lock():
            found = self.bulkheads.get(name)
            if found is None:
                found = Bulkhead(
                    max_concurrent,
                    name=name,
                    max_wait=settings.bulkhead_max_wait,
                    clock=self.clock,
                    backend=settings.bulkhead_backend,
                    shared_dir=settings.shared_dir,
                )
                self.bulkheads[name] = found
        return found

    def retry(self, name: str, policy: Retry) -> Retry:
        """``policy`` on the retry budget of operation ``name``: one budget per operation,
        made on first use (on the registry's clock), shared by every function decorated
        as it."""
        with lock():
            budget = _instances.retries.get(name)
            if budget is None:
                own = policy.with_own_budget(self.clock)
                _instances.retries[name] = own
                return own
            return policy.sharing_budget_of(budget)

    def remember(self, decorated: _Decorated) -> None:
        with lock():
            self._decorated.append(decorated)

    def check(self, new: Config) -> None:
        """Refuses a configuration that cannot be applied whole: one that would make a
        decorated function without a fallback fail-safe (it would have nothing to
        return), or move a breaker's or limiter's state to another backend (its state
        lives where it was built). Every module's settings are resolved here, so that
        nothing can fail once applying has begun."""
        with lock():
            breakers = list(self._breaker_modules.items())
            limiters = list(self.limiters)
            decorated = list(self._decorated)
        for each in decorated:
            if not each.has_fallback and new.module(each.module).fail_safe_defaults:
                raise _fail_safe_without_fallback(new, each.module, each.qualname)
            _refuse_a_new_policy(new, each)
        for name, module in breakers:
            wanted = breaker_parameters(new.module(module)).placement
            built = self._placements[("breaker", name)]
            _refuse_a_move(
                new, module, f"breaker {name!r}", built, wanted, "circuit_breaker_backend"
            )
        for module in limiters:
            wanted = limiter_parameters(new.module(module)).placement
            built = self._placements[("limiter", module)]
            _refuse_a_move(new, module, f"limiter {module!r}", built, wanted, "rate_limit_backend")

    def apply(self, new: Config) -> None:
        """Brings every breaker, limiter and decorated function in line with ``new``."""
        with lock():
            breakers = [(b, self._breaker_modules[n]) for n, b in self.breakers.items()]
            limiters = list(self.limiters.items())
            decorated = list(self._decorated)
        for breaker, module in breakers:
            update_breaker(breaker, new.module(module))
        for module, limiter in limiters:
            update_limiter(limiter, new.module(module))
        for each in decorated:
            settings = new.module(each.module)
            fail_safe = settings.fail_safe_defaults
            each.guard.set_fallback_on_failure(each.fallback_on_failure or fail_safe)
            operation = each.guard.operation
            if operation is not None:
                operation.set_enabled(settings.metrics_enabled)
            bulkhead = each.guard.bulkhead
            if each.bulkhead_from_config and bulkhead is not None:
                # (check() refused a configuration that drops the cap.)
                assert settings.max_concurrent is not None
                bulkhead._update(settings.max_concurrent, settings.bulkhead_max_wait)
            retry = each.guard.retry
            if each.retry_from_config and retry is not None:
                # retry_attempts = 1 (or no retry_on) turns retries off: one attempt.
                retry._update_from(build_retry(settings) or Retry(1))


def _refuse_a_move(
    new: Config, module: str, what: str, built: Placement, wanted: Placement, backend_key: str
) -> None:
    """A reload cannot move an object's state: it would split one budget (or one
    breaker) in two while the configuration says otherwise. Refused, never ignored."""
    changed = built.differences(wanted, backend_key)
    if changed:
        key, was, asked = changed[0]
        raise ConfigError(
            f"the {what} already lives on {built.backend!r} with {key} = {was!r}; a running "
            f"process cannot move it to {asked!r} (restart the process to change {key})",
            source=new._where(module, key),
            table=f"{TABLE}.{module}",
            key=key,
        )


def _refuse_a_new_policy(new: Config, each: _Decorated) -> None:
    """A reload changes a decorated function's bulkhead and retries in place, and turns
    retries off, but cannot add a policy the function was decorated without, nor take its
    bulkhead away or move its slots: its wrapper was built without (or around) it.
    Refused, never ignored."""
    settings = new.module(each.module)
    bulkhead = each.guard.bulkhead
    problem: tuple[str, str] | None = None
    if each.bulkhead_from_config and (bulkhead is None) != (settings.max_concurrent is None):
        what = "add a bulkhead to" if bulkhead is None else "remove the bulkhead of"
        problem = (
            "max_concurrent",
            (
                f"a running process cannot {what} {each.qualname}, decorated "
                f"{'without' if bulkhead is None else 'with'} one (restart the process to "
                "change whether max_concurrent is set)"
            ),
        )
    elif each.bulkhead_from_config and bulkhead is not None:
        backend = getattr(bulkhead, "backend", "memory")
        if settings.bulkhead_backend != backend:
            problem = (
                "bulkhead_backend",
                (
                    f"the bulkhead of {each.qualname} already keeps its slots on {backend!r}; "
                    f"a running process cannot move them to {settings.bulkhead_backend!r} "
                    "(restart the process to change bulkhead_backend)"
                ),
            )
    adds_retries = each.guard.retry is None and build_retry(settings) is not None
    if problem is None and each.retry_from_config and adds_retries:
        problem = (
            "retry_attempts",
            (
                f"a running process cannot add retries to {each.qualname}, decorated "
                "without them (restart the process to turn retries on)"
            ),
        )
    if problem is not None:
        key, message = problem
        raise ConfigError(
            message, source=new._where(each.module, key), table=f"{TABLE}.{each.module}", key=key
        )


def _fail_safe_without_fallback(new: Config, module: str, qualname: str) -> ConfigError:
    return ConfigError(
        f"module {module!r} is fail-safe, so {qualname} needs a fallback: "
        f"@with_resilience({module!r}, ..., fallback=...)",
        source=new._where(module, "fail_safe_defaults"),
        table=f"{TABLE}.{module}",
        key="fail_safe_defaults",
    )


_registry = ModuleRegistry()


class _Follower:
    """Forwards configuration changes to whichever registry is in use."""

    def check(self, new: Config) -> None:
        _registry.check(new)

    def apply(self, new: Config) -> None:
        _registry.apply(new)


add_listener(_Follower())


def _use_registry(registry: ModuleRegistry) -> ModuleRegistry:
    """Puts ``registry`` in use and returns the previous one (for test isolation)."""
    global _registry
    previous, _registry = _registry, registry
    return previous


# ---------------------------------------------------------------------------------------


def create_module_circuit_breaker(module: str, operation: str) -> CircuitBreaker:
    """The breaker of ``module``'s ``operation``, registered as ``"module.operation"`` and
    configured from ``[resilience.<module>]``; the same object on every call."""
    return _registry.breaker(module, operation)


def create_module_rate_limiter(module: str, operation: str | None = None) -> RateLimiter:
    """The rate limiter of ``module``, configured from ``[resilience.<module>]``. Every
    operation of a module shares it: the module's rate budget is one budget."""
    if operation is not None:
        _name(operation, "operation")
    return _registry.limiter(module)


def get_all_circuit_breakers() -> dict[str, CircuitBreaker]:
    """The module breakers made so far, by name (``"module.operation"``)."""
    return dict(_registry.breakers)


def get_all_rate_limiters() -> dict[str, RateLimiter]:
    """The module rate limiters made so far, by module name."""
    return dict(_registry.limiters)


def _operation_stats(name: str, enabled: bool) -> OperationStats:
    """The stats a guarded function records into, switched by its module's
    ``metrics_enabled`` (a reload switches them again)."""
    stats = _instances.operation(name)
    stats.set_enabled(enabled)
    return stats


def _manual_async_sleep(clock: ManualClock) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        import asyncio  # here: a caller that never awaits need not import it

        clock.advance(seconds)
        await asyncio.sleep(0)

    return sleep


@overload
def with_resilience(
    module: str,
    operation: str,
    *,
    use_rate_limiter: bool = ...,
    use_circuit_breaker: bool = ...,
    max_wait: float = ...,
    cost: int = ...,
    fallback_on_failure: bool = ...,
    priority: str | None = ...,
    max_concurrent: int | None = ...,
    retry: Retry | None = ...,
    timeout: float | None = ...,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


@overload
def with_resilience(
    module: str,
    operation: str,
    *,
    use_rate_limiter: bool = ...,
    use_circuit_breaker: bool = ...,
    fallback: Any,
    max_wait: float = ...,
    cost: int = ...,
    fallback_on_failure: bool = ...,
    priority: str | None = ...,
    max_concurrent: int | None = ...,
    retry: Retry | None = ...,
    timeout: float | None = ...,
) -> Callable[[Callable[P, R]], Callable[P, Any]]: ...


def with_resilience(
    module: str,
    operation: str,
    *,
    use_rate_limiter: bool = False,
    use_circuit_breaker: bool = True,
    fallback: Any = MISSING,
    max_wait: float = 0.0,
    cost: int = 1,
    fallback_on_failure: bool = False,
    priority: str | None = None,
    max_concurrent: int | None = None,
    retry: Retry | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, Any]]:
    """Guards a sync or async function (or method) with ``module``'s settings.

    ``use_circuit_breaker``: the breaker ``"module.operation"`` (an open circuit raises
    ``CircuitBreakerError``). ``use_rate_limiter``: a token from the module's limiter
    (none left raises ``RateLimitExceeded`` carrying ``retry_after``), waiting up to
    ``max_wait`` seconds for one first. ``fallback`` (a value, or a callable taking the
    function's arguments) is returned instead of raising when the call is refused, and
    also when it fails if ``fallback_on_failure`` or the module has
    ``fail_safe_defaults = true`` (such a module requires a fallback). Every call's
    latency, success or failure by exception type is recorded natively under
    ``"module.operation"`` unless ``metrics_enabled = false``. ``priority="high"`` (a
    cancel, a risk reduction) may use the limiter's ``rate_limit_reserve``; other calls
    may not.

    ``max_concurrent`` (or the module's ``max_concurrent`` key) caps the calls of the
    operation in flight at once: a call over the cap waits up to ``bulkhead_max_wait``
    seconds for a slot, then is refused with ``BulkheadFull``. ``retry=Retry(...)`` (else
    the module's ``retry_*`` keys) tries the exception classes it names again, within a
    retry budget of the operation's own. Both are read when the function is decorated.
    ``timeout`` seconds cancels an ``async def`` call that runs longer (a failure,
    raising ``TimeoutError``); a sync function cannot be cancelled, so it is refused
    there: use ``circuit_breaker_slow_call_duration``. The order of these policies is the
    README's: fallback, retry, breaker, limiter, bulkhead, timeout, the call.

    The module's settings are read when the function is decorated (loading them as
    ``configure()`` without a path would, if nothing was configured yet); a later
    ``configure()`` updates the breaker, the limiter, the enabled switches and the
    fail-safe behaviour, ``metrics_enabled``, the bulkhead and the retries in place.
    """
    _name(module, "module")
    _name(operation, "operation")
    has_fallback = fallback is not MISSING
    if fallback_on_failure and not has_fallback:
        raise ValueError("fallback_on_failure=True needs a fallback=")

    def decorate(func: Callable[P, R]) -> Callable[P, Any]:
        if not callable(func):
            raise TypeError(f"with_resilience decorates a callable, got {func!r}")
        # Held from reading the settings to registering the function: a configure()
        # running meanwhile either comes first (and is read) or checks and updates it.
        with lock():
            return _decorate(func)

    def _decorate(func: Callable[P, R]) -> Callable[P, Any]:
        in_force = active()
        settings = in_force.module(module)
        qualname = getattr(func, "__qualname__", repr(func))
        if settings.fail_safe_defaults and not has_fallback:
            raise _fail_safe_without_fallback(in_force, module, qualname)
        registry = _registry
        name = f"{module}.{operation}"
        clock = registry.clock
        breaker = registry.breaker(module, operation) if use_circuit_breaker else None
        limiter = registry.limiter(module) if use_rate_limiter else None
        cap = settings.max_concurrent if max_concurrent is None else max_concurrent
        bulkhead = None if cap is None else registry.bulkhead(name, cap, settings)
        policy = build_retry(settings) if retry is None else retry
        own_retry = None if policy is None else registry.retry(name, policy)
        decorated = guard(
            func,
            breaker=breaker,
            limiter=limiter,
            cost=cost,
            priority=priority,
            operation=_operation_stats(name, settings.metrics_enabled),
            fallback=fallback,
            fallback_on_failure=has_fallback
            and (fallback_on_failure or settings.fail_safe_defaults),
            max_wait=max_wait,
            sleep=clock.sleep if clock is not None else None,
            async_sleep=_manual_async_sleep(clock) if clock is not None else None,
            on_reject=_rejection_log(name, breaker, limiter),
            bulkhead=bulkhead,
            retry=own_retry,
            timeout=timeout,
            on_timeout=functools.partial(_instances.count_timeout, name),
        )
        native = getattr(decorated, "guard", decorated)
        registry.remember(
            _Decorated(
                module,
                qualname,
                native,
                has_fallback,
                fallback_on_failure,
                bulkhead_from_config=max_concurrent is None,
                retry_from_config=retry is None,
            )
        )
        return typed(decorated, func)

    return decorate
