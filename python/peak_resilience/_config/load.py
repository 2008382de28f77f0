"""Reading a configuration file and the environment into validated settings.

Global settings live in ``[resilience]``; ``[resilience.<module>]`` overrides them for one
module. Environment variables override both (see ``environment``). Most specific first:
module from the environment, module from the file, global from the environment, global
from the file, built-in default. ``load_config(path)`` returns the validated settings
(a ``Config``) without applying them; ``active`` applies them.
"""

from __future__ import annotations

import codecs
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peak_resilience._config.environment import ENV_CONFIG_PATH, env_name, parse_env
from peak_resilience._config.errors import ConfigError
from peak_resilience._config.parameters import breaker_parameters, limiter_parameters
from peak_resilience._config.schema import DEFAULTS, NATIVE_BREAKER_KEYS, SCHEMA, TABLE, Settings
from peak_resilience._config.values import checked, suggest
from peak_resilience._native import CircuitBreaker, TokenBucket

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["DEFAULT_PATH", "Config", "load_config"]

#: The keys that give the rate as one window (``rate_limit_burst`` only shapes it).
_RATE_PAIR = ("rate_limit_requests", "rate_limit_window")

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
        self._global_env = global_env
        self._global = {**DEFAULTS, **global_file, **global_env}
        self._module_file = module_file
        self._module_env = module_env
        self._env_sources = env_sources
        self._cache: dict[str, Settings] = {}
        self._lock = threading.Lock()
        self.globals = self._build(None, self._rate_in_force(None, self._global))

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
            settings = self._build(name, self._rate_in_force(name, values))
            with self._lock:
                settings = self._cache.setdefault(name, settings)
        return settings

    def _layers(self, module: str | None) -> list[Mapping[str, Any]]:
        """The layers that set ``module``'s values, least specific first."""
        layers: list[Mapping[str, Any]] = [self._global_file, self._global_env]
        if module is not None:
            layers.append(self._module_file.get(module, {}))
            layers.append(self._module_env.get(env_name(module), {}))
        return layers

    def _rate_layer(self, module: str | None) -> Mapping[str, Any] | None:
        """The most specific layer that sets the rate, as ``rate_limits`` or as the pair."""
        for layer in self._layers(module)[::-1]:
            if any(name in layer for name in ("rate_limits", *_RATE_PAIR)):
                return layer
        return None

    def _rate_in_force(self, module: str | None, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with ``rate_limits`` cleared when a more specific layer than the one
        that set them gives the rate as ``rate_limit_requests``/``rate_limit_window``: the
        most specific layer wins however the rate is written."""
        layer = self._rate_layer(module)
        if values["rate_limits"] and layer is not None and "rate_limits" not in layer:
            return {**values, "rate_limits": ()}
        return values

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
                keys, reason = problem
                name = next((k for k in keys if self._from_env(module, k)), keys[0])
                raise ConfigError(reason, source=self._where(module, name), table=table, key=name)
        return settings

    def _from_env(self, module: str | None, name: str) -> bool:
        found = self._env_sources.get((None, name))
        if module is not None:
            found = self._env_sources.get((env_name(module), name), found)
        return found is not None

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
        if name == "rate_limits" and self.rate_replaced(module):
            pair = next(k for k in _RATE_PAIR if k in (self._rate_layer(module) or {}))
            return f"replaced by {pair} ({self._written(module, pair)})"
        return self._written(module, name)

    def budget(self, module: str | None) -> str:
        """The budget ``module``'s limiter enforces, in a line (``"30/60s"``)."""
        settings = self.globals if module is None else self.module(module)
        return limiter_parameters(settings).describe()

    def _written(self, module: str | None, name: str) -> str:
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

    def rate_replaced(self, module: str | None) -> bool:
        """Whether ``rate_limits`` set in a less specific layer give way, for ``module``,
        to ``rate_limit_requests``/``rate_limit_window`` set in a more specific one."""
        settings = self.globals if module is None else self.module(module)
        written = [layer["rate_limits"] for layer in self._layers(module) if "rate_limits" in layer]
        return bool(written and written[-1]) and not settings.rate_limits

    def __repr__(self) -> str:
        return f"Config(source={self.source!r}, modules={list(self.modules)!r})"


def _breaker_problem(settings: Settings) -> tuple[str, str] | None:
    """The native breaker's own verdict on the settings (it refuses a duration it cannot
    represent in nanoseconds, e.g. 1e308 or 1e-300 seconds, and thresholds past
    2**64 - 1): refused here, not when the first breaker is built from them."""
    wanted = breaker_parameters(settings)
    try:
        CircuitBreaker(
            wanted.failure_threshold,
            wanted.recovery_timeout,
            "config-check",
            wanted.half_open_max_calls,
            **wanted.policy,
        )
    except (ValueError, OverflowError) as err:
        native = str(err).split(" ", 1)[0]
        return NATIVE_BREAKER_KEYS.get(native, "circuit_breaker_timeout"), str(err)
    return None


def _quota_problem(settings: Settings) -> tuple[tuple[str, ...], str] | None:
    """The native bucket's own verdict on the budget the limiter would get (it refuses
    rates it cannot represent): the keys to blame and why."""
    wanted = limiter_parameters(settings)
    first = wanted.first
    keys = ("rate_limits",) if settings.rate_limits else _RATE_PAIR
    try:
        bucket = TokenBucket(first.requests, first.seconds, first.burst)
    except (ValueError, OverflowError) as err:
        return keys, f"{'/'.join(keys)}: {err}"
    try:
        wanted.set_on(bucket)
    except ValueError as err:
        shown = "rate_limits/rate_limit_reserve" if settings.rate_limits else "rate_limit_reserve"
        return ("rate_limit_reserve", *keys), f"{shown}: {err}"
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


def _text(data: bytes, source: str) -> str:
    """The file's text. A UTF-8 byte-order mark (which editors on Windows write) is
    accepted; TOML itself has no place for one."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"not valid TOML: the file is not UTF-8 (byte {err.start})", source=source
        ) from err


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
                document = tomllib.loads(_text(handle.read(), source))
        except ConfigError:
            raise
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
    in_file = {env_name(module) for module in module_file}
    for variable_module in module_env:
        if variable_module not in in_file:
            # A module known only from the environment: its settings are checked now too,
            # not when its first function is decorated (or while a reload is applied).
            config.module(variable_module.lower())
    return config
