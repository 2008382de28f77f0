"""Resilience settings from ``config.toml`` and the environment.

Global settings live in ``[resilience]``; ``[resilience.<module>]`` overrides them for one
module. Environment variables override both: ``PEAK_TRADE_<KEY>`` a global key,
``PEAK_TRADE_<MODULE>__<KEY>`` one module's key (the module upper-cased, every character
outside A-Z0-9 replaced by ``_``). Most specific first: module from the environment, module
from the file, global from the environment, global from the file, built-in default.
Other ``PEAK_TRADE_*`` variables belong to the application and are left alone, unless one
is a near miss of a key (a typo that would otherwise be silently ignored).

``configure(path=None)`` loads and applies a file process-wide; without a path it takes
``$PEAK_TRADE_CONFIG``, then ``./config.toml``, then the built-in defaults. Calling it again
updates the breakers and limiters already made in place. ``load_config(path)`` returns the
validated settings without applying them.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import sys
import threading
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_PATH",
    "ENV_CONFIG_PATH",
    "ENV_PREFIX",
    "Config",
    "ConfigError",
    "Settings",
    "active",
    "configure",
    "env_name",
    "load_config",
    "redact_url",
]

logger = logging.getLogger("peak_resilience.config")

#: The environment variable naming the configuration file.
ENV_CONFIG_PATH = "PEAK_TRADE_CONFIG"
#: The prefix of every environment override.
ENV_PREFIX = "PEAK_TRADE_"
#: Where ``configure()`` looks when neither a path nor ``$PEAK_TRADE_CONFIG`` is given.
DEFAULT_PATH = Path("config.toml")
#: The table of the configuration file that is ours; the rest belongs to the application.
TABLE = "resilience"

Backend = Literal["memory", "shared", "redis"]
OnBackendError = Literal["fail_closed", "fail_open", "local"]
WindowType = Literal["count", "time"]


class ConfigError(ValueError):
    """A configuration that cannot be used: names the file (or environment variable), the
    table and the key that are wrong, and what would be right."""

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        table: str | None = None,
        key: str | None = None,
    ) -> None:
        self.problem = problem
        self.source = source
        self.table = table
        self.key = key
        where = [part for part in (source, f"[{table}]" if table else None, key) if part]
        super().__init__(f"{' '.join(where)}: {problem}" if where else problem)


# ---------------------------------------------------------------------------------------
# The schema: one field per key. The annotation is the key's type, ``key()`` its default,
# its check of the value and whether ``[resilience.<module>]`` may override it.

Check = Callable[[Any], "str | None"]


def key(default: Any, check: Check | None = None, *, per_module: bool = True) -> Any:
    """Declares one configuration key (a dataclass field carrying its schema)."""
    return dataclasses.field(default=default, metadata={"check": check, "per_module": per_module})


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be at least {low:g}, got {value!r}"


def positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value!r}"


def at_most(high: int) -> Check:
    def check(value: int) -> str | None:
        if value < 1 or value > high:
            return f"must be between 1 and {high}, got {value!r}"
        return None

    return check


def fraction(value: float) -> str | None:
    if 0 < value <= 1:
        return None
    return f"must be a fraction greater than 0 and at most 1 (0.5 = half), got {value!r}"


def optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def rate_limit_specs(value: tuple[str, ...]) -> str | None:
    """Each entry a window such as "1200/60s" (issue 8), at most four."""
    from peak_resilience._windows import parse_limit

    if len(value) > 4:
        return f"holds at most 4 windows, got {len(value)}"
    for spec in value:
        try:
            parse_limit(spec)
        except ValueError as err:
            return str(err)
    return None


_PROMETHEUS_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


def metric_prefix(value: str) -> str | None:
    if _PROMETHEUS_NAME.match(value):
        return None
    return f"must be a Prometheus metric name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*), got {value!r}"


#: Keys whose values are secrets: never shown in an error, a log line or ``config show``.
SECRET_KEYS = frozenset({"health_token", "redis_url"})

_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` as it may be shown in a log line, an error or ``config show``: masked as
    written, without parsing the host or the port (a bad port must not make the masking
    fail): ``user:***@`` keeps the user name, a lone ``secret@`` (a password to some
    clients) becomes ``***@``, and redis-py's ``?password=`` is masked too."""
    scheme, sep, rest = url.partition("://")
    if sep:
        authority_end = len(rest)
        for delimiter in "/?#":
            found = rest.find(delimiter)
            if found != -1:
                authority_end = min(authority_end, found)
        authority, tail = rest[:authority_end], rest[authority_end:]
        userinfo, at, hostport = authority.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            authority = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
        url = f"{scheme}://{authority}{tail}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


