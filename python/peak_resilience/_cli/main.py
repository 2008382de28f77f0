"""The ``peak-resilience`` command: its parser, and what each failure exits with."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence

from peak_resilience._cli import bench, config, demo, health
from peak_resilience._config.errors import ConfigError
from peak_resilience._version import __version__

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """Bad usage is one clear line and exit 2, not a usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="peak-resilience",
        description="Circuit breakers and rate limiting for Python trading systems.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, required=True
    )
    demo.add_commands(commands)
    health.add_commands(commands)
    config.add_commands(commands)
    bench.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as err:
        # The library's own message, one line, no traceback.
        print(f"peak-resilience: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"peak-resilience: error: {err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
