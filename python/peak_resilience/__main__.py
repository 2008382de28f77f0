"""The ``peak-resilience`` command (also ``python -m peak_resilience``)."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence

from peak_resilience import __version__, _cli_bench, _cli_config, _cli_health
from peak_resilience.config import ConfigError


class _Parser(argparse.ArgumentParser):
    """Bad usage is one clear line and exit 2, not a usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _demo(args: argparse.Namespace) -> int:
    from peak_resilience._demo import run

    return run(duration=args.duration, port=args.port, config_path=args.config, live=args.live)


def _add_demo(commands: typing.Any) -> None:
    demo = commands.add_parser(
        "demo", help="an order loop against a simulated exchange, guarded by with_resilience"
    )
    demo.add_argument("--duration", type=float, default=10.0, help="seconds to run (default: 10)")
    demo.add_argument(
        "--port",
        type=int,
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
    demo.set_defaults(handler=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="peak-resilience",
        description="Circuit breakers and rate limiting for Python trading systems.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, required=True
    )
    _add_demo(commands)
    _cli_health.add_commands(commands)
    _cli_config.add_commands(commands)
    _cli_bench.add_commands(commands)
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


if __name__ == "__main__":
    sys.exit(main())
