"""backend="redis" on a Redis Cluster of 3 masters: redis_url names any node."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis_server import RedisServer, free_cluster_port
from refusing_redis import refusing_redis

from peak_resilience import CircuitBreaker, CircuitState, RateLimiter
from peak_resilience._backends.choice import backend_error_counts
from peak_resilience._guard import guard

NAMES = [f"venue-{n}" for n in range(12)]  # their hash tags fall on every master


@contextlib.contextmanager
def running_cluster(
    workdirs: pytest.TempPathFactory, replicas: int, *options: str
) -> Iterator[list[RedisServer]]:
    """Three masters with ``replicas`` replicas each, slots split by
    ``redis-cli --cluster create``; ``options`` for every node."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed: run `bash scripts/packages`")
    nodes = [
        RedisServer(
            workdirs.mktemp(f"cluster-{n}"),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            *options,
            port=free_cluster_port(),
        )
        for n in range(3 * (1 + replicas))
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in nodes:
            _wait_for_cluster_ok(node)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """Three masters."""
    with running_cluster(tmp_path_factory, replicas=0) as nodes:
        yield nodes


def _until(done: Callable[[], bool], seconds: float) -> bool:
    """Whether ``done()`` came true within ``seconds`` (looked at every 50 ms)."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_for_cluster_ok(node: RedisServer) -> None:
    client = redis.Redis.from_url(node.url, socket_timeout=5)
    if not _until(lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"), 30):
        raise RuntimeError(f"the cluster is not ok on port {node.port} within 30 s")


def url(node: RedisServer) -> str:
    return f"redis://127.0.0.1:{node.port}"


def on(node: RedisServer) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": url(node), "on_backend_error": "fail_closed"}


def keys_per_node(cluster: list[RedisServer], pattern: str) -> list[int]:
    clients = [redis.Redis.from_url(url(n), socket_timeout=5) for n in cluster]
    return [len(list(client.scan_iter(match=pattern))) for client in clients]


def test_budgets_on_a_cluster_are_exact_whichever_node_the_url_names(
    cluster: list[RedisServer],
) -> None:
    first, second, third = cluster
    for name in NAMES:
        here = RateLimiter(3, 3600, name=f"budget-{name}", **on(first))
        there = RateLimiter(3, 3600, name=f"budget-{name}", **on(second))
        elsewhere = RateLimiter(3, 3600, name=f"budget-{name}", **on(third))
        taken = [here.acquire(), there.acquire(), elsewhere.acquire(), here.acquire()]
        assert taken == [True, True, True, False], name
        assert there.get_stats()["allowed"] == 3
    # The budgets live on every master, not on the one the URL names.
    assert all(count > 0 for count in keys_per_node(cluster, "*limiter:budget-*"))


def test_a_breaker_opened_through_one_node_is_open_through_the_others(
    cluster: list[RedisServer],
) -> None:
    first, second, third = cluster
    for name in NAMES:
        opener = CircuitBreaker(2, 60, f"breaker-{name}", **on(first))
        watcher = CircuitBreaker(2, 60, f"breaker-{name}", **on(third))
        opener.record_failure()
        assert watcher.state is CircuitState.CLOSED
        CircuitBreaker(2, 60, f"breaker-{name}", **on(second)).record_failure()
        assert watcher.state is CircuitState.OPEN, name
        assert not opener.allow()
    # A breaker's state is one key, in one slot: on whichever master serves it.
    per_node = keys_per_node(cluster, "*breaker:breaker-*")
    assert sum(per_node) == len(NAMES) and all(count > 0 for count in per_node)


def test_a_guarded_call_on_a_cluster_asks_the_breaker_and_the_budget_apart(
    cluster: list[RedisServer],
) -> None:
    first, *_ = cluster
    before = backend_error_counts()["redis"]
    for name in NAMES:
        breaker = CircuitBreaker(2, 60, f"guarded-{name}", **on(first))
        limiter = RateLimiter(2, 3600, name=f"guarded-{name}", **on(first))
        order = guard(lambda: "filled", breaker=breaker, limiter=limiter, fallback="queued")
        # Their keys are in two slots: one script for both is refused (CROSSSLOT), and
        # each is asked on its own; fail_closed would have refused a call Redis failed.
        assert [order(), order(), order()] == ["filled", "filled", "queued"], name
    assert backend_error_counts()["redis"] == before


def test_async_calls_on_a_cluster_keep_budgets_exact_and_breakers_shared(
    cluster: list[RedisServer],
) -> None:
    # The same answers as the sync calls above, on redis.asyncio.
    first, second, _ = cluster
    for name in NAMES:
        limiter = RateLimiter(3, 3600, name=f"async-budget-{name}", **on(first))
        breaker = CircuitBreaker(1, 3600, f"async-breaker-{name}", **on(second))

        async def send() -> str:
            return "sent"

        async def fail() -> str:
            raise ConnectionError("venue down")

        order = guard(send, limiter=limiter, fallback="refused")
        failing = guard(fail, breaker=breaker, fallback="refused", fallback_on_failure=True)

        async def run(order: Any, failing: Any) -> list[str]:
            sent = [await order() for _ in range(4)]
            return [*sent, await failing(), await failing()]

        assert asyncio.run(run(order, failing)) == [
            "sent",
            "sent",
            "sent",
            "refused",
            "refused",
            "refused",
        ]
        assert breaker.state is CircuitState.OPEN, name
        assert (
            RateLimiter(3, 3600, name=f"async-budget-{name}", **on(second)).get_stats()["allowed"]
            == 3
        )
    del order, failing, limiter, breaker
    gc.collect()  # dropped here, not in a later test (which would find them in its exports)


def test_async_guarded_calls_on_a_cluster_ask_breaker_and_budget_in_turn_on_the_loop(
    cluster: list[RedisServer],
) -> None:
    first, second, third = cluster
    before = backend_error_counts()["redis"]
    for name in NAMES:
        breaker = CircuitBreaker(2, 60, f"async-guarded-{name}", **on(first))
        limiter = RateLimiter(2, 3600, name=f"async-guarded-{name}", **on(second))

        async def send() -> str:
            return "filled"

        order = guard(send, breaker=breaker, limiter=limiter, fallback="queued")

        async def run(order: Any) -> tuple[list[str], set[threading.Thread]]:
            threads = set(threading.enumerate())
            # Their keys are in two slots: the one-script admission is refused
            # (CROSSSLOT) and started over, the breaker and the budget asked in turn.
            answers = [await order() for _ in range(3)]
            return answers, set(threading.enumerate()) - threads

        answers, new_threads = asyncio.run(run(order))
        assert answers == ["filled", "filled", "queued"], name
        # (The one flusher of the process, sending successes left alone, aside.)
        assert {t for t in new_threads if t.name != "peak-resilience-flusher"} == set(), (
            "an async call on a Cluster started a thread"
        )
        assert (
            RateLimiter(2, 3600, name=f"async-guarded-{name}", **on(third)).get_stats()["allowed"]
            == 2
        )
        watcher = CircuitBreaker(2, 60, f"async-guarded-{name}", **on(third))
        # Another object (of another URL: another host) reads the last success once the
        # flusher has sent it.
        assert _until(lambda w=watcher: w.get_stats()["successes"] == 2, 5), name
    assert backend_error_counts()["redis"] == before
    del order, breaker, limiter, watcher
    gc.collect()


def _role(node: RedisServer) -> bytes:
    return bytes(redis.Redis.from_url(url(node), socket_timeout=5).execute_command("ROLE")[0])


def _master_port(node: RedisServer) -> int | None:
    """The port of ``node``'s master, if it is a replica."""
    role = redis.Redis.from_url(url(node), socket_timeout=5).execute_command("ROLE")
    return int(role[2]) if bytes(role[0]) == b"slave" else None


def _synced(replica: RedisServer) -> bool:
    client = redis.Redis.from_url(url(replica), socket_timeout=5)
    return bool(client.info("replication").get("master_link_status") == "up")


def _fail_over_every_master(nodes: list[RedisServer]) -> None:
    """Each replica takes over from its master (``CLUSTER FAILOVER``: the master's writes
    all reach it first), one after the other, as an operator's maintenance does."""
    replicas = [node for node in nodes if _role(node) == b"slave"]
    assert len(replicas) == 3
    for replica in replicas:
        if not _until(lambda: _synced(replica), 30):  # noqa: B023 (called in the loop)
            raise RuntimeError(f"the replica on port {replica.port} did not sync")
        # A manual failover that does not get its votes within 5 s is given up by the
        # replica (a busy machine, a node not yet known everywhere): asked again.
        for _ in range(5):
            redis.Redis.from_url(url(replica), socket_timeout=5).execute_command(
                "CLUSTER", "FAILOVER"
            )
            if _until(lambda: _role(replica) == b"master", 8):  # noqa: B023
                break
        else:
            raise RuntimeError(f"the replica on port {replica.port} did not take over")
    for node in nodes:
        _wait_for_cluster_ok(node)


def test_budgets_and_breakers_hold_through_a_cluster_failover_sync_and_async(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_cluster(tmp_path_factory, replicas=1) as nodes:
        masters = [node for node in nodes if _role(node) == b"master"]
        before = backend_error_counts()["redis"]
        limiter = RateLimiter(6, 3600, name="failover", **on(masters[0]))
        breaker = CircuitBreaker(3, 3600, "failover", **on(masters[1]))

        async def send() -> str:
            return "filled"

        order = guard(send, limiter=limiter, fallback="refused")

        async def calls(count: int, order: Any) -> list[str]:
            return [await order() for _ in range(count)]

        assert [limiter.acquire(), limiter.acquire()] == [True, True]
        assert asyncio.run(calls(2, order)) == ["filled", "filled"]
        breaker.record_failure()
        breaker.record_failure()

        _fail_over_every_master(nodes)

        # The same objects, their nodes now replicas that redirect every key (MOVED).
        assert limiter.acquire()
        assert asyncio.run(calls(2, order)) == ["filled", "refused"]
        assert not limiter.acquire()
        assert breaker.state is CircuitState.CLOSED
        breaker.record_failure()  # the third: the two before the failover were kept
        assert breaker.state is CircuitState.OPEN
        assert CircuitBreaker(3, 3600, "failover", **on(masters[2])).state is CircuitState.OPEN
        # fail_closed: a call Redis had failed would have been refused, and counted.
        assert backend_error_counts()["redis"] == before
        del order, limiter, breaker
        gc.collect()


def test_objects_whose_url_names_a_node_that_died_follow_the_cluster_to_its_replica(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A node is failed within a second of going silent (default: 15 s).
    with running_cluster(tmp_path_factory, 1, "--cluster-node-timeout", "1000") as nodes:
        seed, *others = [node for node in nodes if _role(node) == b"master"]
        limiters = [RateLimiter(100, 3600, name=f"seed-{name}", **on(seed)) for name in NAMES]
        for limiter in limiters:
            limiter.store.link.retry_interval = 0.0  # tried again at the next call
            assert limiter.acquire()  # the limiters of other masters' slots are redirected
        (replica,) = [node for node in nodes if _master_port(node) == seed.port]
        assert _until(lambda: _synced(replica), 30)
        seed_client = redis.Redis.from_url(url(seed), socket_timeout=15)
        assert seed_client.execute_command("WAIT", 1, 10_000) == 1  # its writes replicated
        seed.stop()  # the node every redis_url names is gone; its replica takes over
        assert _until(lambda: _role(replica) == b"master", 30), "no replica took over"
        for node in others:
            _wait_for_cluster_ok(node)
        for name, limiter in zip(NAMES, limiters, strict=True):
            # At most one call meets the dead node (fail_closed refuses it); the next asks
            # another node this process knows, which names the slot's new master.
            answers = [limiter.acquire() for _ in range(2)]
            assert answers[-1], name
            assert asyncio.run(limiter.acquire_async(timeout=0)), name
            allowed = 1 + answers.count(True) + 1
            reader = RateLimiter(100, 3600, name=f"seed-{name}", **on(others[0]))
            assert reader.get_stats()["allowed"] == allowed, name
        del limiters, limiter, reader
        gc.collect()


@contextlib.contextmanager
def redirects(count: int, to: str) -> Iterator[str]:
    """The URL of the first of ``count`` servers that each answer every command with a
    MOVED to the next, the last to the Redis at ``to`` (as nodes still learning of a
    failover can)."""
    with contextlib.ExitStack() as stack:
        target = to
        for _ in range(count):
            port = target.split(":")[-1].split("/")[0]
            target = stack.enter_context(refusing_redis(f"MOVED 1 127.0.0.1:{port}"))
        yield target


@pytest.mark.parametrize("hops", [1, 3])
def test_a_call_follows_moved_replies_from_node_to_node(redis_url: str, hops: int) -> None:
    with redirects(hops, redis_url) as first:
        limiter = RateLimiter(2, 3600, name=f"hops-{hops}", **on_url(first))
        assert limiter.acquire()
        assert asyncio.run(limiter.acquire_async(timeout=0))
        assert not limiter.acquire()  # the budget of the Redis at the end of the chain
    del limiter
    gc.collect()


def test_a_fourth_moved_reply_in_a_row_is_a_failure(redis_url: str) -> None:
    with redirects(4, redis_url) as first:
        limiter = RateLimiter(2, 3600, name="hops-4", **on_url(first))
        before = backend_error_counts()["redis"]
        assert not limiter.acquire()  # fail_closed
        assert backend_error_counts()["redis"] == before + 1
    del limiter
    gc.collect()


def on_url(url: str) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": url, "on_backend_error": "fail_closed"}
