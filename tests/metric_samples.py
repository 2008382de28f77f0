"""Reading the exported samples the two ways a scrape sees them: our exposition writer and
prometheus-client's, keyed by (name, labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from peak_resilience.metrics import metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def ours() -> Samples:
    return samples(metrics.exposition(None)[0].decode())


def through_prometheus_client() -> Samples:
    registry = CollectorRegistry()
    metrics.register_collector(registry)
    try:
        return samples(generate_latest(registry).decode())
    finally:
        metrics.unregister_collector(registry)
