"""Overrides from the environment: ``PEAK_TRADE_<KEY>`` a global key,
``PEAK_TRADE_<MODULE>__<KEY>`` one module's key (the module upper-cased, every character
outside A-Z0-9 replaced by ``_``).

Other ``PEAK_TRADE_*`` variables belong to the application and are left alone, unless one
is a near miss of a key (a typo that would otherwise be silently ignored).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from peak_resilience._config.errors import ConfigError
from peak_resilience._config.schema import SCHEMA, TABLE
from peak_resilience._config.values import checked, suggest

__all__ = ["ENV_CONFIG_PATH", "ENV_PREFIX", "env_name", "parse_env"]

#: The environment variable naming the configuration file.
ENV_CONFIG_PATH = "PEAK_TRADE_CONFIG"
#: The prefix of every environment override.
ENV_PREFIX = "PEAK_TRADE_"


def env_name(module: str) -> str:
    """The part of an environment variable that names ``module``: ``live-eu`` -> ``LIVE_EU``."""
    return re.sub(r"[^A-Z0-9]", "_", module.upper())


#: What a mistyped PEAK_TRADE_CONFIG tends to look like (the part after the prefix).
_CONFIG_PATH_MISSES = ("CONFIG", "CONFIG_FILE", "CONFIG_PATH", "CONFIGFILE", "CONFIG_TOML", "CONF")


def _config_path_typo(variable: str, rest: str) -> None:
    """Refuses a near miss of ``PEAK_TRADE_CONFIG``: without this, the file it names is
    not read at all and the built-in defaults run without a word."""
    if difflib.get_close_matches(rest.upper(), _CONFIG_PATH_MISSES, n=1, cutoff=0.8):
        raise ConfigError(
            f"{variable} is not read; did you mean {ENV_CONFIG_PATH}? (the variable that "
            "names the configuration file)",
            source=f"environment {variable}",
        )


def _one_underscore(variable: str, name: str, where: dict[str, str | None]) -> None:
    """Refuses ``PEAK_TRADE_<MODULE>_<KEY>`` (one underscore): a module's key needs two,
    and the variable would otherwise be ignored or taken for the global key."""
    for key_name, spec in SCHEMA.items():
        if spec.per_module and name.endswith("_" + key_name):
            module = name[: -len(key_name) - 1].upper()
            raise ConfigError(
                f"unknown key; did you mean {ENV_PREFIX}{module}__{key_name.upper()}? "
                "(two underscores between the module and the key)",
                **where,
            )


def parse_env(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[tuple[str | None, str], str]]:
    """The global overrides, the per-module ones (by ``env_name``) and, for each, the
    variable it came from, keyed by (module or None, key)."""
    global_env: dict[str, Any] = {}
    module_env: dict[str, dict[str, Any]] = {}
    sources: dict[tuple[str | None, str], str] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable == ENV_CONFIG_PATH:
            continue
        rest = variable[len(ENV_PREFIX) :]
        _config_path_typo(variable, rest)
        module, sep, upper_key = rest.partition("__")
        if not sep:
            module, upper_key = "", rest
        # Module names match case-insensitively: PEAK_TRADE_live__... is LIVE's.
        module = env_name(module) if module else ""
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
                raise ConfigError("unknown key" + suggest(name), **where)
            _one_underscore(variable, name, where)
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
        value = checked(name, environ[variable], from_env=True, where=where)
        if module:
            module_env.setdefault(module, {})[name] = value
        else:
            global_env[name] = value
        sources[(module or None, name)] = variable
    return global_env, module_env, sources
