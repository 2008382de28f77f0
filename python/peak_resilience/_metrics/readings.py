"""Every exported value at one instant, read from the live objects at scrape time.

Nothing per call goes through prometheus-client. A read walks the live breakers and
limiters (weakly held, so a dropped one disappears) and the operation registry, reads
their atomics and merges what explicit ``metrics.record_*`` calls reported. Several
objects may share a name: counters are then summed, the state gauge shows the worst state
and the tokens gauge the emptiest bucket. What dropped objects counted stays in their
name's counters (``_instances.retired``), so that no counter ever goes down.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from peak_resilience import _instances
from peak_resilience._backends.choice import backend_error_counts
from peak_resilience._bucket_series import series as bucket_series
from peak_resilience._metrics.bound import ObjectNames, fold, same
from peak_resilience._metrics.families import OTHER, STATE_LABELS
from peak_resilience._native import LATENCY_BOUNDS

__all__ = ["Readings", "read"]

#: Which state a name shows when several objects share it: the one that refuses most.
_SEVERITY = (0, 4, 5, 6, 1, 3)
#: (from, to, exported at zero). A breaker's first opening is exported at zero, so that
#: ``increase()`` sees the breaker open (the alert's and the dashboard's query); the rest
#: of the normal cycle is exported at zero once the breaker has opened, not by every
#: breaker that never did (three series of zeros each: 100,000 breakers made a 52 MB
#: scrape); forced ones (reset, force_open) appear once they happened.
_TRANSITIONS = (
    (0, 2, "always"),
    (2, 1, "once opened"),
    (1, 0, "once opened"),
    (1, 2, "once opened"),
    (2, 0, "never"),
    (0, 1, "never"),
)


def _quantile(q: float, cumulative: list[int]) -> float | None:
    """The q-quantile estimated from the histogram as Prometheus' histogram_quantile does:
    linear within the bucket; a rank in the +Inf bucket reads as the highest bound."""
    count = cumulative[-1]
    if count == 0:
        return None
    rank = q * count
    lower, below = 0.0, 0
    for bound, seen in zip(LATENCY_BOUNDS, cumulative, strict=False):
        if seen >= rank:
            in_bucket = seen - below
            return lower + (bound - lower) * ((rank - below) / in_bucket if in_bucket else 1.0)
        lower, below = bound, seen
    return LATENCY_BOUNDS[-1]


def _operation_summary(snap: dict[str, Any]) -> dict[str, Any]:
    """One operation in the JSON summary: exact counts, sum, min and max; quantiles
    estimated from the buckets (``quantiles_estimated``) but never outside [min, max],
    and exact when every call took the same time."""
    cumulative: list[int] = snap["buckets"]
    timed = cumulative[-1]
    failures: dict[str, int] = snap["failures"]
    failed = sum(failures.values())
    low: float | None = snap["min"]
    high: float | None = snap["max"]

    def quantile(q: float) -> float | None:
        estimate = _quantile(q, cumulative)
        if estimate is None or low is None or high is None:
            return estimate
        return min(max(estimate, low), high)

    return {
        "count": snap["successes"] + failed,
        "successes": snap["successes"],
        "failures": failed,
        "failures_by_type": dict(failures),
        "latency_seconds": {
            "count": timed,
            "sum": snap["sum"],
            "min": low,
            "max": high,
            "mean": snap["sum"] / timed if timed else None,
            "p50": quantile(0.50),
            "p95": quantile(0.95),
            "p99": quantile(0.99),
            "quantiles_estimated": timed > 0 and low != high,
        },
    }


@dataclass(frozen=True)
class Readings:
    """Every exported value at one instant, keyed by label values."""

    breaker_states: dict[str, int]
    breaker_failures: dict[str, int]
    state_changes: dict[tuple[str, str, str], int]
    requests: dict[tuple[str, str], int]
    rejections: dict[tuple[str, str], int]
    tokens: dict[tuple[str, str], float]
    operations: dict[str, dict[str, Any]]
    folded: dict[str, int]
    #: Each health check's outcome and whether it is critical, as (healthy, critical);
    #: empty when the read skipped them.
    health: dict[str, tuple[bool, bool]]
    #: Failed backend calls by backend (``{"redis": n}``, once a Redis object exists).
    backend_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    #: The machine's own state of breakers in metrics_only mode.
    breaker_shadow_states: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Would-be refusals of breakers that are (or were) in metrics_only mode.
    breaker_would_reject: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Slow calls of breakers with a slow_call_duration (or that counted some).
    breaker_slow_calls: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Calls refused by an open breaker (the function not run), by breaker name.
    breaker_rejections: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Tokens per window of the buckets of several windows: (limiter, endpoint, window).
    window_tokens: dict[tuple[str, str, str], float] = dataclasses.field(default_factory=dict)
    #: Seconds each limiter stays paused (0.0 when it is not).
    paused: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Retries made, by operation (operations with a retry policy).
    retries: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Calls holding a bulkhead slot now, and calls refused for want of one, by bulkhead.
    bulkhead_in_flight: dict[str, int] = dataclasses.field(default_factory=dict)
    bulkhead_rejections: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Async calls cancelled by their timeout, by operation.
    timeouts: dict[str, int] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON form: breakers, limiters by endpoint, operations with latency."""
        breakers: dict[str, dict[str, Any]] = {}
        for name, code in self.breaker_states.items():
            breakers[name] = {
                "state": STATE_LABELS[code],
                "state_code": code,
                "failures": self.breaker_failures.get(name, 0),
                "state_changes": {},
            }
            if name in self.breaker_shadow_states:
                breakers[name]["shadow_state"] = STATE_LABELS[self.breaker_shadow_states[name]]
            if name in self.breaker_would_reject:
                breakers[name]["would_reject"] = self.breaker_would_reject[name]
            if name in self.breaker_slow_calls:
                breakers[name]["slow_calls"] = self.breaker_slow_calls[name]
        for (name, before, after), count in self.state_changes.items():
            entry = breakers.setdefault(
                name, {"state": None, "state_code": None, "failures": 0, "state_changes": {}}
            )
            if count:
                entry["state_changes"][f"{before}->{after}"] = count
        limiters: dict[str, dict[str, dict[str, Any]]] = {}
        for (name, endpoint), requests in self.requests.items():
            rejected = self.rejections.get((name, endpoint), 0)
            limiters.setdefault(name, {})[endpoint] = {
                "requests": requests,
                "rejections": rejected,
                "rejection_rate": rejected / requests if requests else 0.0,
                "tokens_available": self.tokens.get((name, endpoint)),
            }
        for (name, endpoint, window), available in self.window_tokens.items():
            bucket = limiters.get(name, {}).get(endpoint)
            if bucket is not None:
                bucket.setdefault("windows", {})[window] = available
        for name, paused in self.paused.items():
            for entry in limiters.get(name, {}).values():
                entry["paused_seconds"] = paused
        operations = {name: _operation_summary(snap) for name, snap in self.operations.items()}
        return {
            "circuit_breakers": breakers,
            "rate_limiters": limiters,
            "operations": operations,
            "folded_label_values": dict(self.folded),
            "backend_errors": dict(self.backend_errors),
        }