#: The most half-open trial calls a breaker can admit (the native limit).
MAX_HALF_OPEN_CALLS = (1 << 20) - 1


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings in force for one module (or, for ``Config.globals``, for all)."""

    circuit_breaker_enabled: bool = key(True)
    circuit_breaker_threshold: int = key(5, at_least(1))
    circuit_breaker_timeout: float = key(60.0, positive)
    half_open_max_calls: int = key(1, at_most(MAX_HALF_OPEN_CALLS))
    rate_limit_enabled: bool = key(True)
    rate_limit_requests: int = key(100, at_least(1))
    rate_limit_window: float = key(60.0, positive)
    #: Tokens a full bucket holds; None means ``rate_limit_requests``.
    rate_limit_burst: int | None = key(None, optional(at_least(1)))
    #: Several windows, all or nothing ("1200/60s", "50/10s", "160000/1d"; units s/m/h/d).
    #: When set, they are the budget and rate_limit_requests/_window/_burst are not used.
    rate_limits: tuple[str, ...] = key((), rate_limit_specs)
    #: Tokens of every window kept for priority="high" calls (cancels, risk reductions).
    rate_limit_reserve: int = key(0, at_least(0))
    metrics_enabled: bool = key(True)
    #: A rejected or failed call returns the decorator's fallback instead of raising.
    fail_safe_defaults: bool = key(False)
    circuit_breaker_backend: Backend = key("memory")
    rate_limit_backend: Backend = key("memory")
    redis_url: str | None = key(None, optional(non_empty))
    shared_dir: str = key("/dev/shm/peak_resilience", non_empty)
    on_backend_error: OnBackendError = key("local")
    health_token: str | None = key(None, optional(non_empty), per_module=False)
    metrics_prefix: str = key("peak_trade", metric_prefix, per_module=False)
    # Issue 8, circuit breaking (each off unless set).
    #: Share of the calls in the window that opens a breaker (0.5 = half); None: only
    #: the consecutive-failure threshold opens it.
    circuit_breaker_failure_rate: float | None = key(None, optional(fraction))
    #: Calls the window must hold before the failure rate can open the breaker.
    circuit_breaker_minimum_calls: int = key(10, at_least(1))
    #: "count": the rate over the last ``circuit_breaker_window_calls`` calls; "time":
    #: over the last ``circuit_breaker_window_seconds`` seconds.
    circuit_breaker_window_type: WindowType = key("count")
    circuit_breaker_window_calls: int = key(100, at_least(1))
    circuit_breaker_window_seconds: float = key(60.0, positive)
    #: A successful call taking at least this many seconds counts as a failure.
    circuit_breaker_slow_call_duration: float | None = key(None, optional(positive))
    #: Each failed trial in a row multiplies the open period by this (1: no back-off)...
    circuit_breaker_backoff_multiplier: float = key(1.0, at_least(1))
    #: ...up to this many seconds.
    circuit_breaker_max_timeout: float = key(600.0, positive)
    #: Decide but do not enforce: every call runs, would-be refusals are counted.
    circuit_breaker_metrics_only: bool = key(False)

    @property
    def burst(self) -> int:
        """Tokens a full bucket holds (``rate_limit_burst``, else ``rate_limit_requests``)."""
        return self.rate_limit_requests if self.rate_limit_burst is None else self.rate_limit_burst

    @property
    def windows(self) -> tuple[tuple[int, float, int], list[tuple[int, float]]]:
        """The budget's first window as (max_requests, window_seconds, burst) and the
        others as (max_requests, window_seconds): ``rate_limits`` when set, else the pair."""
        if not self.rate_limits:
            return (self.rate_limit_requests, self.rate_limit_window, self.burst), []
        from peak_resilience._windows import parse_limits

        (first, length), *rest = parse_limits(self.rate_limits)
        return (first, length, first), rest


@dataclasses.dataclass(frozen=True)
class _Key:
    name: str
    type: Any
    check: Check | None
    per_module: bool


def _schema() -> dict[str, _Key]:
    hints = typing.get_type_hints(Settings)
    return {
        f.name: _Key(f.name, hints[f.name], f.metadata["check"], f.metadata["per_module"])
        for f in dataclasses.fields(Settings)
    }


SCHEMA: dict[str, _Key] = _schema()
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}


# ---------------------------------------------------------------------------------------
# Values: from TOML (typed already) and from the environment (strings).


def _describe(tp: Any) -> str:
    if tp is bool:
        return "a boolean (true or false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp == tuple[str, ...]:
        return "a list of strings"
    return str(tp)


def _inner(tp: Any) -> tuple[Any, bool]:
    """The type behind ``X | None`` and whether None is allowed."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _typed(value: Any, tp: Any) -> tuple[Any, str | None]:
    """The value as type ``tp`` (an int is a float too), or the reason it is not one."""
    if tp is bool:
        return value, None if isinstance(value, bool) else f"must be {_describe(tp)}"
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value, None if ok else f"must be {_describe(tp)}"
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            return value, None if math.isfinite(value) else "must be a finite number"
        return value, f"must be {_describe(tp)}"
    if tp is str:
        return value, None if isinstance(value, str) else f"must be {_describe(tp)}"
    if typing.get_origin(tp) is Literal:
        return value, None if value in typing.get_args(tp) else f"must be {_describe(tp)}"
    if tp == tuple[str, ...]:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        return (tuple(value) if ok else value), None if ok else f"must be {_describe(tp)}"
    raise TypeError(f"no conversion for {tp!r}")  # a schema bug, not a user error


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_text(text: str, tp: Any) -> tuple[Any, str | None]:
    """An environment variable's text as type ``tp``."""
    stripped = text.strip()
    if tp is bool:
        if stripped.lower() in _TRUE:
            return True, None
        if stripped.lower() in _FALSE:
            return False, None
        return text, "must be a boolean (true/false, 1/0, yes/no, on/off)"
    if tp is int:
        try:
            return int(stripped, 10), None
        except ValueError:
            return text, "must be an integer"
    if tp is float:
        try:
            return _typed(float(stripped), float)
        except ValueError:
            return text, "must be a number"
    if tp == tuple[str, ...]:
        # PEAK_TRADE_RATE_LIMITS="1200/60s,50/10s"
        return tuple(part.strip() for part in text.split(",") if part.strip()), None
    return _typed(text, tp)


