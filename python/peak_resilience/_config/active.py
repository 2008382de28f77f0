"""The configuration in force, and who is told when it changes.

``configure(path=None)`` loads and applies a file process-wide; without a path it takes
``$PEAK_TRADE_CONFIG``, then ``./config.toml``, then the built-in defaults. Calling it again
updates the breakers and limiters already made in place: each listener (the module
registry, the metrics recorder) first checks the new configuration, then applies it.
"""

from __future__ import annotations

import logging
import os
import threading
import typing
from collections.abc import Mapping

from peak_resilience._config.load import Config, load_config

__all__ = ["active", "add_listener", "configure", "current", "lock"]

logger = logging.getLogger("peak_resilience.config")


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
    """Registers an object told of every new configuration (the module registry, the
    metrics recorder)."""
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
