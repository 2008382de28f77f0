"""The command line's argument types: each value is checked when the arguments are parsed,
so a bad one is one line naming the argument and exit 2, never a traceback later.

argparse turns the ``ArgumentTypeError`` of a type function into
``argument --port: <message>``.
"""

from __future__ import annotations

import argparse
import math
import socket
import urllib.parse

__all__ = ["count", "host", "port", "seconds", "url"]


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def port(text: str) -> int:
    """A TCP port, 0 (a free one) to 65535."""
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 (a free one) to 65535, got {value}")
    return value


def count(text: str) -> int:
    """A whole number of at least 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value}")
    return value


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host (and, if given, a valid port)."""
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - reading it validates the port
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a valid URL ({err}): {text!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL with a host (e.g. http://127.0.0.1:9108), "
            f"got {text!r}"
        )
    return text


def host(text: str) -> str:
    """An address to bind: an IP address or a name that resolves (checked now, so that a
    typo is an error of the argument rather than of the server starting)."""
    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise argparse.ArgumentTypeError(f"cannot bind to {text!r}: {reason}") from None
    return text
