"""``/health`` under load: 50 concurrent keep-alive connections for a few seconds against
``start_health_server`` in its own process, from an asyncio load generator here.

Each request runs every health check (nothing is cached). Reported: requests served,
errors (a refused or dropped connection, or a status other than 200) and the latency
percentiles, in the benchmark's ``extra_info`` and printed; the test fails on any error.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

CONNECTIONS = 50
SECONDS = 3.0
SERVER = (
    "import sys\n"
    "from peak_resilience.http import start_health_server\n"
    "server = start_health_server(port=0)\n"
    "print(server.port, flush=True)\n"
    "sys.stdin.read()\n"  # serve until the benchmark closes our stdin
)
_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


async def connection(port: int, deadline: float, load: Load) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    writer = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = _LENGTH.search(head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            load.latencies.append(time.perf_counter() - started)
            status = int(head.split(b" ", 2)[1])
            load.statuses[status] = load.statuses.get(status, 0) + 1
            if status != 200:
                load.errors += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            load.errors += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def generate(port: int) -> Load:
    load = Load()
    deadline = time.perf_counter() + SECONDS
    await asyncio.gather(*(connection(port, deadline, load) for _ in range(CONNECTIONS)))
    return load


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


@pytest.mark.benchmark(group="health_load")
def test_ours_health_under_50_connections(benchmark: Any) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        load = benchmark.pedantic(lambda: asyncio.run(generate(port)), rounds=1, iterations=1)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    latencies = sorted(load.latencies)
    report = {
        "connections": CONNECTIONS,
        "seconds": SECONDS,
        "requests": len(latencies),
        "errors": load.errors,
        "statuses": load.statuses,
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 2),
        "max_ms": round(latencies[-1] * 1e3, 2),
    }
    benchmark.extra_info.update(report)
    print(f"\n/health load: {report}")
    assert load.errors == 0
