"""A limiter's or breaker's way to Redis, and what happens when Redis fails it.

Every call is one ``EVALSHA`` of a server-side script (loaded once, reloaded after a
Redis restart flushed it), sent pre-packed (packing seven arguments costs more than the
script runs on the server) on a connection taken from the process' one pool for that
Redis (``pool``) and given back after. Socket and connect timeouts are always set and
redis-py's own retries are off, so a call never blocks longer than ``timeout``. When
Redis fails a call in any way (unreachable, too slow, or refusing it: READONLY after a
failover, LOADING, MASTERDOWN, OOM, BUSY, NOPERM, CLUSTERDOWN, TRYAGAIN, a script
error) the call is counted (``peak_trade_backend_errors_total{backend="redis"}``), the
outage is logged once with the policy being applied, and Redis is left alone for
``retry_interval`` seconds (the caller applies its ``on_backend_error`` policy
meanwhile); the next call after that tries again, and the first one that succeeds logs
the recovery.

A success in a closed circuit sends no command of its own: the breaker's next script
carries it (``carried``). On a Redis Cluster a ``MOVED`` reply sends the link to the
node of its slot, and a ``CROSSSLOT`` one (two keys, two slots) tells the caller to ask
each key on its own (``ONE_SLOT_EACH``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from peak_resilience._backends import choice
from peak_resilience._backends.redis import sentinel
from peak_resilience._backends.redis.pool import MAX_CONNECTIONS, Pool
from peak_resilience._config.secrets import redact_url

if TYPE_CHECKING:
    from peak_resilience._native import ManualClock

__all__ = [
    "DEFERRED",
    "MOVES_FOLLOWED",
    "ONE_SLOT_EACH",
    "UNAVAILABLE",
    "InTurn",
    "RedisLink",
    "RedisStore",
    "Script",
    "named_link",
]

logger = logging.getLogger("peak_resilience.redis")

#: What ``RedisLink.run`` returns when Redis could not be reached.
UNAVAILABLE: Any = object()

#: What it returns when a command's keys are in two Redis Cluster slots (CROSSSLOT).
ONE_SLOT_EACH: Any = object()

#: What it returns to an async call's outcome being recorded: the command is sent (and
#: its reply applied) by ``on_loop`` once the native step has returned.
DEFERRED: Any = object()


class InTurn(NamedTuple):
    """A take asked after a breaker's admission, when the two are on different Redis
    nodes: on ``link``, ``command``; ``refund()`` packs its refund, for a take the
    native step did not use."""

    link: RedisLink
    command: Any
    refund: Callable[[], Any]


class _Steps(threading.local):
    #: The async step running on this thread (``on_loop.Step``): it answers this
    #: thread's Redis calls with replies read by redis.asyncio.
    current: Any = None


#: The step of each thread (None outside ``on_loop``'s native steps).
steps = _Steps()

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


#: The pool of each Redis this process talks to, by URL and timeout, with the client it
#: was made from (for its connection settings: host, TLS, ACL user, database).
_shared: dict[tuple[str, float], tuple[Any, Pool]] = {}
_shared_lock = threading.Lock()


def client_for(url: str, timeout: float, *, on_asyncio: bool = False) -> Any:
    """A redis-py client of ``url`` (a Sentinel URL too; redis.asyncio's if
    ``on_asyncio``), whose connection settings our pools make connections from: each
    bounded by ``timeout``, with TCP keepalive, and no retry or health check of
    redis-py's own (the link decides what a failure is)."""
    redis = _redis()
    from redis.backoff import NoBackoff

    if on_asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        retry: Any = AsyncRetry(NoBackoff(), 0)
    else:
        from redis.retry import Retry

        retry = Retry(NoBackoff(), 0)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # A peer gone without a word (a host down, a NAT entry dropped) is found by the
        # kernel, not by a call waiting for a reply that never comes.
        "socket_keepalive": True,
        "retry": retry,
        "health_check_interval": 0,
    }
    if not on_asyncio:
        options["retry_on_timeout"] = False
    try:
        if sentinel.is_sentinel_url(url):
            # Its connections ask a sentinel for the master as they connect; one open to
            # a master demoted by a failover is closed at its first READONLY reply.
            return sentinel.master_client(url, on_asyncio=on_asyncio, **options)
        if on_asyncio:
            return redis.asyncio.Redis.from_url(url, **options)
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ValueError(f"redis_url {redact_url(url)!r} is not a Redis URL: {exc}") from exc


def _pool_for(url: str, timeout: float) -> tuple[Any, Pool]:
    """The one client and pool of this process for ``url`` with ``timeout``."""
    with _shared_lock:
        found = _shared.get((url, timeout))
        if found is not None:
            return found
        redis = _redis()
        client = client_for(url, timeout)
        settings = client.connection_pool
        pool = Pool(
            # Made here, not by redis-py's pool: it counts each one it makes against its
            # own limit and never learns that ours gave it back.
            lambda: settings.connection_class(**settings.connection_kwargs),
            size=MAX_CONNECTIONS,
            wait=timeout,
            closed=(redis.ConnectionError,),
            answered=(redis.ResponseError,),
            exhausted=redis.ConnectionError,
        )
        _shared[(url, timeout)] = (client, pool)
        return client, pool


