"""A key's value, from TOML (typed already) or from an environment variable (text), as
the key's type and through the key's check; or a ``ConfigError`` saying why not."""

from __future__ import annotations

import difflib
import math
import types
import typing
from typing import Any, Literal, Union

from peak_resilience._config.errors import ConfigError
from peak_resilience._config.schema import SCHEMA
from peak_resilience._config.secrets import SECRET_KEYS

__all__ = ["checked", "suggest"]


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
        # Trimmed as numbers are: " shared" is "shared", as " 8 " is 8.
        value = value.strip() if isinstance(value, str) else value
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
    return _typed(text, tp)  # a choice is trimmed there; other strings are taken as they are


def checked(name: str, value: Any, *, from_env: bool, where: dict[str, str | None]) -> Any:
    """Key ``name``'s ``value`` as its type, having passed its check; ``where`` (source,
    table, key) goes into the ``ConfigError`` otherwise."""
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


def suggest(name: str) -> str:
    """The end of an "unknown key" message: the closest key, or the known ones."""
    close = difflib.get_close_matches(name, SCHEMA, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(SCHEMA)}"
