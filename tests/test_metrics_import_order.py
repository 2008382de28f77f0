"""Metrics do not depend on what a process imports (issue 11, item 4).

Each test runs a fresh interpreter that imports only what it names, as an application
would: the ``peak_trade_*`` families reach prometheus-client's default registry once,
every breaker transition is in the event ring from the first breaker on, and
``metrics_enabled = false`` still turns recording off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any


def run_fresh(script: str, tmp_path: Path, **environ: str) -> dict[str, Any]:
    """Runs ``script`` in a new interpreter (in an empty directory, without PEAK_TRADE_*
    variables but ``environ``); the script prints one JSON line, returned here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEAK_TRADE_")}
    env.update(environ)
    finished = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


TRIP_WITH_RESILIENCE = """
    import json
    import urllib.request

    import prometheus_client
    from peak_resilience.resilience_helpers import with_resilience

    @with_resilience("orders", "submit")
    def submit():
        raise ConnectionError("exchange down")

    for _ in range(2):
        try:
            submit()
        except ConnectionError:
            pass

    # The most common setup: prometheus-client's own server of its default registry.
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics") as answer:
        served = answer.read().decode()
    server.shutdown()

    # Imported only now, after the breaker opened.
    from peak_resilience.metrics import metrics

    print(json.dumps({
        "served": served,
        "latest": prometheus_client.generate_latest().decode(),
        "events": metrics.get_snapshots(),
    }))
"""

OPENED = 'peak_trade_circuit_breaker_state{name="orders.submit"} 2.0'
TRANSITION = (
    'peak_trade_circuit_breaker_state_changes_total{from_state="closed",'
    'name="orders.submit",to_state="open"} 1.0'
)
STATE_FAMILY = "# TYPE peak_trade_circuit_breaker_state gauge"


def test_with_resilience_alone_reaches_prometheus_clients_default_registry(
    tmp_path: Path,
) -> None:
    result = run_fresh(TRIP_WITH_RESILIENCE, tmp_path, PEAK_TRADE_CIRCUIT_BREAKER_THRESHOLD="2")

    for exposition in (result["served"], result["latest"]):
        assert exposition.count(STATE_FAMILY) == 1
        assert OPENED in exposition
        assert TRANSITION in exposition
        assert 'peak_trade_operation_failures_total{error_type="ConnectionError",' in exposition
    transitions = [e for e in result["events"] if e["event"] == "circuit_breaker_state_change"]
    assert [(e["name"], e["from_state"], e["to_state"]) for e in transitions] == [
        ("orders.submit", "closed", "open")
    ]


def test_a_breaker_alone_reaches_the_registry_and_the_event_ring(tmp_path: Path) -> None:
    result = run_fresh(
        """
        import json

        import prometheus_client
        from peak_resilience.resilience import CircuitBreaker

        breaker = CircuitBreaker(failure_threshold=1, name="solo")
        breaker.record_failure()
        latest = prometheus_client.generate_latest().decode()

        from peak_resilience.metrics import metrics

        print(json.dumps({"latest": latest, "events": metrics.get_snapshots()}))
        """,
        tmp_path,
    )

    assert result["latest"].count(STATE_FAMILY) == 1
    assert 'peak_trade_circuit_breaker_state{name="solo"} 2.0' in result["latest"]
    assert [(e["event"], e["name"], e["to_state"]) for e in result["events"]] == [
        ("circuit_breaker_state_change", "solo", "open")
    ]


def test_importing_every_module_registers_the_families_once(tmp_path: Path) -> None:
    result = run_fresh(
        """
        import importlib
        import json
        import pkgutil

        import prometheus_client
        import peak_resilience

        for module in pkgutil.walk_packages(peak_resilience.__path__, "peak_resilience."):
            importlib.import_module(module.name)
        print(json.dumps({"latest": prometheus_client.generate_latest().decode()}))
        """,
        tmp_path,
    )

    assert result["latest"].count(STATE_FAMILY) == 1


def test_metrics_enabled_false_still_turns_recording_off(tmp_path: Path) -> None:
    result = run_fresh(
        TRIP_WITH_RESILIENCE,
        tmp_path,
        PEAK_TRADE_CIRCUIT_BREAKER_THRESHOLD="2",
        PEAK_TRADE_METRICS_ENABLED="false",
    )

    # The breaker's state is exported (it is state, not recording); nothing is recorded.
    assert OPENED in result["latest"]
    assert "peak_trade_operation_failures_total{" not in result["latest"]
    assert result["events"] == []
