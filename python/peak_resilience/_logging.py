"""The package's loggers (silent unless the application sets logging up): those of the
guide's Debugging section, and the switch that keeps the per-refusal DEBUG log (and the
refusal events) free when nobody reads them.

A refused call is logged at DEBUG under ``peak_resilience.resilience`` (breaker) or
``peak_resilience.rate_limiter`` (limiter). Calling into Python on every refusal just to
find DEBUG off would double a refusal's cost, so the native guards hand refusals over only
while a native flag is set, and the flag follows the loggers' levels: ``logging`` clears
every logger's level cache whenever any level changes (``setLevel``, ``disable``,
``dictConfig``), and these two loggers' caches recompute the flag when cleared.

With DEBUG on, a refused call is logged in full only up to ``REFUSAL_LINES_PER_SECOND``
times a second per name (``log_refusal``): a breaker open under load refuses thousands
of calls a second, and a line each (~18 us with a handler) would cost far more than the
refusals themselves. The refusals past that are counted, and the next line says how many.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from peak_resilience import _native

# A library logs, the application decides where to: no output unless logging is set up.
logging.getLogger("peak_resilience").addHandler(logging.NullHandler())

breaker_log = logging.getLogger("peak_resilience.resilience")
limiter_log = logging.getLogger("peak_resilience.rate_limiter")


#: Whether an event listener wants refusals (``_events`` keeps it).
_refusals_wanted = False


#: The two loggers among ``breaker_log`` and ``limiter_log`` with DEBUG on, as last seen
#: by ``refresh``: what ``log_refusal`` reads instead of asking logging per refusal.
_debug_on: frozenset[logging.Logger] = frozenset()


def refresh() -> None:
    """Sets the native flag from the loggers' effective levels (and the listeners) now."""
    global _debug_on
    _debug_on = frozenset(
        log for log in (breaker_log, limiter_log) if log.isEnabledFor(logging.DEBUG)
    )
    _native.set_rejection_log_enabled(_refusals_wanted or bool(_debug_on))


def refusals_wanted() -> bool:
    """Whether an event listener wants refusals now."""
    return _refusals_wanted


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


#: Refused calls logged in full per name and second; those past it are counted.
REFUSAL_LINES_PER_SECOND = 10
#: Names whose lines are counted at once; past it the counts start again (a name then
#: logs up to its lines again: harmless), so that the table never grows with the names.
_MAX_NAMES = 4096

#: Per name: [start of its one-second window, lines logged in it, refusals not logged].
_windows: dict[str, list[Any]] = {}
#: The clock of those windows (tests replace it).
_clock = time.monotonic


def log_refusal(logger: logging.Logger, name: str, message: str, *args: object) -> None:
    """Logs the refusal of a call of ``name`` at DEBUG as ``message % args``, unless
    ``name`` has had its lines this second: then counts it for its next line. Threads
    racing here may log a line more or count one less; never more than that."""
    if logger not in _debug_on:
        return  # the hook runs for event listeners too
    window = _windows.get(name)
    if window is not None and window[1] >= REFUSAL_LINES_PER_SECOND:
        window[2] += 1
        # The clock is read on every 64th refusal past the lines only (a clock read
        # costs more here than the rest of this path): a second's first line may come
        # up to 63 refusals late.
        if window[2] % 64 or _clock() - window[0] < 1.0:
            return
    now = _clock()
    if window is None:
        if len(_windows) >= _MAX_NAMES:
            _windows.clear()
        window = _windows[name] = [now, 0, 0]
    elif now - window[0] >= 1.0:
        window[0], window[1] = now, 0
    window[1] += 1
    unlogged, window[2] = window[2], 0
    if unlogged:
        logger.debug(f"{message} (and %d more refused, not logged)", *args, unlogged)
    else:
        logger.debug(message, *args)
