"""The operations files in deploy/: Prometheus alerting rules (checked and unit-tested by
promtool) and the Grafana dashboard, both held against the metrics the exporter publishes
(tests/exported_metrics.py, and a real scrape once peak_resilience.metrics exists)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from exported_metrics import (
    BUCKET_LABEL,
    FAMILIES,
    SCRAPE_LABELS,
    STATE_LABEL_VALUES,
    family_of,
)

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ALERTS = DEPLOY / "prometheus-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"

# The guide's "Set Up Alerts": a breaker opens, prolonged OPEN, high rate-limit
# rejection, health check failures.
GUIDE_ALERTS = {
    "CircuitBreakerOpen",
    "CircuitBreakerStuckOpen",
    "RateLimitRejectionRateHigh",
    "HealthCheckFailing",
}
# Beyond the guide: a failing check that is not critical (the process is degraded), and
# a bulkhead that keeps refusing calls (issue 16).
ALERTS_BEYOND_THE_GUIDE = {"HealthCheckDegraded", "BulkheadRejecting"}

# Grafana's variables, replaced by what Prometheus would receive with "All" selected.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}


# --- reading PromQL ----------------------------------------------------------------------

_SELECTOR = re.compile(r"\b(peak_trade_[a-z_]+)\b(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


def selectors(expr: str) -> list[Selector]:
    """Every `peak_trade_...{...}` series selector in a PromQL expression."""
    return [
        Selector(metric, tuple(_MATCHER.findall(body or "")))
        for metric, body in _SELECTOR.findall(expr)
    ]


def grouping_labels(expr: str) -> set[str]:
    """The labels named in `by (...)` / `without (...)` clauses."""
    return {
        label.strip()
        for group in _GROUPING.findall(expr)
        for label in group.split(",")
        if label.strip()
    }


def label_problems(where: str, expr: str) -> list[str]:
    """What in `expr` does not match the exported families: unknown metrics, labels a
    metric does not have, state label values that are never exported."""
    problems = []
    known_labels = set(SCRAPE_LABELS)
    for selector in selectors(expr):
        found = family_of(selector.metric)
        if found is None:
            problems.append(f"{where}: {selector.metric} is not an exported metric")
            continue
        name, family = found
        labels = set(family.labels) | SCRAPE_LABELS
        if selector.metric == f"{name}_bucket":
            labels.add(BUCKET_LABEL)
        known_labels |= labels
        for label, operator, value in selector.matchers:
            if label not in labels:
                problems.append(f"{where}: {selector.metric} has no label {label!r}")
            is_state = label in ("from_state", "to_state") and operator == "="
            if is_state and value not in STATE_LABEL_VALUES:
                problems.append(f"{where}: {label}={value!r} is never exported")
    problems.extend(
        f"{where}: groups by {label!r}, which none of its metrics has"
        for label in sorted(grouping_labels(expr) - known_labels)
    )
    return problems


# --- the files -----------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def all_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title + refId, PromQL with Grafana's variables filled in) for every query."""
    queries = []
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((f"{panel['title']} [{target['refId']}]", expr))
    return queries


def panel_titled(board: dict[str, Any], title: str) -> dict[str, Any]:
    for panel in all_panels(board):
        if panel["title"] == title:
            return panel
    raise AssertionError(f"the dashboard has no panel titled {title!r}")


def panel_exprs(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel["targets"]]


# --- promtool --------------------------------------------------------------------------------


