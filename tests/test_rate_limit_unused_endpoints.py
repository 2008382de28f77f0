"""An endpoint of this process is made on its first use (issue 19): until then it costs its
name and its place in the limiter, reads as a full budget, and behaves exactly as one
made when it was added."""

from __future__ import annotations

import threading

import pytest

from peak_resilience import RateLimiter
from peak_resilience._health import check_resilience
from peak_resilience.testing import ManualClock


def test_an_endpoint_not_used_yet_reads_as_a_full_budget(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("orders", 5, 1.0, windows=["100/1m fixed"])
    stats = limiter.get_stats("orders")
    assert stats["tokens_available"] == 5
    assert [w["tokens_available"] for w in stats["windows"]] == [5, 100]
    assert (stats["allowed"], stats["rejected"], stats["paused_for"]) == (0, 0, 0.0)
    assert limiter.get_stats()["endpoints"]["orders"]["capacity"] == 5


def test_reading_an_endpoint_does_not_make_its_bucket(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("orders", 5, 1.0)
    limiter.get_stats()
    limiter.get_stats("orders")
    limiter._export()
    assert limiter._endpoint_buckets_to_read()["orders"].blank


def test_endpoints_not_used_yet_share_one_blank_of_their_windows(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    for name in ("a", "b", "c"):
        limiter.add_endpoint(name, 5, 1.0)
    limiter.add_endpoint("other", 7, 1.0)
    read = limiter._endpoint_buckets_to_read()
    assert read["a"] is read["b"] is read["c"]
    assert read["other"] is not read["a"]
    assert read["other"].capacity == 7


def test_the_first_use_makes_the_endpoints_own_bucket_and_the_others_stay_full(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("a", 2, 60.0)
    limiter.add_endpoint("b", 2, 60.0)
    assert [limiter.acquire("a") for _ in range(3)] == [True, True, False]
    assert limiter.get_stats("a")["tokens_available"] == 0
    assert limiter.get_stats("b")["tokens_available"] == 2
    assert not limiter._endpoint_buckets_to_read()["a"].blank
    assert limiter.acquire("b")


def test_every_way_of_reaching_an_endpoints_bucket_gets_a_bucket_of_its_own(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("a", 2, 60.0)
    limiter.add_endpoint("b", 2, 60.0)
    limiter.add_endpoint("c", 2, 60.0)
    bucket = limiter.bucket_for("a")
    assert not bucket.blank
    assert bucket.acquire()
    assert limiter.get_stats("a")["allowed"] == 1
    assert not any(b.blank for b in limiter.endpoint_buckets().values())
    assert limiter.get_wait_time("c") == 0.0


def first_uses_at_once(limiter: RateLimiter, endpoint: str, threads: int) -> list[bool]:
    """What ``threads`` threads get from their first acquire of ``endpoint``, all at once."""
    start = threading.Barrier(threads)
    taken: list[bool] = []

    def take() -> None:
        start.wait()
        taken.append(limiter.acquire(endpoint))

    running = [threading.Thread(target=take) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return taken


def test_two_threads_using_an_endpoint_first_at_once_share_one_bucket(
    clock: ManualClock,
) -> None:
    for _ in range(50):
        limiter = RateLimiter(10, 1, clock=clock)
        limiter.add_endpoint("orders", 8, 3600.0)
        assert sum(first_uses_at_once(limiter, "orders", 8)) == 8
        assert limiter.get_stats("orders")["allowed"] == 8
        assert not limiter.acquire("orders")


def test_a_limiter_pause_holds_its_unused_endpoints_until_it_ends(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("orders", 5, 1.0)
    limiter.pause(10)
    assert limiter.get_stats("orders")["paused_for"] == pytest.approx(10)
    clock.advance(4)
    assert not limiter.acquire("orders")
    assert limiter.bucket_for("orders").paused_for == pytest.approx(6)
    clock.advance(6)
    assert limiter.acquire("orders")


def test_resume_lifts_the_pause_of_unused_endpoints(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("orders", 5, 1.0)
    limiter.pause(10)
    limiter.resume()
    assert limiter.paused_for == 0.0
    assert limiter.acquire("orders")


def test_a_pause_of_the_default_bucket_alone_leaves_unused_endpoints_free(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("orders", 5, 1.0)
    limiter.default_bucket.pause(10)
    assert limiter.acquire("orders")


def test_an_endpoint_added_while_the_limiter_is_paused_is_paused(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.pause(10)
    limiter.add_endpoint("orders", 5, 1.0)
    assert not limiter.acquire("orders")
    assert limiter.paused_for == pytest.approx(10)


def test_adding_an_unused_endpoint_again_changes_its_windows(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("orders", 5, 1.0)
    limiter.add_endpoint("orders", 3, 1.0)
    assert limiter.get_stats("orders")["capacity"] == 3
    assert sum(limiter.acquire("orders") for _ in range(5)) == 3


def test_a_removed_unused_endpoint_gives_back_a_full_bucket_of_its_own(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("a", 5, 1.0)
    limiter.add_endpoint("b", 5, 1.0)
    removed = limiter.remove_endpoint("a")
    assert removed is not None
    assert not removed.blank
    assert removed.tokens_available == 5
    assert removed.acquire()
    assert limiter.get_stats("b")["tokens_available"] == 5
    assert limiter.acquire("a")  # the default bucket now
    assert limiter.get_stats()["allowed"] == 1


def test_a_disabled_endpoint_admits_everything_after_its_first_use(
    clock: ManualClock,
) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("orders", 1, 3600.0)
    for bucket in limiter.endpoint_buckets().values():
        bucket.set_enabled(False)
    assert all(limiter.acquire("orders") for _ in range(5))


def test_a_health_check_makes_no_bucket_for_an_unused_endpoint(clock: ManualClock) -> None:
    limiter = RateLimiter(10, 1, clock=clock)
    limiter.add_endpoint("orders", 5, 1.0)
    healthy, _ = check_resilience()
    assert healthy
    assert limiter._endpoint_buckets_to_read()["orders"].blank
