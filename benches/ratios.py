"""Runs the benchmarks (ours beside the peers and the floors, in one run) and prints the
ratios that the issues set as targets, met or not. A ratio never fails the run.

    python benches/ratios.py            # full run (about a minute per bench file)
    python benches/ratios.py --quick    # the short form CI runs
    python benches/ratios.py --from-json results.json   # reprint from a saved run

Times are the median of each benchmark's rounds, in one process on one machine: the
ratios are comparable, the absolute numbers only roughly so (these machines are shared).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Ratio:
    issue: int
    what: str
    ours: str  # benchmark test name
    reference: str  # benchmark test name
    # "at_most": ours / reference <= target; "faster_by": reference / ours >= target;
    # "bound": ours <= target seconds (no reference); "info": the ratio, no target.
    kind: str
    target: float


# One row per target: (issue, comparison, ours, reference, kind, target).
RATIOS = [
    Ratio(
        2,
        "acquire() admitted vs a C builtin call (next(count))",
        "test_ours_acquire",
        "test_floor_builtin_next",
        "at_most",
        3.0,
    ),
    Ratio(
        2,
        "acquire() vs limits' in-memory fixed window hit",
        "test_ours_acquire",
        "test_limits_fixed_window_hit",
        "faster_by",
        40.0,
    ),
    Ratio(
        2,
        "acquire() vs token-bucket's consume",
        "test_ours_acquire",
        "test_token_bucket_consume",
        "faster_by",
        1.0,
    ),
    Ratio(
        2,
        "acquire() vs pyrate-limiter's try_acquire",
        "test_ours_acquire",
        "test_pyrate_limiter_try_acquire",
        "faster_by",
        1.0,
    ),
    Ratio(
        2,
        "breaker-guarded no-op vs a trivial *args/**kwargs decorator",
        "test_ours_breaker_call",
        "test_floor_python_decorator",
        "at_most",
        1.0,
    ),
    Ratio(
        2,
        "breaker-guarded no-op vs pybreaker's decorator",
        "test_ours_breaker_call",
        "test_pybreaker_call",
        "faster_by",
        14.0,
    ),
    Ratio(
        2,
        "breaker-guarded no-op vs circuitbreaker's decorator",
        "test_ours_breaker_call",
        "test_circuitbreaker_call",
        "faster_by",
        5.0,
    ),
    Ratio(
        2,
        "call refused by an open circuit vs raise + catch",
        "test_ours_open_circuit_rejects",
        "test_floor_raise_and_catch",
        "at_most",
        1.5,
    ),
    Ratio(
        2,
        "allow() on a closed circuit vs acquire()",
        "test_ours_allow_when_closed",
        "test_ours_acquire",
        "at_most",
        1.2,
    ),
    Ratio(
        3,
        "with_resilience(limiter + breaker, metrics on) vs a trivial decorator",
        "test_ours_with_resilience",
        "test_floor_python_decorator_with_resilience",
        "at_most",
        2.0,
    ),
    Ratio(
        3,
        "with_resilience vs pybreaker stacked on limits' hit",
        "test_ours_with_resilience",
        "test_pybreaker_on_limits_hit",
        "faster_by",
        15.0,
    ),
    Ratio(
        3,
        "with_resilience async vs a trivial async wrapper",
        "test_ours_with_resilience_async",
        "test_floor_python_async_wrapper",
        "at_most",
        1.5,
    ),
    Ratio(
        16,
        "with_resilience(limiter + breaker, metrics on) vs a trivial decorator",
        "test_ours_with_resilience",
        "test_floor_python_decorator_with_resilience",
        "at_most",
        1.5,
    ),
    Ratio(
        16,
        "with_resilience async vs a trivial async wrapper",
        "test_ours_with_resilience_async",
        "test_floor_python_async_wrapper",
        "at_most",
        1.3,
    ),
    Ratio(
        16,
        "retry + bulkhead configured, not triggered, vs the same guard without",
        "test_ours_with_resilience_policies_not_triggered",
        "test_ours_with_resilience_without_policies",
        "at_most",
        1.15,
    ),
    Ratio(
        16,
        "async: retry + bulkhead + timeout, not triggered, vs the same guard without",
        "test_ours_async_policies_not_triggered_in_a_loop",
        "test_ours_async_without_policies_in_a_loop",
        "at_most",
        1.15,
    ),
    Ratio(
        4,
        "scrape: 1,000 breakers + 1,000 limiters + 100 operations",
        "test_ours_scrape_text",
        "",
        "bound",
        0.020,
    ),
    Ratio(
        4,
        "scrape vs prometheus-client's generate_latest, same objects",
        "test_ours_scrape_text",
        "test_prometheus_client_generate_latest",
        "faster_by",
        1.0,
    ),
    Ratio(
        4,
        "guarded call, recording off vs no operation attached",
        "test_ours_guarded_call_recording_off",
        "test_floor_guarded_call_without_operation",
        "at_most",
        1.1,
    ),
    Ratio(
        4,
        "track_latency vs prometheus-client Histogram.time()",
        "test_ours_track_latency",
        "test_prometheus_client_histogram_time",
        "faster_by",
        1.0,
    ),
    Ratio(
        5,
        "shared-memory acquire() vs in-process acquire()",
        "test_shared_memory_acquire",
        "test_in_process_acquire",
        "at_most",
        2.0,
    ),
    Ratio(
        5,
        "redis acquire() vs a redis-py PING on the same server",
        "test_redis_acquire",
        "test_redis_py_ping_floor",
        "at_most",
        1.15,
    ),
    Ratio(
        5,
        "redis acquire() vs a bare pre-packed round trip (the script's own cost)",
        "test_redis_acquire",
        "test_redis_bare_round_trip_floor",
        "at_most",
        1.5,
    ),
    Ratio(
        5,
        "redis acquire() vs limits' RedisStorage moving window",
        "test_redis_acquire",
        "test_limits_redis_moving_window",
        "faster_by",
        1.0,
    ),
    Ratio(
        5,
        "redis acquire() vs pyrate-limiter's RedisBucket",
        "test_redis_acquire",
        "test_pyrate_limiter_redis_bucket",
        "faster_by",
        1.0,
    ),
    Ratio(
        12,
        "redis-guarded call (breaker + limiter), admitted, vs one redis-py PING",
        "test_redis_guarded_call_admitted",
        "test_redis_py_ping_floor",
        "at_most",
        1.3,
    ),
    Ratio(
        12,
        "redis-guarded call refused for want of a token vs one redis-py PING",
        "test_redis_guarded_call_refused",
        "test_redis_py_ping_floor",
        "at_most",
        1.2,
    ),
    Ratio(
        12,
        "async redis-guarded call (one round trip, its success carried) vs one redis.asyncio PING",
        "test_redis_async_guarded_call_admitted",
        "test_redis_asyncio_ping_floor",
        "info",
        0.0,
    ),
    Ratio(
        12,
        "fifty async redis-guarded calls at once vs fifty redis.asyncio PINGs at once",
        "test_redis_async_fifty_guarded_calls",
        "test_redis_asyncio_fifty_pings_floor",
        "info",
        0.0,
    ),
    Ratio(
        13,
        "fixed-window acquire vs a GCRA acquire",
        "test_ours_acquire_fixed_window",
        "test_ours_acquire_gcra_window",
        "at_most",
        1.5,
    ),
    Ratio(
        13,
        "sliding-window acquire (N = 100) vs a GCRA acquire",
        "test_ours_acquire_sliding_window",
        "test_ours_acquire_gcra_window",
        "at_most",
        1.5,
    ),
    Ratio(
        8,
        "three-window acquire vs one-window acquire",
        "test_ours_acquire_three_windows",
        "test_ours_acquire_one_window",
        "at_most",
        2.0,
    ),
    Ratio(
        8,
        "acquire(priority='high') vs a normal acquire",
        "test_ours_acquire_high_lane",
        "test_ours_acquire_normal_lane",
        "info",
        0.0,
    ),
    Ratio(
        8,
        "reserve() then settle() vs one acquire of the same cost",
        "test_ours_reserve_then_settle",
        "test_ours_acquire_cost_5",
        "info",
        0.0,
    ),
    Ratio(
        8,
        "breaker call with a count-based failure-rate window vs plain",
        "test_ours_breaker_call_with_count_window",
        "test_ours_breaker_call_plain",
        "info",
        0.0,
    ),
    Ratio(
        8,
        "breaker call with a time-based failure-rate window vs plain",
        "test_ours_breaker_call_with_time_window",
        "test_ours_breaker_call_plain",
        "info",
        0.0,
    ),
    Ratio(
        8,
        "breaker call timed for slow calls vs plain",
        "test_ours_breaker_call_with_slow_call_duration",
        "test_ours_breaker_call_plain",
        "info",
        0.0,
    ),
    Ratio(
        13,
        "observe() of a Binance reply's headers (plain dict)",
        "test_ours_observe_binance_reply",
        "",
        "bound",
        1e-6,
    ),
    Ratio(
        13,
        "observe() of a Binance reply's headers (a dict in the server's case) vs an acquire",
        "test_ours_observe_binance_reply_in_the_servers_case",
        "test_ours_acquire_for_scale",
        "info",
        0.0,
    ),
    Ratio(
        13,
        "observe() of a Binance reply's headers (requests' headers) vs an acquire",
        "test_ours_observe_binance_reply_requests_headers",
        "test_ours_acquire_for_scale",
        "info",
        0.0,
    ),
]


def run_benchmarks(quick: bool, json_path: Path) -> int:
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(HERE),
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-only",
        "--benchmark-disable-gc",
        f"--benchmark-json={json_path}",
        "--benchmark-columns=median,iqr,rounds",
        "--benchmark-sort=name",
        "-o",
        "python_files=bench_*.py",
    ]
    if quick:
        command += [
            "--benchmark-max-time=0.05",
            "--benchmark-min-rounds=5",
            "--benchmark-warmup=on",
        ]
    return subprocess.call(command)


def medians(json_path: Path) -> dict[str, float]:
    data = json.loads(json_path.read_text())
    return {b["name"]: b["stats"]["median"] for b in data.get("benchmarks", [])}


def human(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table(times: dict[str, float]) -> str:
    rows = [
        "| issue | comparison | ours | reference | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in RATIOS:
        ours, ref = times.get(r.ours), times.get(r.reference)
        if r.kind == "bound" and ours is not None:
            rows.append(
                f"| {r.issue} | {r.what} | {human(ours)} | | | <= {human(r.target)} "
                f"| {'yes' if ours <= r.target else 'NO'} |"
            )
            continue
        if r.kind == "info" and ours is not None and ref is not None:
            rows.append(
                f"| {r.issue} | {r.what} | {human(ours)} | {human(ref)} "
                f"| {ours / ref:.2f}x | (for information) | |"
            )
            continue
        if ours is None or ref is None:
            rows.append(f"| {r.issue} | {r.what} | | | not measured | | |")
            continue
        if r.kind == "at_most":
            ratio, target, met = ours / ref, f"<= {r.target:g}x", ours / ref <= r.target
            shown = f"{ratio:.2f}x"
        else:
            ratio, target, met = ref / ours, f">= {r.target:g}x faster", ref / ours >= r.target
            shown = f"{ratio:.1f}x faster"
        rows.append(
            f"| {r.issue} | {r.what} | {human(ours)} | {human(ref)} | {shown} "
            f"| {target} | {'yes' if met else 'NO'} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (CI)")
    parser.add_argument("--from-json", type=Path, help="reprint the table of a saved run")
    parser.add_argument("--save-json", type=Path, help="keep the raw pytest-benchmark JSON")
    args = parser.parse_args()
    if args.from_json:
        print(table(medians(args.from_json)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        json_path = args.save_json or Path(tmp) / "bench.json"
        status = run_benchmarks(args.quick, json_path)
        if not json_path.exists():
            print("no benchmark results", file=sys.stderr)
            return status or 1
        print()
        print(table(medians(json_path)))
    sys.path.insert(0, str(HERE))
    # The hot paths and the Redis-guarded calls again in plain loops, rounds interleaved:
    # pytest-benchmark's per-call overhead compresses ratios near 1x, and its medians of
    # short runs swing on a shared machine.
    import hot_loop
    import redis_loop

    print()
    hot_loop.main(["--rounds", "3", "--calls", "30000"] if args.quick else [])
    if shutil.which("redis-server"):
        print()
        redis_loop.main(["--rounds", "7", "--calls", "500"] if args.quick else [])
    # Correctness beside speed: admission of a shared budget under 8 threads.
    print()
    import admission

    admission.main()
    return status


if __name__ == "__main__":
    sys.exit(main())