#: MOVED replies one call follows at most, as redis-py's RedisCluster (a failover being
#: learned: a node may name one that names another); one more is a failure.
MOVES_FOLLOWED = 3

#: The Redis Cluster nodes each ``redis_url`` has led this process to (MOVED replies),
#: itself first: where a link whose node failed looks for the slot's node next.
_cluster_nodes: dict[str, list[str]] = {}


class RedisLink:
    """One limiter's or breaker's way to Redis: the process' pool for its URL, and the
    outage policy."""

    def __init__(
        self,
        url: str | None,
        *,
        timeout: float,
        what: str,
        policy: str = "local",
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(
                f"backend='redis' needs redis_url (e.g. 'redis://127.0.0.1:6379/0'), got {url!r}"
            )
        timeout = choice.check_timeout(timeout)
        redis = _redis()
        # Every way Redis can fail to serve a call, as the caller's on_backend_error
        # sees it: unreachable, too slow, or refusing (READONLY after a failover, LOADING,
        # MASTERDOWN, OOM, BUSY, NOPERM, CLUSTERDOWN, TRYAGAIN, a script error).
        self._failures = (redis.RedisError, OSError)
        #: Answers from a Redis that is up but will not serve (LOADING is a
        #: ConnectionError to redis-py).
        self._refusing = (redis.ResponseError, redis.exceptions.BusyLoadingError)
        self._no_script = redis.exceptions.NoScriptError
        self._refused = redis.ResponseError
        self.client, self._pool = _pool_for(url, timeout)
        self._seed_url = url
        self._seed_pool = self._pool
        #: The URL of the node this link asks: ``url``, or on a Cluster the node that a
        #: MOVED reply named (the async path connects to it by this URL).
        self.node_url = url
        self._moved = redis.exceptions.MovedError
        self._cross_slot = redis.exceptions.ClusterCrossSlotError
        #: For log lines and errors: the password masked.
        self.url = redact_url(url)
        self.timeout = timeout
        self.what = what
        self.policy = policy
        self.retry_interval = retry_interval
        self._down_until = 0.0
        self._outage = False
        self._lost_logged_at = -_LOST_LOGGED_EVERY
        self._lock = threading.Lock()
        # Packs commands only; never connected.
        self._packer = self._pool.unconnected()
        #: Told ``(available, error)`` when an outage starts and when it ends (events).
        self.on_change: Callable[[bool, str | None], object] | None = None

    @property
    def pool(self) -> Pool:
        """The connections this link shares with every link of the process to its Redis."""
        return self._pool

    def pack(self, script: Script, key: str, *args: Any) -> Any:
        """The wire form of running ``script`` on ``key`` with ``args``, for ``run_packed``."""
        return self._packer.pack_command("EVALSHA", script.sha, 1, key, *args)

    def pack_keys(self, script: Script, keys: tuple[str, ...], *args: Any) -> Any:
        """``pack`` for a script of several keys."""
        return self._packer.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)

    @property
    def clustered(self) -> bool:
        """Whether this link's Redis is a Cluster, as far as its replies have shown (a
        MOVED, a CROSSSLOT): then each call has the keys of one slot."""
        return self._pool is not self._seed_pool or self._pool.clustered

    def run(self, script: Script, key: str, *args: Any) -> Any:
        """Runs ``script`` on ``key`` with ``args``: its reply, or ``UNAVAILABLE``."""
        return self.run_packed(script, self.pack(script, key, *args))

    def run_packed(self, script: Script, command: Any) -> Any:
        """Sends a command made by ``pack``: the script's reply, or ``UNAVAILABLE``."""
        step = steps.current
        if step is not None:
            return step.answer(self, script, command)
        return self.call_now(script, command)

    def record(self, script: Script, key: str, *args: Any) -> Any:
        """``run`` for a call's outcome: in an async step, the command is sent and its
        reply applied after the step (``DEFERRED``, see ``on_loop``)."""
        command = self.pack(script, key, *args)
        step = steps.current
        if step is not None:
            return step.answer(self, script, command, deferrable=True)
        return self.call_now(script, command)

    def call_now(self, script: Script, command: Any) -> Any:
        """Sends ``command`` on a connection of the pool, on this thread."""
        if self._down_until and time.monotonic() < self._down_until:
            return UNAVAILABLE

        def send(conn: Any) -> Any:
            if conn._sock is None:
                # connect() (not the implicit connect of a send): a Sentinel connection
                # asks for the master.
                conn.connect()
            conn.send_packed_command(command, check_health=False)
            return self._read_reply(conn, script, command)

        try:
            try:
                reply = self._pool.call(send)
            except self._cross_slot:
                self._pool.clustered = True
                return ONE_SLOT_EACH
            except self._moved as moved:
                reply = self._follow_moves(moved, send)
        except self._failures as exc:
            self.leave_node(exc)
            self._failed(exc)
            return UNAVAILABLE
        if self._outage:
            self._recovered()
        return reply

    def _follow_moves(self, moved: Any, send: Callable[[Any], Any]) -> Any:
        """``send``'s reply from the node ``moved`` names, following up to
        ``MOVES_FOLLOWED`` redirects: while a Cluster's nodes learn of a failover, one may
        name a node that names another."""
        for hop in range(1, MOVES_FOLLOWED + 1):
            self.follow(moved)
            try:
                return self._pool.call(send)
            except self._moved as again:
                if hop == MOVES_FOLLOWED:
                    raise
                moved = again
        raise AssertionError("unreachable")  # pragma: no cover

    def follow(self, moved: Any) -> None:
        """Redis Cluster: the node named by the ``MOVED`` reply ``moved`` serves this
        link's slot. It is asked now and from now on (every key of this link has one hash
        tag: one slot), reached as ``redis_url`` says (its user, password and TLS)."""
        parts = urlsplit(self._seed_url)
        user = parts.netloc.rpartition("@")[0]
        host, port = moved.host, moved.port
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        netloc = f"{user}@{where}" if user else where
        url = urlunsplit(parts._replace(netloc=netloc))
        with _shared_lock:
            known = _cluster_nodes.setdefault(self._seed_url, [self._seed_url])
            if url not in known:
                known.append(url)
        self._ask_node(url)

    def leave_node(self, exc: BaseException) -> None:
        """After ``exc`` failed a call on a Redis Cluster: unless the node answered (it is
        up), it may be gone (a failover, the node of ``redis_url`` too): the next call
        asks the next node this process has learned of, which names the node serving the
        slot now. Any node of a Cluster can; all of them gone is an outage."""
        if isinstance(exc, self._refusing):
            return
        with _shared_lock:
            known = list(_cluster_nodes.get(self._seed_url, ()))
        if len(known) < 2:
            return  # one Redis (or a Cluster that never redirected us): nothing to try
        at = known.index(self.node_url) if self.node_url in known else -1
        self._ask_node(known[(at + 1) % len(known)])

    def _ask_node(self, url: str) -> None:
        self.node_url = url
        self._pool = self._seed_pool if url == self._seed_url else _pool_for(url, self.timeout)[1]

    def _lost(self, exc: BaseException) -> None:
        """A record whose reply nobody waits for (an async step's refund) that Redis
        refused: counted, and logged (at most once a minute: during an outage every
        call's would be)."""
        choice.count_backend_error("redis")
        now = time.monotonic()
        if now - self._lost_logged_at >= _LOST_LOGGED_EVERY:
            self._lost_logged_at = now
            logger.warning(
                "Redis at %s refused a record sent without waiting, now lost (%s: %s); "
                "each one is counted in peak_trade_backend_errors_total",
                self.url,
                type(exc).__name__,
                str(exc),
            )

    def _read_reply(self, conn: Any, script: Script, command: Any) -> Any:
        try:
            return conn.read_response()
        except self._no_script:
            # A fresh or restarted Redis: load the script once and run the command again.
            conn.send_command("SCRIPT", "LOAD", script.source, check_health=False)
            conn.read_response()
            conn.send_packed_command(command, check_health=False)
            return conn.read_response()

    def _failed(self, exc: BaseException) -> None:
        choice.count_backend_error("redis")
        with self._lock:
            self._down_until = time.monotonic() + self.retry_interval
            first = not self._outage
            self._outage = True
        if first:
            logger.warning(
                "%s: Redis at %s %s (%s: %s); applying on_backend_error=%r until it answers",
                self.what,
                self.url,
                "refused the call" if isinstance(exc, self._refusing) else "unreachable",
                type(exc).__name__,
                # A str, not the exception: a kept log record must not keep its traceback
                # (and through it the limiter or breaker) alive.
                str(exc),
                self.policy,
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


#: Seconds between two log lines of one link about lost bookkeeping (each loss is counted).
_LOST_LOGGED_EVERY = 60.0


def named_link(
    kind: str, name: str | None, url: str | None, *, timeout: float, policy: str
) -> tuple[str, RedisLink]:
    """The name and the link of the ``kind`` ("breaker" or "limiter") called ``name``."""
    if not name:
        shares = "state" if kind == "breaker" else "budget"
        raise ValueError(
            f"backend='redis' needs a name for the {kind}: hosts find the same {shares} by name"
        )
    what = "circuit breaker" if kind == "breaker" else "rate limiter"
    return name, RedisLink(url, timeout=timeout, what=f"{what} {name!r}", policy=policy)


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
