"""``peak-resilience config validate PATH``, ``config show PATH`` and ``config init [PATH]``.

``init`` writes the documented example (``config.toml`` beside this module, package data
that a wheel carries: the same file as the repository's, held so by a test).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.resources
import json
import math
import sys
from pathlib import Path
from typing import Any

from peak_resilience._cli.commands import EXAMPLE
from peak_resilience._config.load import Config, load_config
from peak_resilience._config.schema import SCHEMA, TABLE
from peak_resilience._config.secrets import redact

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["effective", "example_config", "init", "show", "validate"]


def effective(config: Config) -> dict[str, dict[str, dict[str, Any]]]:
    """Every module's settings (global first) with the source of each value."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for module in (None, *config.modules):
        settings = config.globals if module is None else config.module(module)
        values = dataclasses.asdict(settings)
        table = TABLE if module is None else f"{TABLE}.{module}"
        tables[table] = {
            name: {"value": redact(name, values[name]), "source": config.origin(module, name)}
            for name, key in SCHEMA.items()
            if module is None or key.per_module
        }
    return tables


def example_config() -> str:
    """The text of the documented example ``config.toml``, from the installed package."""
    return importlib.resources.files(__package__).joinpath(EXAMPLE).read_text(encoding="utf-8")


def _ignored_tables(path: str) -> list[str]:
    """What in a valid file the package will never read: top-level tables other than
    ``[resilience]`` (a misspelt ``[resilence]`` would silently configure nothing), or
    no ``[resilience]`` at all. Other tables may well be the application's: a warning."""
    with open(path, "rb") as handle:
        document = tomllib.load(handle)
    warnings = [
        f"[{name}] is not read by peak-resilience (only [{TABLE}] is)"
        + (f"; did you mean [{TABLE}]?" if _close(name, TABLE) else "")
        for name, value in document.items()
        if name != TABLE and isinstance(value, dict)
    ]
    if TABLE not in document:
        warnings.append(f"no [{TABLE}] table: every setting is the built-in default")
    return warnings


def _close(name: str, wanted: str) -> bool:
    return difflib.SequenceMatcher(None, name.lower(), wanted).ratio() >= 0.75


def validate(args: argparse.Namespace) -> int:
    config = load_config(args.path)
    for warning in _ignored_tables(args.path):
        print(f"peak-resilience: warning: {args.path}: {warning}", file=sys.stderr)
    modules = ", ".join(config.modules) or "none"
    print(f"ok: {config.source} is valid (modules: {modules})")
    return 0


def _toml_value(value: Any) -> str:
    """``value`` as a TOML literal (strings as JSON writes them, which TOML reads)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return f"{value:.1f}"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


def _as_toml(tables: dict[str, dict[str, dict[str, Any]]], budgets: dict[str, str]) -> str:
    """Valid TOML: a key whose value is unset (None) is a comment, every value says its
    source in a comment, and each table says the budget its limiter enforces."""
    lines: list[str] = []
    for table, keys in tables.items():
        lines.append(f"[{table}]")
        lines.append(f"# the limiter enforces {budgets[table]}")
        shown = {
            name: (
                f"# {name} is not set"
                if entry["value"] is None
                else f"{name} = {_toml_value(entry['value'])}"
            )
            for name, entry in keys.items()
        }
        width = max(len(text) for text in shown.values())
        lines.extend(f"{shown[name]:<{width}}  # {keys[name]['source']}" for name in keys)
        lines.append("")
    return "\n".join(lines)


def show(args: argparse.Namespace) -> int:
    config = load_config(args.path)
    tables = effective(config)
    if args.format == "json":
        json.dump(tables, sys.stdout, indent=2)
        print()
        return 0
    # What the limiter of each table really enforces: the windows the most specific layer
    # gives it, however they were written (rate_limits or rate_limit_requests/_window).
    budgets = {
        table: config.budget(module)
        for table, module in zip(tables, (None, *config.modules), strict=True)
    }
    print(_as_toml(tables, budgets), end="")
    return 0


def init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_dir():
        path = path / EXAMPLE
    if path.exists() and not args.force:
        print(f"peak-resilience: error: {path} exists (--force to overwrite it)", file=sys.stderr)
        return 2
    try:
        path.write_text(example_config(), encoding="utf-8")
    except ValueError as err:  # a NUL in the path
        print(f"peak-resilience: error: cannot write {args.path!r}: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        raise OSError(f"cannot write {path}: {err.strerror or err}") from None
    print(f"wrote {path}; check it with: peak-resilience config validate {path}")
    return 0
