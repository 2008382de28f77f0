"""Reading a configuration file and the environment into validated settings.

Global settings live in ``[resilience]``; ``[resilience.<module>]`` overrides them for one
module. Environment variables override both (see ``environment``). Most specific first:
module from the environment, module from the file, global from the environment, global
from the file, built-in default. ``load_config(path)`` returns the validated settings
(a ``Config``) without applying them; ``active`` applies them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peak_resilience._config.environment import ENV_CONFIG_PATH, env_name, parse_env
from peak_resilience._config.errors import ConfigError
from peak_resilience._config.schema import DEFAULTS, NATIVE_BREAKER_KEYS, SCHEMA, TABLE, Settings
from peak_resilience._config.values import checked, suggest
from peak_resilience._native import CircuitBreaker, TokenBucket

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["DEFAULT_PATH", "Config", "load_config"]

#: Where ``configure()`` looks when neither a path nor ``$PEAK_TRADE_CONFIG`` is given.
DEFAULT_PATH = Path("config.toml")


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
        uses_redis = "redis" in (settings.circuit_breaker_backend, settings.rate_limit_backend)
        sentinels, master = settings.redis_sentinels, settings.redis_sentinel_master
        if uses_redis and bool(sentinels) != (master is not None):
            needed, given = (
                ("redis_sentinel_master", "redis_sentinels")
                if sentinels
                else ("redis_sentinels", "redis_sentinel_master")
            )
            raise ConfigError(
                f"{given} needs {needed}: the sentinels and the name of the master they watch",
                source=self._where(module, given),
                table=table,
                key=needed,
            )
        for backend_key in ("circuit_breaker_backend", "rate_limit_backend"):
            if getattr(settings, backend_key) == "redis" and settings.redis_location is None:
                raise ConfigError(
                    f"{backend_key} = 'redis' needs redis_url (e.g. 'redis://127.0.0.1:6379/0')"
                    " or redis_sentinels and redis_sentinel_master",
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
    try:
        CircuitBreaker(
            settings.circuit_breaker_threshold,
            settings.circuit_breaker_timeout,
            "config-check",
            settings.half_open_max_calls,
            **settings.breaker_policy,
        )
    except (ValueError, OverflowError) as err:
        native = str(err).split(" ", 1)[0]
        return NATIVE_BREAKER_KEYS.get(native, "circuit_breaker_timeout"), str(err)
    return None


def _quota_problem(settings: Settings) -> str | None:
    """The native bucket's own verdict on the rate (it refuses rates it cannot represent)."""
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
            raise ConfigError("unknown key" + suggest(name), **where)
        if module and not spec.per_module:
            raise ConfigError(
                f"{name} is a global setting: set it in [{TABLE}], not per module", **where
            )
        parsed[name] = checked(name, value, from_env=False, where=where)
    return parsed


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
    global_env, module_env, env_sources = parse_env(environ)
    config = Config(source, global_file, global_env, module_file, module_env, env_sources)
    for module in module_file:
        config.module(module)  # validates each module's combined settings now
    return config