def _checked(name: str, value: Any, *, from_env: bool, where: dict[str, str | None]) -> Any:
    spec = SCHEMA[name]
    tp, nullable = _inner(spec.type)
    if from_env:
        value, problem = _from_text(value, tp)
    else:
        value, problem = _typed(value, tp)
    if problem is None and spec.check is not None and not (nullable and value is None):
        problem = spec.check(value)
    if problem is not None:
        if problem.startswith("must be") and "got" not in problem:
            # A secret's value is never echoed, even a mistyped one: only its type.
            shown = f"a {type(value).__name__}" if name in SECRET_KEYS else repr(value)
            problem = f"{problem}, got {shown}"
        raise ConfigError(problem, **where)
    return value


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, SCHEMA, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(SCHEMA)}"


def env_name(module: str) -> str:
    """The part of an environment variable that names ``module``: ``live-eu`` -> ``LIVE_EU``."""
    return re.sub(r"[^A-Z0-9]", "_", module.upper())


# ---------------------------------------------------------------------------------------


class Config:
    """Validated settings: the global ones and, through ``module(name)``, any module's."""

    def __init__(
        self,
        source: str | None,
        global_file: Mapping[str, Any],
        global_env: Mapping[str, Any],
        module_file: Mapping[str, Mapping[str, Any]],
        module_env: Mapping[str, Mapping[str, Any]],
        env_sources: Mapping[tuple[str | None, str], str],
    ) -> None:
        #: The file the settings came from; None for built-in defaults only.
        self.source = source
        self._global_file = global_file
        self._global = {**DEFAULTS, **global_file, **global_env}
        self._module_file = module_file
        self._module_env = module_env
        self._env_sources = env_sources
        self._cache: dict[str, Settings] = {}
        self._lock = threading.Lock()
        self.globals = self._build(None, self._global)

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules that have a table in the file."""
        return tuple(self._module_file)

    def module(self, name: str) -> Settings:
        """The settings in force for module ``name`` (a module without a table of its own
        gets the global ones, with any ``PEAK_TRADE_<MODULE>__<KEY>`` applied)."""
        settings = self._cache.get(name)
        if settings is None:
            values = {
                **self._global,
                **self._module_file.get(name, {}),
                **self._module_env.get(env_name(name), {}),
            }
            settings = self._build(name, values)
            with self._lock:
                settings = self._cache.setdefault(name, settings)
        return settings

    def _build(self, module: str | None, values: dict[str, Any]) -> Settings:
        settings = Settings(**values)
        table = TABLE if module is None else f"{TABLE}.{module}"
        for backend_key in ("circuit_breaker_backend", "rate_limit_backend"):
            if getattr(settings, backend_key) == "redis" and settings.redis_url is None:
                raise ConfigError(
                    f"{backend_key} = 'redis' needs redis_url (e.g. 'redis://127.0.0.1:6379/0')",
                    source=self._where(module, backend_key),
                    table=table,
                    key="redis_url",
                )
        refused = _breaker_problem(settings)
        if refused is not None:
            name, reason = refused
            raise ConfigError(reason, source=self._where(module, name), table=table, key=name)
        if settings.rate_limit_enabled:
            problem = _quota_problem(settings)
            if problem is not None:
                raise ConfigError(
                    problem,
                    source=self._where(module, "rate_limit_requests"),
                    table=table,
                    key="rate_limit_requests",
                )
        return settings

    def _where(self, module: str | None, name: str) -> str | None:
        """Which source set ``name`` for ``module`` (for error messages)."""
        if module is not None:
            env = self._env_sources.get((env_name(module), name))
            if env is not None:
                return f"environment {env}"
            if name in self._module_file.get(module, {}):
                return self.source
        env = self._env_sources.get((None, name))
        if env is not None:
            return f"environment {env}"
        return self.source

    def origin(self, module: str | None, name: str) -> str:
        """Where the value in force for key ``name`` comes from: ``environment VAR``,
        ``FILE [resilience.module]``, ``FILE [resilience]`` or ``default``."""
        if module is not None:
            env = self._env_sources.get((env_name(module), name))
            if env is not None:
                return f"environment {env}"
            if name in self._module_file.get(module, {}):
                return f"{self.source} [{TABLE}.{module}]"
        env = self._env_sources.get((None, name))
        if env is not None:
            return f"environment {env}"
        if name in self._global_file:
            return f"{self.source} [{TABLE}]"
        return "default"

    def __repr__(self) -> str:
        return f"Config(source={self.source!r}, modules={list(self.modules)!r})"


def _breaker_problem(settings: Settings) -> tuple[str, str] | None:
    """The native breaker's own verdict on the settings (it refuses a duration it cannot
    represent in nanoseconds, e.g. 1e308 or 1e-300 seconds, and thresholds past
    2**64 - 1): refused here, not when the first breaker is built from them."""
    from peak_resilience._factory import _policy
    from peak_resilience._native import CircuitBreaker

    try:
        CircuitBreaker(
            settings.circuit_breaker_threshold,
            settings.circuit_breaker_timeout,
            "config-check",
            settings.half_open_max_calls,
            **_policy(settings),
        )
    except (ValueError, OverflowError) as err:
        native = str(err).split(" ", 1)[0]
        return _NATIVE_BREAKER_KEYS.get(native, "circuit_breaker_timeout"), str(err)
    return None


#: The native breaker's parameter names -> the keys they come from (for error messages).
_NATIVE_BREAKER_KEYS = {
    "failure_threshold": "circuit_breaker_threshold",
    "recovery_timeout": "circuit_breaker_timeout",
    "half_open_max_calls": "half_open_max_calls",
    "failure_rate_threshold": "circuit_breaker_failure_rate",
    "minimum_calls": "circuit_breaker_minimum_calls",
    "window_size": "circuit_breaker_window_seconds",
    "slow_call_duration": "circuit_breaker_slow_call_duration",
    "backoff_multiplier": "circuit_breaker_backoff_multiplier",
    "max_recovery_timeout": "circuit_breaker_max_timeout",
}


def _quota_problem(settings: Settings) -> str | None:
    """The native bucket's own verdict on the rate (it refuses rates it cannot represent)."""
    from peak_resilience._native import TokenBucket

    try:
        TokenBucket(settings.rate_limit_requests, settings.rate_limit_window, settings.burst)
    except (ValueError, OverflowError) as err:
        return f"rate_limit_requests/rate_limit_window/rate_limit_burst: {err}"
    (first, length, burst), rest = settings.windows
    try:
        TokenBucket(first, length, burst).set_windows(
            first, length, burst, windows=rest, priority_reserve=settings.rate_limit_reserve
        )
    except ValueError as err:
        keys = "rate_limits/rate_limit_reserve" if settings.rate_limits else "rate_limit_reserve"
        return f"{keys}: {err}"
    return None


