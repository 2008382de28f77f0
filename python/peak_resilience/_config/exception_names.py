"""Exception classes named in the configuration (``retry_on``): a builtin's name
(``"ConnectionError"``) or a dotted path to a class (``"ccxt.NetworkError"``).

Resolved when the configuration is checked, so that a typo is a ``ConfigError`` naming the
key at ``configure()``, not a retry that silently never happens.
"""

from __future__ import annotations

import builtins
import importlib

__all__ = ["exception_class", "exception_names"]


def exception_class(name: str) -> type[BaseException]:
    """The exception class ``name`` names; ValueError saying why when none."""
    found: object
    if "." not in name:
        found = getattr(builtins, name, None)
        if found is None:
            raise ValueError(f"{name!r} is not a builtin exception (use a dotted path)")
    else:
        module_name, _, attribute = name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            problem = f"{name!r}: module {module_name!r} cannot be imported ({err})"
            raise ValueError(problem) from None
        found = getattr(module, attribute, None)
        if found is None:
            raise ValueError(f"{name!r}: module {module_name!r} has no {attribute!r}")
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise ValueError(f"{name!r} is not an exception class")
    return found


def exception_names(value: tuple[str, ...]) -> str | None:
    """The schema's check of ``retry_on``: every name resolves to an exception class."""
    for name in value:
        try:
            exception_class(name)
        except ValueError as err:
            return f"must name exception classes: {err}"
    return None
