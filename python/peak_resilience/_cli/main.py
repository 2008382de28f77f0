"""The ``peak-resilience`` command: its parser, and what each failure exits with."""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Sequence

from peak_resilience._cli.commands import add_commands
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
    add_commands(commands)
    return parser


class _OneLine(logging.Formatter):
    """``peak-resilience: warning: ...``, as the command's own errors read."""

    def format(self, record: logging.LogRecord) -> str:
        return f"peak-resilience: {record.levelname.lower()}: {record.getMessage()}"


def _show_warnings() -> logging.Handler | None:
    """The command is the application: the package's warnings (a health server open to
    the network without a token, a backend outage) go to stderr, one line each. Only
    the package's loggers, and only if nobody set logging up before (a program calling
    ``main`` may have): the handler, to remove when the command ends, or None."""
    package = logging.getLogger("peak_resilience")
    configured = logging.getLogger().handlers + package.handlers
    if any(not isinstance(h, logging.NullHandler) for h in configured):
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    package.addHandler(handler)
    return handler


def _run(args: argparse.Namespace) -> int:
    #: What a failure exits with: 1, or 2 for ``check`` (where 1 means "degraded").
    failed = int(getattr(args, "error_exit", 1))
    try:
        return int(args.handler(args))
    except ConfigError as err:
        # The library's own message, one line, no traceback.
        print(f"peak-resilience: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"peak-resilience: error: {err.strerror or err}", file=sys.stderr)
        return failed
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        # A bug of ours still reaches the user as one line; the traceback is in the DEBUG
        # log for whoever reports it.
        logging.getLogger("peak_resilience.cli").debug("unexpected error", exc_info=True)
        print(f"peak-resilience: error: {type(err).__name__}: {err}", file=sys.stderr)
        return failed


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command ``argv`` (default: the process' arguments); returns its exit code."""
    args = build_parser().parse_args(argv)
    handler = _show_warnings()
    try:
        return _run(args)
    finally:
        if handler is not None:
            logging.getLogger("peak_resilience").removeHandler(handler)