def _parse_table(
    values: Mapping[str, Any], *, source: str, table: str, module: bool
) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        where: dict[str, str | None] = {"source": source, "table": table, "key": name}
        spec = SCHEMA.get(name)
        if spec is None:
            raise ConfigError("unknown key" + _suggest(name), **where)
        if module and not spec.per_module:
            raise ConfigError(
                f"{name} is a global setting: set it in [{TABLE}], not per module", **where
            )
        parsed[name] = _checked(name, value, from_env=False, where=where)
    return parsed


def _parse_env(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[tuple[str | None, str], str]]:
    global_env: dict[str, Any] = {}
    module_env: dict[str, dict[str, Any]] = {}
    sources: dict[tuple[str | None, str], str] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable == ENV_CONFIG_PATH:
            continue
        rest = variable[len(ENV_PREFIX) :]
        module, sep, upper_key = rest.partition("__")
        if not sep:
            module, upper_key = "", rest
        name = upper_key.lower()
        table = f"{TABLE}.{module.lower()}" if module else TABLE
        where: dict[str, str | None] = {
            "source": f"environment {variable}",
            "table": table,
            "key": name,
        }
        spec = SCHEMA.get(name)
        if spec is None:
            if module:
                # The double underscore is our syntax: this variable was meant for us.
                raise ConfigError("unknown key" + _suggest(name), **where)
            # Other PEAK_TRADE_* variables belong to the application; one that is a
            # near miss of a key is a typo that would otherwise be silently ignored.
            close = difflib.get_close_matches(name, SCHEMA, n=1, cutoff=0.85)
            if close:
                raise ConfigError(
                    f"unknown key; did you mean {ENV_PREFIX}{close[0].upper()}?", **where
                )
            continue  # PEAK_TRADE_* variables of the application itself
        if module and not spec.per_module:
            raise ConfigError(
                f"{name} is a global setting: set {ENV_PREFIX}{upper_key} instead", **where
            )
        value = _checked(name, environ[variable], from_env=True, where=where)
        if module:
            module_env.setdefault(module, {})[name] = value
        else:
            global_env[name] = value
        sources[(module or None, name)] = variable
    return global_env, module_env, sources


