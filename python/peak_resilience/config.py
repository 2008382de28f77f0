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

from peak_resilience._backends.choice import Backend, OnBackendError
from peak_resilience._circuit import WindowType
from peak_resilience._config.active import active, add_listener, configure, current, lock
from peak_resilience._config.environment import ENV_CONFIG_PATH, ENV_PREFIX, env_name
from peak_resilience._config.errors import ConfigError
from peak_resilience._config.load import DEFAULT_PATH, Config, load_config
from peak_resilience._config.schema import (
    DEFAULTS,
    MAX_FAILURE_THRESHOLD,
    MAX_HALF_OPEN_CALLS,
    SCHEMA,
    TABLE,
    Check,
    Settings,
    at_least,
    at_most,
    fraction,
    key,
    metric_prefix,
    non_empty,
    optional,
    positive,
    rate_limit_specs,
)
from peak_resilience._config.secrets import SECRET_KEYS, redact_url

__all__ = [
    "DEFAULTS",
    "DEFAULT_PATH",
    "ENV_CONFIG_PATH",
    "ENV_PREFIX",
    "MAX_FAILURE_THRESHOLD",
    "MAX_HALF_OPEN_CALLS",
    "SCHEMA",
    "SECRET_KEYS",
    "TABLE",
    "Backend",
    "Check",
    "Config",
    "ConfigError",
    "OnBackendError",
    "Settings",
    "WindowType",
    "active",
    "add_listener",
    "at_least",
    "at_most",
    "configure",
    "current",
    "env_name",
    "fraction",
    "key",
    "load_config",
    "lock",
    "metric_prefix",
    "non_empty",
    "optional",
    "positive",
    "rate_limit_specs",
    "redact_url",
]
