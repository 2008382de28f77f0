"""One connection to Redis for a limiter or breaker, and what happens when it is gone.

Every call is one ``EVALSHA`` of a server-side script (loaded once, reloaded after a
Redis restart flushed it), sent pre-packed on a connection of the calling thread's own:
packing seven arguments and going through redis-py's pool cost more than the script runs
on the server. Socket and connect timeouts are always set and redis-py's own
retries are off, so a call never blocks longer than ``timeout``. When Redis cannot be
reached the call is counted (``peak_trade_backend_errors_total{backend="redis"}``), the
outage is logged once, and Redis is left alone for ``retry_interval`` seconds (the
caller applies its ``on_backend_error`` policy meanwhile); the next call after that tries
again, and the first one that succeeds logs the recovery.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from peak_resilience._backends import choice
from peak_resilience._config.secrets import redact_url

if TYPE_CHECKING:
    from peak_resilience._native import ManualClock

__all__ = ["UNAVAILABLE", "RedisLink", "RedisStore", "Script"]

logger = logging.getLogger("peak_resilience.redis")

#: What ``RedisLink.run`` returns when Redis could not be reached.
UNAVAILABLE: Any = object()

#: Seconds Redis is left alone after a failed call before the next call tries it again.
DEFAULT_RETRY_INTERVAL = 1.0


def _redis() -> ModuleType:
    """redis-py, an optional dependency: imported when the first link is made, so that a
    process without Redis never pays for it."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='redis' needs redis-py: pip install 'peak-resilience[redis]'"
        ) from exc
    return redis


class Script:
    """A Lua script and its SHA1, as EVALSHA needs it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @classmethod
    def load(cls, name: str) -> Script:
        """The script ``name`` shipped beside this module (``breaker.lua``, ...)."""
        return cls(importlib.resources.files(__package__).joinpath(name).read_text())


#: Every link, so that a forked child drops the connections it inherited (their sockets
#: belong to the parent).
_links: weakref.WeakSet[RedisLink] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for link in list(_links):
        link._local = threading.local()


os.register_at_fork(after_in_child=_forget_connections_after_fork)


class RedisLink:
    """A redis-py client with fixed timeouts and an outage policy."""

    def __init__(
        self,
        url: str | None,
        *,
        timeout: float,
        what: str,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(
                f"backend='redis' needs redis_url (e.g. 'redis://127.0.0.1:6379/0'), got {url!r}"
            )
        timeout = choice.check_timeout(timeout)
        redis = _redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Failures of the link, not of the script: anything else (a script error) is a
        # bug and is raised.
        self._unreachable = (redis.ConnectionError, redis.TimeoutError, OSError)
        self._no_script = redis.exceptions.NoScriptError
        try:
            self.client = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                health_check_interval=0,
            )
        except ValueError as exc:
            shown = redact_url(url)
            raise ValueError(f"redis_url {shown!r} is not a Redis URL: {exc}") from exc
        #: For log lines and errors: the password masked.
        self.url = redact_url(url)
        self.timeout = timeout
        self.what = what
        self.retry_interval = retry_interval
        self._down_until = 0.0
        self._outage = False
        self._lock = threading.Lock()
        self._pool = self.client.connection_pool
        # Packs commands only; never connected.
        self._packer = self._pool.make_connection()
        self._local = threading.local()
        #: Told ``(available, error)`` when an outage starts and when it ends (events).
        self.on_change: Callable[[bool, str | None], object] | None = None
        _links.add(self)

    def pack(self, script: Script, key: str, *args: Any) -> Any:
        """The wire form of running ``script`` on ``key`` with ``args``, for ``run_packed``."""
        return self._packer.pack_command("EVALSHA", script.sha, 1, key, *args)

    def run(self, script: Script, key: str, *args: Any) -> Any:
        """Runs ``script`` on ``key`` with ``args``: its reply, or ``UNAVAILABLE``."""
        return self.run_packed(script, self.pack(script, key, *args))

    def run_packed(self, script: Script, command: Any) -> Any:
        """Sends a command made by ``pack``: the script's reply, or ``UNAVAILABLE``."""
        if self._down_until and time.monotonic() < self._down_until:
            return UNAVAILABLE
        try:
            conn = self._local.conn
        except AttributeError:
            conn = self._local.conn = self._pool.make_connection()
        try:
            try:
                conn.send_packed_command(command, check_health=False)
                reply = conn.read_response()
            except self._no_script:
                # A fresh or restarted Redis: load the script once and run it again.
                conn.send_command("SCRIPT", "LOAD", script.source, check_health=False)
                conn.read_response()
                conn.send_packed_command(command, check_health=False)
                reply = conn.read_response()
        except self._unreachable as exc:
            # redis-py has closed the connection; the next call opens a new one.
            self._failed(exc)
            return UNAVAILABLE
        if self._outage:
            self._recovered()
        return reply

    def _failed(self, exc: BaseException) -> None:
        choice.count_backend_error("redis")
        with self._lock:
            self._down_until = time.monotonic() + self.retry_interval
            first = not self._outage
            self._outage = True
        if first:
            logger.warning(
                "%s: Redis at %s unreachable (%s: %s); applying on_backend_error until it is back",
                self.what,
                self.url,
                type(exc).__name__,
                # A str, not the exception: a kept log record must not keep its traceback
                # (and through it the limiter or breaker) alive.
                str(exc),
            )
            if self.on_change is not None:
                self.on_change(False, f"{type(exc).__name__}: {exc}")

    def _recovered(self) -> None:
        with self._lock:
            was_down = self._outage
            self._outage = False
            self._down_until = 0.0
        if was_down:
            logger.warning("%s: Redis at %s is reachable again", self.what, self.url)
            if self.on_change is not None:
                self.on_change(True, None)

    @property
    def available(self) -> bool:
        """False during an outage (until a call succeeds again)."""
        return not self._outage


class RedisStore:
    """What every Redis store has: its link, and the clock its scripts read."""

    def __init__(self, link: RedisLink, clock: ManualClock | None) -> None:
        self.link = link
        self._clock = clock

    @property
    def retry_interval(self) -> float:
        """Seconds until an unreachable Redis is tried again."""
        return self.link.retry_interval

    @property
    def available(self) -> bool:
        """False during an outage."""
        return self.link.available

    def now(self) -> bytes:
        """The scripts' `now` argument: empty, so that they read Redis' own clock (the one
        every host agrees on), unless a test drives them with a manual clock (us)."""
        if self._clock is None:
            return b""
        return str(round(self._clock.now() * 1_000_000)).encode()
