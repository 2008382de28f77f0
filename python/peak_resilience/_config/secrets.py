"""The configuration keys whose values are secrets, and how such a value may be shown.

A secret never appears in an error, a log line or ``config show``: ``health_token`` not at
all, ``redis_url`` with its password masked (the host stays, to say where it points).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SECRET_KEYS", "redact", "redact_url"]

#: Keys whose values are secrets: never shown in an error, a log line or ``config show``.
SECRET_KEYS = frozenset({"health_token", "redis_url"})

_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` as it may be shown in a log line, an error or ``config show``: masked as
    written, without parsing the host or the port (a bad port must not make the masking
    fail): ``user:***@`` keeps the user name, a lone ``secret@`` (a password to some
    clients) becomes ``***@``, and redis-py's ``?password=`` is masked too."""
    scheme, sep, rest = url.partition("://")
    if sep:
        authority_end = len(rest)
        for delimiter in "/?#":
            found = rest.find(delimiter)
            if found != -1:
                authority_end = min(authority_end, found)
        authority, tail = rest[:authority_end], rest[authority_end:]
        userinfo, at, hostport = authority.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            authority = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
        url = f"{scheme}://{authority}{tail}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


def redact(name: str, value: Any) -> Any:
    """Key ``name``'s value as it may be shown: a URL with its password masked, any other
    secret hidden, everything else as it is."""
    if value is None or name not in SECRET_KEYS:
        return value
    if isinstance(value, str) and name == "redis_url":
        return redact_url(value)
    return "***"