def promtool(*args: str | Path, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    if executable is None:
        pytest.fail("promtool not found: install the Debian package prometheus (scripts/packages)")
    return subprocess.run(
        [executable, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_yaml(path: Path, document: Any) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# --- the alerts ----------------------------------------------------------------------------


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(GUIDE_ALERTS | ALERTS_BEYOND_THE_GUIDE)} rules found" in result.stdout


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_rule_with_a_broken_expression(tmp_path: Path) -> None:
    broken = {
        "groups": [
            {
                "name": "broken",
                # rate() needs a range vector: `[5m]` is missing.
                "rules": [{"alert": "Broken", "expr": "rate(peak_trade_rate_limit_hits_total)"}],
            }
        ]
    }
    result = promtool("check", "rules", write_yaml(tmp_path / "broken.yml", broken))
    assert result.returncode != 0
    assert "range vector" in result.stdout + result.stderr


def test_the_unit_tests_catch_a_rejection_threshold_that_drifted(tmp_path: Path) -> None:
    drifted = ALERTS.read_text().replace("> 0.1\n", "> 0.5\n")
    assert drifted != ALERTS.read_text()
    (tmp_path / ALERTS.name).write_text(drifted)
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    result = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "RateLimitRejectionRateHigh" in result.stdout + result.stderr


def test_the_guides_four_alerts_are_defined_with_a_severity_and_a_summary() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == GUIDE_ALERTS | ALERTS_BEYOND_THE_GUIDE
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_every_metric_and_label_the_alerts_use_is_exported() -> None:
    problems = []
    for rule in alert_rules():
        problems += label_problems(rule["alert"], rule["expr"])
        # An annotation can only show the labels the expression keeps.
        kept = grouping_labels(rule["expr"])
        for text in rule["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                if label not in kept:
                    problems.append(f"{rule['alert']}: annotation uses dropped label {label}")
    assert problems == []


# --- the dashboard ---------------------------------------------------------------------------


def test_the_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 36
    variables = {variable["name"] for variable in board["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    panels = list(all_panels(board))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the grid"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_the_dashboard_shows_breaker_states_rejection_rate_latency_and_tokens() -> None:
    board = dashboard()
    states = panel_titled(board, "Circuit breaker state")
    assert states["type"] == "state-timeline"
    assert "peak_trade_circuit_breaker_state{" in panel_exprs(states)[0]
    mapped = states["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {value: mapped[value]["text"] for value in mapped} == {
        "0": "closed",
        "1": "half_open",
        "2": "open",
        "3": "forced_open",
        "4": "disabled",
        "5": "metrics_only",
    }

    (rejection,) = panel_exprs(panel_titled(board, "Rate-limit rejection rate"))
    assert rejection.index("rejections_total") < rejection.index("/") < rejection.index("hits")

    latency = panel_exprs(panel_titled(board, "Latency quantiles per operation"))
    assert [expr.split(",")[0] for expr in latency] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
    ]
    assert all("by (operation, le)" in expr for expr in latency)

    (tokens,) = panel_exprs(panel_titled(board, "Tokens available"))
    assert tokens.startswith("peak_trade_rate_limit_tokens_available{")


def test_every_metric_and_label_the_dashboard_queries_is_exported() -> None:
    problems = []
    for where, expr in dashboard_queries(dashboard()):
        problems += label_problems(where, expr)
    assert problems == []


def test_every_legend_names_labels_its_query_keeps() -> None:
    problems = []
    for panel in all_panels(dashboard()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            kept = grouping_labels(expr) or {
                label
                for selector in selectors(expr)
                if (found := family_of(selector.metric)) is not None
                for label in found[1].labels | SCRAPE_LABELS
            }
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                if label not in kept:
                    problems.append(f"{panel['title']} [{target['refId']}]: legend uses {label}")
    assert problems == []


def test_the_dashboard_shows_every_exported_family() -> None:
    queried = {
        found[0]
        for _, expr in dashboard_queries(dashboard())
        for selector in selectors(expr)
        if (found := family_of(selector.metric)) is not None
    }
    assert set(FAMILIES) - queried == set()


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    queries = dashboard_queries(dashboard())
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)
    ]
    path = write_yaml(
        tmp_path / "dashboard-queries.yml", {"groups": [{"name": "q", "rules": rules}]}
    )
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_the_latency_and_rejection_panels_compute_per_operation_and_per_endpoint(
    tmp_path: Path,
) -> None:
    """The panels' own queries, run by promtool on series shaped like the exporter's."""
    board = dashboard()
    queries = dict(dashboard_queries(board))
    p50 = queries["Latency quantiles per operation [A]"]
    rejection = queries["Rate-limit rejection rate [A]"]
    # Per minute: 10 calls of fetch_ticker in (0.25, 0.5] s, 10 of create_order in
    # (0.5, 1] s; the median interpolates to the middle of each one's bucket (bounds that
    # are powers of two, so that promtool's exact comparison holds).
    series = [
        ("fetch_ticker", "0.25", "0+0x10"),
        ("fetch_ticker", "0.5", "0+10x10"),
        ("fetch_ticker", "1", "0+10x10"),
        ("fetch_ticker", "+Inf", "0+10x10"),
        ("create_order", "0.25", "0+0x10"),
        ("create_order", "0.5", "0+0x10"),
        ("create_order", "1", "0+10x10"),
        ("create_order", "+Inf", "0+10x10"),
    ]
    labels = 'job="trader", instance="host:9108"'
    input_series = [
        {
            "series": f"peak_trade_request_duration_seconds_bucket{{{labels}, "
            f'operation="{operation}", le="{le}"}}',
            "values": values,
        }
        for operation, le, values in series
    ] + [
        {
            "series": f'peak_trade_rate_limit_hits_total{{{labels}, limiter="binance", '
            'endpoint="fetch_ticker"}',
            "values": "0+100x10",
        },
        {
            "series": f'peak_trade_rate_limit_rejections_total{{{labels}, limiter="binance", '
            'endpoint="fetch_ticker"}',
            "values": "0+25x10",
        },
    ]
    test_file = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "promql_expr_test": [
                    {
                        "expr": p50,
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": '{operation="fetch_ticker"}', "value": 0.375},
                            {"labels": '{operation="create_order"}', "value": 0.75},
                        ],
                    },
                    {
                        "expr": rejection,
                        "eval_time": "10m",
                        "exp_samples": [
                            {
                                "labels": '{limiter="binance", endpoint="fetch_ticker"}',
                                "value": 0.25,
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = write_yaml(tmp_path / "panels.test.yml", test_file)
    result = promtool("test", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- against the exporter ----------------------------------------------------------------------

_NO_EXPORTER = importlib.util.find_spec("peak_resilience.metrics") is None


def scrape_after_some_activity() -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples, by series name, of a real scrape (tests/exporter_scrape.py, run in a
    process of its own)."""
    from prometheus_client.parser import text_string_to_metric_families

    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("exporter_scrape.py"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(result.stdout):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


@pytest.mark.skipif(
    _NO_EXPORTER, reason="peak_resilience.metrics does not exist yet (issue 4): nothing to scrape"
)
def test_a_real_scrape_has_every_family_with_its_labels_and_the_values_the_alerts_expect() -> None:
    samples = scrape_after_some_activity()
    problems = []
    for name, family in FAMILIES.items():
        for sample_name in sorted(family.sample_names(name)):
            if sample_name not in samples:
                problems.append(f"{sample_name} is missing from the scrape")
                continue
            expected = set(family.labels)
            if sample_name.endswith("_bucket"):
                expected.add(BUCKET_LABEL)
            for labels, _ in samples[sample_name]:
                if set(labels) != expected:
                    problems.append(
                        f"{sample_name} has labels {sorted(labels)}, not {sorted(expected)}"
                    )
                    break
    # Every label value the deploy files match on literally must occur in the scrape.
    exprs = [rule["expr"] for rule in alert_rules()] + [
        e for _, e in dashboard_queries(dashboard())
    ]
    for expr in exprs:
        for selector in selectors(expr):
            for label, operator, value in selector.matchers:
                if operator != "=" or label in SCRAPE_LABELS:
                    continue
                if not any(
                    labels.get(label) == value for labels, _ in samples.get(selector.metric, [])
                ):
                    problems.append(f"no {selector.metric} sample has {label}={value!r}")
    assert problems == []

    def sample_value(series: str, **labels: str) -> float:
        matching = [v for found, v in samples[series] if labels.items() <= found.items()]
        assert len(matching) == 1, f"{series}{labels}: {matching}"
        return matching[0]

    # What the alerts assume, on the objects exporter_scrape.py made: 2 reads OPEN, 0 an
    # unhealthy check, and hits_total counts the rejected request too.
    limiter = {"limiter": "deploy-check", "endpoint": "fetch_ticker"}
    assert sample_value("peak_trade_circuit_breaker_state", name="deploy-check") == 2
    assert sample_value("peak_trade_health_check_status", check="deploy_check") == 0
    assert sample_value("peak_trade_rate_limit_rejections_total", **limiter) == 1
    assert sample_value("peak_trade_rate_limit_hits_total", **limiter) == 2
