"""Rate-limit windows written as text: ``"1200/60s"``, ``"1200/1m fixed"``, ``"10/1s sliding"``.

An exchange publishes its budget as several windows at once; a limiter built from
``limits=[...]`` (or the config key ``rate_limits``) admits a call only if every window
admits it, and takes from none otherwise. A window is ``<requests>/<length><unit>`` with
unit ``s``, ``m``, ``h`` or ``d``, then how it counts:

- nothing: a token bucket (GCRA) whose burst is its request count;
- ``fixed``: per calendar interval aligned to UTC (a minute starts at a multiple of 60 s
  since the epoch), as exchanges count;
- ``sliding``: never more than its count in any interval of its length (at most
  ``MAX_SLIDING`` requests, which it logs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, NamedTuple, TypeAlias

#: A window as text ("1200/60s") or as a (max_requests, window_seconds) pair.
Limit: TypeAlias = str | tuple[int, float]
#: How a window counts.
Kind: TypeAlias = Literal["bucket", "fixed", "sliding"]

#: Requests the sliding windows of one budget admit between them (the native log's size).
MAX_SLIDING = 128

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?|\.\d+)?\s*([smhd])(?:\s+([A-Za-z_]+))?\s*\Z")
_KINDS: dict[str, Kind] = {"fixed": "fixed", "sliding": "sliding"}


class Window(NamedTuple):
    """One window of a budget: ``requests`` per ``seconds``, counted as ``kind`` says."""

    requests: int
    seconds: float
    kind: Kind = "bucket"


def parse_limit(spec: Limit) -> tuple[int, float]:
    """``"1200/60s"`` -> ``(1200, 60.0)``; a ``(max_requests, window_seconds)`` pair is
    returned as it is (the native constructor checks its values)."""
    requests, seconds, _ = parse_window(spec)
    return requests, seconds


def parse_window(spec: Limit) -> Window:
    """``"1200/1m fixed"`` -> ``Window(1200, 60.0, "fixed")``; a pair is a token bucket."""
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(
                f"a rate limit must be 'N/<length><s|m|h|d>' or (max_requests, "
                f"window_seconds), got {spec!r}"
            )
        return Window(spec[0], spec[1])
    if not isinstance(spec, str):
        raise TypeError(
            f"a rate limit must be a str like '1200/60s' or a (max_requests, "
            f"window_seconds) tuple, got {spec!r}"
        )
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(
            f"rate limit {spec!r} is not '<requests>/<length><unit>' with unit s, m, h or d, "
            f"optionally followed by 'fixed' or 'sliding' "
            f"(e.g. '1200/60s', '1200/1m fixed', '10/1s sliding')"
        )
    requests, length, unit, word = match.groups()
    seconds = float(length or 1) * _UNITS[unit]
    if int(requests) < 1 or seconds <= 0:
        raise ValueError(f"rate limit {spec!r} must allow at least 1 request per positive window")
    if word is None:
        return Window(int(requests), seconds)
    kind = _KINDS.get(word.lower())
    if kind is None:
        raise ValueError(
            f"rate limit {spec!r}: {word!r} is not a way to count a window; "
            f"write 'fixed' (per calendar interval) or 'sliding', or nothing for a token bucket"
        )
    if kind == "sliding" and int(requests) > MAX_SLIDING:
        raise ValueError(
            f"rate limit {spec!r}: a sliding window admits at most {MAX_SLIDING} requests "
            f"(it logs each one); use 'fixed' or a token bucket for larger budgets"
        )
    return Window(int(requests), seconds, kind)


def parse_limits(specs: Sequence[Limit]) -> list[Window]:
    """Every window of ``specs``, in order."""
    if isinstance(specs, (str, bytes)):
        raise TypeError(f"limits must be a list of windows like ['1200/60s'], got {specs!r}")
    return [parse_window(spec) for spec in specs]


def native_kinds(kinds: Sequence[Kind]) -> list[Kind] | None:
    """The ``kinds=`` argument of the native constructors: None when every window is a
    token bucket (the call it always was)."""
    return list(kinds) if any(k != "bucket" for k in kinds) else None


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