def _find_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path)
    from_env = environ.get(ENV_CONFIG_PATH)
    if from_env:
        found = Path(from_env)
        if not found.is_file():
            raise ConfigError(
                f"{ENV_CONFIG_PATH} names {from_env!r}, which is not a readable file",
                source=f"environment {ENV_CONFIG_PATH}",
            )
        return found
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Reads and validates the settings without applying them.

    ``path`` None looks where ``configure()`` would (``$PEAK_TRADE_CONFIG``, then
    ``./config.toml``, then built-in defaults). Environment overrides come from
    ``environ`` (default ``os.environ``). Raises ``ConfigError`` on any bad input.
    """
    environ = os.environ if environ is None else environ
    found = _find_path(path, environ)
    document: dict[str, Any] = {}
    source = None
    if found is not None:
        source = str(found)
        try:
            with open(found, "rb") as handle:
                document = tomllib.load(handle)
        except OSError as err:
            raise ConfigError(f"cannot read the file: {err.strerror}", source=source) from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"not valid TOML: {err}", source=source) from err
        except ValueError as err:  # a path with a NUL character in it
            raise ConfigError(f"cannot read the file: {err}", source=source) from err
    section = document.get(TABLE, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{TABLE} must be a table ([{TABLE}]), got {section!r}", source=source)
    scalars = {k: v for k, v in section.items() if not isinstance(v, dict)}
    global_file = _parse_table(scalars, source=source or "", table=TABLE, module=False)
    module_file: dict[str, dict[str, Any]] = {}
    for module, table in section.items():
        if not isinstance(table, dict):
            continue
        name = f"{TABLE}.{module}"
        if not module:
            raise ConfigError("a module name must not be empty", source=source, table=name)
        nested = [k for k, v in table.items() if isinstance(v, dict)]
        if nested:
            raise ConfigError(
                f"[{name}.{nested[0]}]: module tables are one level deep; put the keys in [{name}]",
                source=source,
                table=name,
                key=nested[0],
            )
        module_file[module] = _parse_table(table, source=source or "", table=name, module=True)
    global_env, module_env, env_sources = _parse_env(environ)
    config = Config(source, global_file, global_env, module_file, module_env, env_sources)
    for module in module_file:
        config.module(module)  # validates each module's combined settings now
    return config


# ---------------------------------------------------------------------------------------
# The configuration in force, and who is told when it changes.


class _Listener(typing.Protocol):
    def check(self, config: Config) -> None:
        """Raises ConfigError if ``config`` cannot be applied (nothing is changed)."""

    def apply(self, config: Config) -> None:
        """Brings live objects in line with ``config`` (in place)."""


_active: Config | None = None
_listeners: list[_Listener] = []
_configure_lock = threading.RLock()


def lock() -> threading.RLock:
    """Held while a configuration is checked and applied. Whoever builds objects from the
    configuration in force holds it too, so that no object is built from settings that a
    concurrent ``configure()`` has just replaced (and so missed by its update)."""
    return _configure_lock


def add_listener(listener: _Listener) -> None:
    """Registers an object told of every new configuration (the module registry)."""
    _listeners.append(listener)


def configure(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Loads settings (see ``load_config``) and applies them process-wide.

    Breakers and limiters already made are updated in place: their state and counts stay,
    their thresholds, timeouts and rates change. On a ``ConfigError`` the configuration in
    force stays as it was.
    """
    global _active
    with _configure_lock:
        config = load_config(path, environ=environ)
        for listener in _listeners:
            listener.check(config)
        _active = config
        for listener in _listeners:
            listener.apply(config)
    logger.info("resilience configuration loaded from %s", config.source or "built-in defaults")
    return config


def active() -> Config:
    """The configuration in force; the first call without ``configure()`` loads it as
    ``configure()`` without a path would."""
    config = _active
    if config is None:
        with _configure_lock:
            config = _active if _active is not None else configure()
    return config


def current() -> Config | None:
    """The configuration in force, or None if none was loaded yet (never loads one)."""
    return _active


def _swap(config: Config | None) -> Config | None:
    """Replaces the configuration in force without telling anyone; returns the old one.
    For test isolation (``peak_resilience.testing.fresh_resilience``)."""
    global _active
    with _configure_lock:
        previous, _active = _active, config
    return previous
