"""Redis Sentinel: the master that a set of sentinels names, followed through failovers.

In ``config.toml``, ``redis_sentinels = ["host:port", ...]`` and ``redis_sentinel_master =
"name"`` (with ``redis_url`` for the user, password and database, if any) become one
``redis+sentinel://user:password@host:port,host:port/name/db`` URL (``rediss+sentinel``:
TLS to the sentinels and the master alike, with redis-py's TLS options in the query:
``?ssl_ca_certs=/etc/ca.pem&ssl_certfile=...&ssl_keyfile=...&ssl_cert_reqs=required
&ssl_check_hostname=true``), which a constructor's ``redis_url`` also takes. Its
connections ask a sentinel for the master's address each time they connect; one still
open to a master demoted by a failover is closed at its first ``READONLY`` reply and the
call sent again, to the new master (see ``pool``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["is_sentinel_url", "master_client", "sentinel_url"]

_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}

#: The TLS options a ``rediss+sentinel`` URL's query may give, and how each is read.
_TLS_OPTIONS: dict[str, Callable[[str], Any]] = {
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": lambda text: text.lower() in ("1", "true", "yes"),
}


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0] in _SCHEMES


def sentinel_url(sentinels: Sequence[str], master: str | None, url: str | None) -> str:
    """The URL of ``master`` as ``sentinels`` name it; ``url`` (a ``redis://`` or
    ``rediss://`` URL, optional) gives the user, password, database and TLS."""
    if not master:
        raise ValueError("redis_sentinels needs redis_sentinel_master: the name of the master")
    scheme, user, database = "redis", "", ""
    if url:
        parts = urlsplit(url)
        scheme = parts.scheme
        user = parts.netloc.rpartition("@")[0]
        database = parts.path.strip("/")
    query = urlsplit(url).query if url else ""
    at = "@" if user else ""
    path = f"/{master}/{database}" if database else f"/{master}"
    return f"{scheme}+sentinel://{user}{at}{','.join(sentinels)}{path}" + (
        f"?{query}" if query else ""
    )


def _tls_options(scheme: str, query: str) -> dict[str, Any]:
    """``ssl`` and the TLS options of a Sentinel URL's query, for every connection."""
    options: dict[str, Any] = {"ssl": _SCHEMES[scheme]}
    for name, text in parse_qsl(query, keep_blank_values=True):
        read = _TLS_OPTIONS.get(name)
        if read is None:
            raise ValueError(
                f"a Sentinel URL takes only TLS options in its query "
                f"({', '.join(_TLS_OPTIONS)}), got {name!r}"
            )
        if not options["ssl"]:
            raise ValueError(f"{name} is a TLS option: the URL must be rediss+sentinel://")
        options[name] = read(text)
    return options


def master_client(url: str, *, on_asyncio: bool = False, **options: Any) -> Any:
    """A redis-py client of the master that ``url`` (``redis+sentinel://``) names, its
    connections made with ``options``; a redis.asyncio one if ``on_asyncio``."""
    if on_asyncio:
        from redis.asyncio import sentinel
    else:
        from redis import sentinel  # type: ignore[no-redef]

    # Untyped in redis-py.
    make_sentinels: Any = sentinel.Sentinel
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, _, hosts = authority.rpartition("@")
    user, _, password = userinfo.partition(":")
    master, _, database = path.partition("/")
    if not hosts or not master:
        raise ValueError(
            "a Sentinel URL is redis+sentinel://[user:password@]host:port,.../master[/db]"
        )
    addresses = []
    for host_port in hosts.split(","):
        host, colon, port = host_port.rpartition(":")
        if not colon or not port.isdigit():
            raise ValueError(f"each sentinel must be host:port, got {host_port!r}")
        addresses.append((host.strip("[]"), int(port)))
    tls = _tls_options(scheme, query)
    timeouts = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
    }
    sentinels = make_sentinels(addresses, sentinel_kwargs={**timeouts, **tls}, **timeouts)
    return sentinels.master_for(
        unquote(master),
        db=int(database or 0),
        username=unquote(user) or None,
        password=unquote(password) or None,
        **tls,
        **options,
    )
