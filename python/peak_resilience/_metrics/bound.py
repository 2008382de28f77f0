"""The cardinality bound over the names of constructed objects (breakers, limiters,
bulkheads), applied when a scrape reads them (a limiter's endpoints and keys are bounded
where they are made, see ``_bucket_series``).

A process that makes a breaker per symbol may hold 100,000 of them: exported one series
each, a scrape grows with the objects rather than with what it tells. Each group of
families exports at most ``max_series_per_family`` label values under their own name; the
rest are exported as ``other`` (counters summed, a gauge showing the worst of them), each
distinct value counted once in ``..._metrics_label_values_folded_total``. A value keeps
its place while it is read (a shown series does not move to ``other``); one no longer read
(an object dropped with nothing counted) frees its place for the next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from peak_resilience._metrics.families import OTHER

__all__ = ["NameBound", "ObjectNames", "fold", "same"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class NameBound:
    """The label values of one group of families: those kept under their own name at the
    last read, and how many distinct ones were folded into ``other``."""

    def __init__(self) -> None:
        self._kept: set[Hashable] = set()
        #: Hashes of the values folded, so that each is counted once (an int is smaller
        #: than the name it stands for; a collision would undercount by one).
        self._folded: set[int] = set()
        self._lock = threading.Lock()

    @property
    def folded(self) -> int:
        """Distinct label values exported as ``other`` so far."""
        return len(self._folded)

    def choose(
        self, values: Iterable[Hashable], bound: int, other: Hashable = OTHER
    ) -> Callable[[Hashable], bool]:
        """Whether each of this read's label values ``values`` keeps its own series: those
        kept at the last read first (a shown series does not move to ``other`` while it
        is exported), then new ones in order while fewer than ``bound`` are kept.
        ``other`` itself always is. A value no longer read frees its place."""
        present = dict.fromkeys(values)
        with self._lock:
            kept = {value for value in present if value in self._kept}
            for value in present:
                if len(kept) >= bound:
                    break
                kept.add(value)
            kept.add(other)
            self._folded.update(hash(value) for value in present if value not in kept)
            self._kept = kept
        return kept.__contains__

    def clear(self) -> None:
        with self._lock:
            self._kept = set()
            self._folded.clear()


def fold(
    table: dict[K, V],
    keeps: Callable[[Hashable], bool],
    label: Callable[[K], Hashable],
    as_other: Callable[[K], K],
    combine: Callable[[V, V], V],
) -> dict[K, V]:
    """``table`` with every key whose label value (``label(key)``) is not kept moved to
    ``as_other(key)``, values meeting there combined by ``combine``."""
    out: dict[K, V] = {}
    for key, value in table.items():
        if not keeps(label(key)):
            key = as_other(key)
        out[key] = combine(out[key], value) if key in out else value
    return out


def same(value: Any) -> Any:
    """The label value of a key that is the label value itself."""
    return value


class ObjectNames:
    """The bounds of a ``Metrics``: breaker, limiter and bulkhead names, each its own
    group."""

    def __init__(self) -> None:
        self.breakers = NameBound()
        self.buckets = NameBound()
        self.bulkheads = NameBound()

    def clear(self) -> None:
        for group in (self.breakers, self.buckets, self.bulkheads):
            group.clear()
