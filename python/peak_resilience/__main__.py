"""The ``peak-resilience`` command (also ``python -m peak_resilience``)."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence

from peak_resilience import __version__, _cli_config
from peak_resilience.config import ConfigError


def _demo(args: argparse.Namespace) -> int:
    from peak_resilience._demo import run

    return run(duration=args.duration)


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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    demo = commands.add_parser(
        "demo", help="a simulated exchange behind a breaker and a rate limiter"
    )
    demo.add_argument("--duration", type=float, default=3.0, help="seconds to run (default: 3)")
    demo.set_defaults(handler=_demo)
    _cli_config.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as err:
        # The library's own message, one line, no traceback.
        print(f"peak-resilience: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
