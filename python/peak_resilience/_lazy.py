"""Names of a facade imported on first use, so that importing one part of the package
does not pay for all of it (``import peak_resilience.resilience_helpers`` runs the
package's ``__init__`` first, which would otherwise import every guide module).

A facade lists its names under ``if TYPE_CHECKING:`` (for type checkers and readers) and
gives the same names, by module, to ``lazy``; tests/test_architecture.py checks that the
two agree. The module ``__getattr__`` (PEP 562) imports a name's module when the name is
first read and keeps the value in the facade, so later reads cost nothing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy"]


def lazy(facade: str, names: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """The ``__getattr__`` of module ``facade``, giving each of ``names`` (module ->
    names it exports) from its module, imported on first use."""
    where = {name: module for module, exported in names.items() for name in exported}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {facade!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[facade], name, value)
        return value

    return __getattr__
