"""OpenTelemetry: ``install(meter_provider=None)``.

Exports the same families as Prometheus (the same names, with the configured prefix, and
the same label names as attributes) as observable instruments: nothing per call goes
through OpenTelemetry; the native counters are read when the SDK collects. Gauges are
observable gauges, counters observable counters (named without ``_total``, which a
Prometheus exporter adds back); the latency histogram, which OpenTelemetry cannot observe
asynchronously, is three observable counters: ``..._bucket`` (attribute ``le``, cumulative
as in Prometheus), ``..._count`` and ``..._sum``.

Needs ``opentelemetry-api`` (the SDK to export): ``pip install peak-resilience[opentelemetry]``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from opentelemetry import metrics as otel
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from peak_resilience._metrics.families import FAMILIES
from peak_resilience._metrics.recorder import Metrics, metrics
from peak_resilience._version import __version__

__all__ = ["install"]


def _unit(suffix: str) -> str:
    # UCUM, as OpenTelemetry wants: seconds are "s", states and counts dimensionless.
    return "s" if suffix.endswith("seconds") else "1"


class _Reads:
    """One read of every family serves the instruments of one collection: a family asked
    for again means a new collection has begun, and everything is read afresh (the health
    checks included, as a Prometheus scrape runs them)."""

    def __init__(self, source: Metrics) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        self._served: set[str] = set()

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        with self._lock:
            if name in self._served or not self._samples:
                self._samples = {}
                for family in self._source.collector.collect():
                    for sample in family.samples:
                        self._samples.setdefault(sample.name, []).append(
                            (dict(sample.labels), float(sample.value))
                        )
                self._served = set()
            self._served.add(name)
            return self._samples.get(name, [])


def _callback(
    reads: _Reads, sample_name: str
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, labels) for labels, value in reads.samples(sample_name)]

    return observe


def install(meter_provider: MeterProvider | None = None, *, prometheus: bool = True) -> Meter:
    """Registers the families as observable instruments of a meter ``peak_resilience``
    from ``meter_provider`` (default: the global one) and returns the meter. With
    ``prometheus=False`` the families leave prometheus-client's default registry:
    OpenTelemetry instead of Prometheus (``/health/prometheus`` still answers)."""
    provider = otel.get_meter_provider() if meter_provider is None else meter_provider
    meter = provider.get_meter("peak_resilience", __version__)
    reads = _Reads(metrics)
    prefix = metrics.prefix
    for suffix, kind, doc in FAMILIES:
        name = f"{prefix}_{suffix}"
        unit = _unit(suffix)
        if kind == "gauge":
            meter.create_observable_gauge(
                name, [_callback(reads, name)], unit=unit, description=doc
            )
        elif kind == "counter":
            meter.create_observable_counter(
                name, [_callback(reads, f"{name}_total")], unit=unit, description=doc
            )
        else:  # the histogram
            for part, part_unit in (("bucket", "1"), ("count", "1"), ("sum", unit)):
                meter.create_observable_counter(
                    f"{name}_{part}",
                    [_callback(reads, f"{name}_{part}")],
                    unit=part_unit,
                    description=f"{doc} ({part})",
                )
    if not prometheus:
        metrics.unregister_collector()
    return meter
