"""``peak-resilience config validate PATH`` and ``config show PATH``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from peak_resilience._config.load import Config, load_config
from peak_resilience._config.schema import SCHEMA, TABLE
from peak_resilience._config.secrets import redact

__all__ = ["add_commands", "effective"]


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


def validate(args: argparse.Namespace) -> int:
    config = load_config(args.path)
    modules = ", ".join(config.modules) or "none"
    print(f"ok: {config.source} is valid (modules: {modules})")
    return 0


def show(args: argparse.Namespace) -> int:
    config = load_config(args.path)
    tables = effective(config)
    if args.json:
        json.dump(tables, sys.stdout, indent=2)
        print()
        return 0
    for (table, keys), module in zip(tables.items(), (None, *config.modules), strict=True):
        print(f"[{table}]")
        print(f"  # the limiter enforces {config.budget(module)}")
        width = max(len(f"{k} = {v['value']!r}") for k, v in keys.items())
        for name, entry in keys.items():
            shown = f"{name} = {entry['value']!r}"
            print(f"  {shown:<{width}}  # {entry['source']}")
        print()
    return 0


def add_commands(commands: Any) -> None:
    config = commands.add_parser("config", help="check or show a configuration file")
    sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser("validate", help="exit 0 if the file is valid, 2 with the error if not")
    check.add_argument("path", help="the config.toml to check")
    check.set_defaults(handler=validate)
    show_ = sub.add_parser(
        "show", help="the effective settings of every module, with each value's source"
    )
    show_.add_argument("path", help="the config.toml to read")
    show_.add_argument("--json", action="store_true", help="print JSON instead of TOML-like text")
    show_.set_defaults(handler=show)
