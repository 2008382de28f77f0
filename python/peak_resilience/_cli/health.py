"""``peak-resilience serve`` and ``peak-resilience check``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

from peak_resilience._cli.commands import EXIT_CODES
from peak_resilience._config.active import configure
from peak_resilience._health import health_check
from peak_resilience._http.endpoints import health_token
from peak_resilience._http.server import start_health_server
from peak_resilience._modules.host_state import attach_shared_state

__all__ = ["check", "serve"]


def serve(args: argparse.Namespace) -> int:
    attached = attach_shared_state(configure(args.config))
    server = start_health_server(host=args.host, port=args.port, token=health_token())
    # Flushed: a server's output usually goes to a pipe or a log, read while it runs.
    print(
        f"serving {server.url}/health, /health/detailed, /health/metrics, /health/prometheus",
        flush=True,
    )
    if attached:
        print(f"host state from shared files: {', '.join(attached)}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop()
    print("stopped", flush=True)
    return 0


def _remote(url: str, token: str | None, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url.rstrip("/") + "/health/detailed")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        if err.code != 503:  # 503 still carries the report of an unhealthy system
            raise OSError(f"{url} answered HTTP {err.code}") from None
        body = err.read()
    except urllib.error.URLError as err:
        raise OSError(f"cannot reach {url}: {err.reason}") from None
    except ValueError as err:  # http.client.InvalidURL: a URL the parser let through
        raise OSError(f"cannot ask {url}: {err}") from None
    try:
        report = json.loads(body)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise OSError(f"{url}/health/detailed did not answer a health report (is it ours?)")
    return report


def _local(config_path: str | None) -> dict[str, Any]:
    attach_shared_state(configure(config_path))
    results = health_check.run_all()
    return {"status": health_check.status_of(results), "checks": results}


def check(args: argparse.Namespace) -> int:
    try:
        report = _remote(args.url, args.token, args.timeout) if args.url else _local(args.config)
    except OSError as err:
        # A server that cannot be asked is as good as unhealthy.
        print(f"peak-resilience: error: {err}", file=sys.stderr)
        return EXIT_CODES["unhealthy"]
    checks: dict[str, dict[str, Any]] = report.get("checks", {})
    width = max((len(name) for name in checks), default=5)
    print(f"{'check':<{width}}  {'result':<9}  {'critical':<8}  {'ms':>7}  message")
    for name, result in sorted(checks.items()):
        outcome = "ok" if result["healthy"] else "FAILING"
        critical = "yes" if result["critical"] else "no"
        print(
            f"{name:<{width}}  {outcome:<9}  {critical:<8}  "
            f"{result['duration_ms']:7.1f}  {result['message']}"
        )
    status = str(report.get("status", "unhealthy"))
    print(f"status: {status}")
    return EXIT_CODES.get(status, 2)
