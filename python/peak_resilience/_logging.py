"""The package's loggers (silent unless the application sets logging up): those of the
guide's Debugging section, and the switch that keeps the per-refusal DEBUG log (and the
refusal events) free when nobody reads them.

A refused call is logged at DEBUG under ``peak_resilience.resilience`` (breaker) or
``peak_resilience.rate_limiter`` (limiter). Calling into Python on every refusal just to
find DEBUG off would double a refusal's cost, so the native guards hand refusals over only
while a native flag is set, and the flag follows the loggers' levels: ``logging`` clears
every logger's level cache whenever any level changes (``setLevel``, ``disable``,
``dictConfig``), and these two loggers' caches recompute the flag when cleared.
"""

from __future__ import annotations

import logging

from peak_resilience import _native

# A library logs, the application decides where to: no output unless logging is set up.
logging.getLogger("peak_resilience").addHandler(logging.NullHandler())

breaker_log = logging.getLogger("peak_resilience.resilience")
limiter_log = logging.getLogger("peak_resilience.rate_limiter")


#: Whether an event listener wants refusals (``_events`` keeps it).
_refusals_wanted = False


def refresh() -> None:
    """Sets the native flag from the loggers' effective levels (and the listeners) now."""
    _native.set_rejection_log_enabled(
        _refusals_wanted
        or breaker_log.isEnabledFor(logging.DEBUG)
        or limiter_log.isEnabledFor(logging.DEBUG)
    )


def set_refusals_wanted(wanted: bool) -> None:
    """Refusals reach Python while an event listener exists, whatever the log level."""
    global _refusals_wanted
    _refusals_wanted = wanted
    refresh()


class _LevelCache(dict[int, bool]):
    """A logger's level cache that tells ``refresh`` when logging clears it."""

    def clear(self) -> None:
        super().clear()
        refresh()


for _logger in (breaker_log, limiter_log):
    _logger._cache = _LevelCache()  # type: ignore[attr-defined]
refresh()
