"""Every command's arguments: the command line's grammar, without what runs it.

Each command's module (``demo``, ``health``, ``config``, ``bench``) imports the parts of
the package it drives; it is imported only when its command runs, so that
``peak-resilience --version`` or ``--help`` pays for argparse alone.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from peak_resilience._cli import arguments

__all__ = ["EXAMPLE", "EXIT_CODES", "add_commands"]

#: Exit codes of ``check``, by status.
EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}

#: The example configuration shipped in the package, and where ``config init`` writes it.
EXAMPLE = "config.toml"


def _later(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``function`` of command module ``module``, imported when it runs."""

    def handler(args: argparse.Namespace) -> int:
        run = getattr(importlib.import_module(f"peak_resilience._cli.{module}"), function)
        return int(run(args))

    return handler


def add_commands(commands: Any) -> None:
    """Adds every command to ``commands`` (the top parser's subparsers)."""
    _demo(commands)
    _health(commands)
    _config(commands)
    _bench(commands)


def _demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="an order loop against a simulated exchange, guarded by with_resilience"
    )
    demo.add_argument(
        "--duration", type=arguments.seconds, default=10.0, help="seconds to run (default: 10)"
    )
    demo.add_argument(
        "--port",
        type=arguments.port,
        default=0,
        help="port of the health endpoints on 127.0.0.1 meanwhile (default: a free one)",
    )
    demo.add_argument(
        "--config", help="config.toml to use (default: $PEAK_TRADE_CONFIG, then ./config.toml)"
    )
    view = demo.add_mutually_exclusive_group()
    view.add_argument(
        "--live",
        dest="live",
        action="store_true",
        default=None,
        help="redraw a live view in place (the default on a terminal)",
    )
    view.add_argument(
        "--plain",
        dest="live",
        action="store_false",
        help="print plain lines (the default when not on a terminal)",
    )
    demo.set_defaults(handler=_later("demo", "demo"))


def _health(commands: Any) -> None:
    serve_ = commands.add_parser("serve", help="serve the health and metrics endpoints")
    serve_.add_argument("--config", help="config.toml (default: $PEAK_TRADE_CONFIG, ./config.toml)")
    serve_.add_argument(
        "--host",
        type=arguments.host,
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1)",
    )
    serve_.add_argument(
        "--port", type=arguments.port, default=9108, help="port (default: 9108; 0: a free one)"
    )
    serve_.set_defaults(handler=_later("health", "serve"))
    check_ = commands.add_parser(
        "check",
        help="run the health checks once: exit 0 healthy, 1 degraded, 2 unhealthy",
    )
    check_.add_argument("--config", help="config.toml (default: $PEAK_TRADE_CONFIG, ./config.toml)")
    check_.add_argument(
        "--url",
        type=arguments.url,
        help="ask a running server (e.g. http://127.0.0.1:9108) instead",
    )
    check_.add_argument("--token", help="bearer token for --url (default: none)")
    check_.add_argument(
        "--timeout", type=arguments.seconds, default=10.0, help="seconds to wait for --url"
    )
    # Whatever goes wrong, a probe must not read it as "degraded" (1).
    check_.set_defaults(handler=_later("health", "check"), error_exit=EXIT_CODES["unhealthy"])


def _config(commands: Any) -> None:
    config = commands.add_parser("config", help="check, show or write a configuration file")
    sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "validate",
        help="exit 0 if the file is valid (warning on tables it ignores), 2 with the error if not",
    )
    check.add_argument("path", help="the config.toml to check")
    check.set_defaults(handler=_later("config", "validate"))
    show_ = sub.add_parser(
        "show", help="the effective settings of every module, with each value's source"
    )
    show_.add_argument("path", help="the config.toml to read")
    show_.add_argument(
        "--format", choices=("toml", "json"), default="toml", help="toml (default) or json"
    )
    show_.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )
    show_.set_defaults(handler=_later("config", "show"))
    init_ = sub.add_parser("init", help="write the documented example config.toml")
    init_.add_argument(
        "path",
        nargs="?",
        default=EXAMPLE,
        help="where (default: ./config.toml; a directory: in it)",
    )
    init_.add_argument("--force", action="store_true", help="overwrite an existing file")
    init_.set_defaults(handler=_later("config", "init"))


def _bench(commands: Any) -> None:
    parser = commands.add_parser("bench", help="the quick ratio table (timeit, a few seconds)")
    parser.add_argument(
        "--number",
        type=arguments.count,
        default=200_000,
        help="calls per timing run (default: 200000)",
    )
    parser.set_defaults(handler=_later("bench", "bench"))