def _kept_in(breaker: Any) -> Any:
    """Where ``breaker``'s counts are kept for every object of its name (its shared file,
    or its Redis and key); None for counts of its own."""
    if breaker.shared_path is not None:
        return breaker.shared_path
    store = breaker.store
    if store is None:
        return None
    return (store.link.url, store.key)


def read(
    reported_transitions: dict[tuple[str, str, str], int],
    reported_states: dict[str, int],
    reported_hits: dict[tuple[str, str], int],
    reported_rejections: dict[tuple[str, str], int],
    folded: dict[str, int],
    health: dict[str, tuple[bool, bool]],
    names: ObjectNames | None = None,
    bound: int = 0,
) -> Readings:
    """Reads every live breaker, limiter and operation, merged with what was reported;
    with ``names``, at most ``bound`` breaker, limiter and bulkhead names keep
    their own series (the others are exported as "other", see ``bound``)."""
    states: dict[str, int] = {}
    failures: dict[str, int] = {}
    changes = dict(reported_transitions)
    shadow_states: dict[str, int] = {}
    would_reject: dict[str, int] = {}
    slow_calls: dict[str, int] = {}
    refused: dict[str, int] = {}
    shared_breakers: set[Any] = set()
    with _instances.lock:  # the live objects and the dropped ones' counts, at one instant
        live_breakers = _instances.alive(_instances.breakers)
        live_limiters = _instances.alive(_instances.limiters)
        retired_breakers = {n: dict(c) for n, c in _instances.retired.breakers.items()}
        retired_buckets = {k: tuple(v) for k, v in _instances.retired.buckets.items()}
        live_bulkheads = _instances.alive(_instances.bulkheads)
        slots_refused = dict(_instances.retired.bulkheads)
    for name, kept in retired_breakers.items():
        failures[name] = kept.get("failures", 0)
        refused[name] = kept.get("rejections", 0)
        if kept.get("would_reject"):
            would_reject[name] = kept["would_reject"]
        if kept.get("slow_calls"):
            slow_calls[name] = kept["slow_calls"]
        for key, count in kept.items():
            if isinstance(key, tuple):
                label = (name, STATE_LABELS[key[0]], STATE_LABELS[key[1]])
                changes[label] = changes.get(label, 0) + count
    for breaker in live_breakers:
        name = breaker.name
        code = breaker.state_code  # HALF_OPEN once the recovery timeout has passed
        if _SEVERITY[code] >= _SEVERITY[states.get(name, code)]:
            states[name] = code
        metrics_only = code == 5
        if metrics_only:
            shadow = breaker.shadow_state_code
            shadow_states[name] = max(shadow, shadow_states.get(name, shadow))
        kept_in = _kept_in(breaker)
        if kept_in is not None:
            if kept_in in shared_breakers:
                continue  # the host's or Redis' counts, already read through another object
            shared_breakers.add(kept_in)
        failures[name] = failures.get(name, 0) + breaker.failure_total
        refused[name] = refused.get(name, 0) + breaker.rejection_total
        counts = breaker.transition_counts()
        opened = counts.get((0, 2), 0) > 0
        for before, after, at_zero in _TRANSITIONS:
            count = counts.pop((before, after), 0)
            if count or at_zero == "always" or (opened and at_zero == "once opened"):
                key = (name, STATE_LABELS[before], STATE_LABELS[after])
                changes[key] = changes.get(key, 0) + count
        for (before, after), count in counts.items():  # manual states: once they happened
            key = (name, STATE_LABELS[before], STATE_LABELS[after])
            changes[key] = changes.get(key, 0) + count
        rejected_in_shadow = breaker.would_reject_total
        if metrics_only or rejected_in_shadow:
            would_reject[name] = would_reject.get(name, 0) + rejected_in_shadow
        slow = breaker.slow_call_total
        if slow or breaker.slow_call_duration is not None:
            slow_calls[name] = slow_calls.get(name, 0) + slow
    for name, code in reported_states.items():
        states.setdefault(name, code)

    requests: dict[tuple[str, str], int] = {}
    rejections: dict[tuple[str, str], int] = {}
    tokens: dict[tuple[str, str], float] = {}
    window_tokens: dict[tuple[str, str, str], float] = {}
    paused: dict[str, float] = {}
    shared_files: set[Any] = set()
    for bucket_key, (hits, rejected) in retired_buckets.items():
        requests[bucket_key] = hits
        rejections[bucket_key] = rejected
    for limiter in live_limiters:
        name = limiter.name
        for endpoint, allowed, rejected, available, shared_file, extra in limiter._export():
            bucket_key = (name, endpoint)
            tokens[bucket_key] = min(available, tokens.get(bucket_key, available))
            pause, windows = extra
            paused[name] = max(pause, paused.get(name, pause))
            for window, level in windows:
                window_key = (name, endpoint, window)
                window_tokens[window_key] = min(level, window_tokens.get(window_key, level))
            if shared_file is not None:
                if shared_file in shared_files:
                    continue  # the host's counts, already read through another object
                shared_files.add(shared_file)
            requests[bucket_key] = requests.get(bucket_key, 0) + allowed + rejected
            rejections[bucket_key] = rejections.get(bucket_key, 0) + rejected
    # Pairs no longer exported free their places; buckets past the bound are folded.
    bucket_series.keep_only(set(requests))
    if bucket_series.folded:
        folded = dict(folded)
        for family in ("rate_limit_hits", "rate_limit_rejections", "rate_limit_tokens_available"):
            folded[family] = folded.get(family, 0) + bucket_series.folded
    for bucket_key, hits in reported_hits.items():
        requests[bucket_key] = requests.get(bucket_key, 0) + hits
        rejected = reported_rejections.get(bucket_key, 0)
        rejections[bucket_key] = rejections.get(bucket_key, 0) + rejected

    in_flight: dict[str, int] = {}
    shared_bulkheads: set[Any] = set()
    for bulkhead in live_bulkheads:
        # Refusals are each object's own; a shared bulkhead's calls in flight are the
        # host's, read from its file: once per file, however many objects map it.
        slots_refused[bulkhead.name] = slots_refused.get(bulkhead.name, 0) + bulkhead.rejections
        shared_file = bulkhead.shared_path
        if shared_file is not None:
            if shared_file in shared_bulkheads:
                continue
            shared_bulkheads.add(shared_file)
        in_flight[bulkhead.name] = in_flight.get(bulkhead.name, 0) + bulkhead.in_flight
    retries = {name: retry.retries for name, retry in dict(_instances.retries).items()}

    operations = {name: stats.snapshot() for name, stats in dict(_instances.operations).items()}
    # Error types past the native table's size are counted as "other": folded values too.
    folded_types = sum(snap["folded_failures"] for snap in operations.values())
    if folded_types:
        folded = {
            **folded,
            "operation_failures": folded.get("operation_failures", 0) + folded_types,
        }
    readings = Readings(
        states,
        failures,
        changes,
        requests,
        rejections,
        tokens,
        operations,
        folded,
        health,
        backend_error_counts(),
        shadow_states,
        would_reject,
        slow_calls,
        refused,
        window_tokens,
        paused,
        retries,
        in_flight,
        slots_refused,
        dict(_instances.timeouts),
    )
    return readings if names is None else _bounded(readings, names, bound)


