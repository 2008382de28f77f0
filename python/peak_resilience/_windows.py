"""Rate-limit windows written as text: ``"1200/60s"``, ``"50/10s"``, ``"160000/1d"``.

An exchange publishes its budget as several windows at once; a limiter built from
``limits=[...]`` (or the config key ``rate_limits``) admits a call only if every window
admits it, and takes from none otherwise. A window is ``<requests>/<length><unit>`` with
unit ``s``, ``m``, ``h`` or ``d``; a window's burst is its request count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias

#: A window as text ("1200/60s") or as a (max_requests, window_seconds) pair.
Limit: TypeAlias = str | tuple[int, float]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?|\.\d+)?\s*([smhd])\s*\Z")


def parse_limit(spec: Limit) -> tuple[int, float]:
    """``"1200/60s"`` -> ``(1200, 60.0)``; a ``(max_requests, window_seconds)`` pair is
    returned as it is (the native constructor checks its values)."""
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(
                f"a rate limit must be 'N/<length><s|m|h|d>' or (max_requests, "
                f"window_seconds), got {spec!r}"
            )
        return spec[0], spec[1]
    if not isinstance(spec, str):
        raise TypeError(
            f"a rate limit must be a str like '1200/60s' or a (max_requests, "
            f"window_seconds) tuple, got {spec!r}"
        )
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(
            f"rate limit {spec!r} is not '<requests>/<length><unit>' with unit s, m, h or d "
            f"(e.g. '1200/60s', '50/10s', '160000/1d')"
        )
    requests, length, unit = match.groups()
    seconds = float(length or 1) * _UNITS[unit]
    if int(requests) < 1 or seconds <= 0:
        raise ValueError(f"rate limit {spec!r} must allow at least 1 request per positive window")
    return int(requests), seconds


def parse_limits(specs: Sequence[Limit]) -> list[tuple[int, float]]:
    """Every window of ``specs``, in order."""
    if isinstance(specs, (str, bytes)):
        raise TypeError(f"limits must be a list of windows like ['1200/60s'], got {specs!r}")
    return [parse_limit(spec) for spec in specs]


def window_index(labels: Sequence[str], windows: Sequence[float], window: str | int | None) -> int:
    """Which window ``window`` names: its index, its label (``"60s"``) or its length in any
    unit (``"1m"``); None only when there is one window."""
    if window is None:
        if len(labels) == 1:
            return 0
        raise ValueError(
            f"this budget has {len(labels)} windows ({', '.join(labels)}): say which, "
            f"e.g. window={labels[0]!r}"
        )
    if isinstance(window, bool):
        raise TypeError(f"window must be a window's name or index, got {window!r}")
    if isinstance(window, int):
        if 0 <= window < len(labels):
            return window
        raise ValueError(f"window index {window} is out of range: windows are {labels}")
    if isinstance(window, str):
        if window in labels:
            return labels.index(window)
        try:
            _, seconds = parse_limit(f"1/{window}")
        except ValueError:
            seconds = -1.0
        for i, length in enumerate(windows):
            if abs(length - seconds) < 1e-9:
                return i
        raise ValueError(f"no window {window!r}: windows are {labels}")
    raise TypeError(f"window must be a window's name or index, got {window!r}")
