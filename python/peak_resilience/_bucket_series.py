"""Which series the rate-limit families count a limiter's bucket under (issue 13).

Each bucket is a label pair (limiter, endpoint) in the requests, rejections and tokens
families. Endpoints and per-key budgets may be many, so past a bound
(``metrics.max_series_per_family``, 1,000 by default) new endpoints are counted under
(limiter, ``"other"``), each such bucket once in
``peak_trade_metrics_label_values_folded_total``. A limiter's own bucket ("default")
always has its series. What a bucket was given it keeps for its life, and a pair keeps
its own series while anything is exported under it: a count never moves from one series
to another (Prometheus would read the series it left as a counter reset).
"""

from __future__ import annotations

import threading
import weakref

from peak_resilience._fork import after_fork_in_child
from peak_resilience._metrics.families import OTHER
from peak_resilience._native import TokenBucket

__all__ = ["DEFAULT_ENDPOINT", "BucketSeries", "series"]

#: The endpoint label of a limiter's own bucket.
DEFAULT_ENDPOINT = "default"


class BucketSeries:
    """The (limiter, endpoint) pairs with a series of their own, at most ``bound``."""

    def __init__(self, bound: int = 1000) -> None:
        self.bound = bound
        self._own: set[tuple[str, str]] = set()
        self._folded_buckets: weakref.WeakSet[TokenBucket] = weakref.WeakSet()
        #: Buckets counted under "other" so far (a counter: never goes down).
        self.folded = 0
        self._lock = threading.Lock()

    def label(self, limiter: str, endpoint: str, bucket: TokenBucket) -> str:
        """The endpoint label that ``bucket`` (endpoint ``endpoint`` of ``limiter``) is
        counted under: ``endpoint``, or ``"other"`` once the bound is reached."""
        if endpoint == DEFAULT_ENDPOINT or (limiter, endpoint) in self._own:
            return endpoint
        with self._lock:
            if bucket in self._folded_buckets:
                return OTHER
            if len(self._own) < self.bound:
                self._own.add((limiter, endpoint))
                return endpoint
            self._folded_buckets.add(bucket)
            self.folded += 1
        return OTHER

    def keep_only(self, exported: set[tuple[str, str]]) -> None:
        """Frees the places of pairs no longer exported (their limiter gone, nothing
        retired under them), for endpoints to come."""
        with self._lock:
            self._own &= exported


#: The process-wide table (its bound follows ``metrics.configure``).
series = BucketSeries()


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock at the fork.
    series._lock = threading.Lock()


after_fork_in_child(_after_fork_in_child)