def _worse(a: int, b: int) -> int:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


def _add(a: int, b: int) -> int:
    return a + b


def _bounded(readings: Readings, names: ObjectNames, bound: int) -> Readings:
    """``readings`` with the label values past ``bound`` of each group folded."""
    r = readings
    keeps = names.breakers.choose(
        [
            *r.breaker_states,
            *r.breaker_failures,
            *r.breaker_rejections,
            *(key[0] for key in r.state_changes),
        ],
        bound,
    )
    breakers = dataclasses.replace(
        r,
        breaker_states=fold(r.breaker_states, keeps, same, lambda k: OTHER, _worse),
        breaker_failures=fold(r.breaker_failures, keeps, same, lambda k: OTHER, _add),
        state_changes=fold(
            r.state_changes, keeps, lambda k: k[0], lambda k: (OTHER, k[1], k[2]), _add
        ),
        breaker_rejections=fold(r.breaker_rejections, keeps, same, lambda k: OTHER, _add),
        breaker_shadow_states=fold(r.breaker_shadow_states, keeps, same, lambda k: OTHER, max),
        breaker_would_reject=fold(r.breaker_would_reject, keeps, same, lambda k: OTHER, _add),
        breaker_slow_calls=fold(r.breaker_slow_calls, keeps, same, lambda k: OTHER, _add),
    )
    # Limiters by name: a limiter past the bound is exported as limiter "other", its
    # endpoints' labels kept (they are bounded on their own, see _bucket_series).
    # Live limiters (those with tokens) first, then names kept for what dropped ones counted.
    keeps = names.buckets.choose([*(k[0] for k in r.tokens), *(k[0] for k in r.requests)], bound)
    buckets = dataclasses.replace(
        breakers,
        requests=fold(r.requests, keeps, lambda k: k[0], lambda k: (OTHER, k[1]), _add),
        rejections=fold(r.rejections, keeps, lambda k: k[0], lambda k: (OTHER, k[1]), _add),
        tokens=fold(r.tokens, keeps, lambda k: k[0], lambda k: (OTHER, k[1]), min),
        window_tokens=fold(
            r.window_tokens, keeps, lambda k: k[0], lambda k: (OTHER, k[1], k[2]), min
        ),
        paused=fold(r.paused, keeps, same, lambda k: OTHER, max),
    )
    keeps = names.bulkheads.choose([*r.bulkhead_in_flight, *r.bulkhead_rejections], bound)
    bulkheads = dataclasses.replace(
        buckets,
        bulkhead_in_flight=fold(r.bulkhead_in_flight, keeps, same, lambda k: OTHER, _add),
        bulkhead_rejections=fold(r.bulkhead_rejections, keeps, same, lambda k: OTHER, _add),
    )
    folded = dict(r.folded)
    for family, group in (
        ("circuit_breaker_state", names.breakers),
        ("rate_limit_hits", names.buckets),
        ("rate_limit_rejections", names.buckets),
        ("rate_limit_tokens_available", names.buckets),
        ("bulkhead_in_flight", names.bulkheads),
    ):
        if group.folded:
            folded[family] = folded.get(family, 0) + group.folded
    return dataclasses.replace(bulkheads, folded=folded)
