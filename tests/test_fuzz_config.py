"""The configuration loader under random input (hypothesis): any TOML document and any
``PEAK_TRADE_*`` environment give a ``Config`` or a ``ConfigError``, never another
exception; what is valid is accepted with the values it states.

The documents are built from the schema's keys, near-miss typos and random names, with
values of every TOML type (wrong ones included), huge and tiny numbers, NaN and
infinities, unicode strings, nested tables, and plain random text. Each test counts the
examples it ran and checks that they did run; the slow variants run many more.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stress import scaled

from peak_resilience.config import (
    MAX_FAILURE_THRESHOLD,
    SCHEMA,
    ConfigError,
    configure,
    env_name,
    load_config,
)
from peak_resilience.errors import CircuitBreakerError, RateLimitExceeded
from peak_resilience.resilience_helpers import with_resilience
from peak_resilience.testing import ManualClock, fresh_resilience

KEYS = sorted(SCHEMA)
GLOBAL_ONLY = sorted(name for name, spec in SCHEMA.items() if not spec.per_module)

# -- TOML text -----------------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string holding exactly ``text`` (control characters escaped)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_key(name: str) -> str:
    return (
        name
        if name and all(c.isalnum() or c in "_-" for c in name) and name.isascii()
        else (toml_string(name))
    )


def typo(name: str, data: st.DataObject) -> str:
    """A near miss of a key: one character dropped, doubled or swapped."""
    i = data.draw(st.integers(0, len(name) - 1))
    kind = data.draw(st.sampled_from(["drop", "double", "swap", "upper"]))
    if kind == "drop":
        return name[:i] + name[i + 1 :]
    if kind == "double":
        return name[:i] + name[i] + name[i:]
    if kind == "upper":
        return name.upper()
    j = min(i + 1, len(name) - 1)
    chars = list(name)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),  # TOML integers are 64-bit
    st.integers(-3, 200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, 1e-300, 1e308, 1e-9, 1e9, 584 * 365 * 86400.0]),
    st.text(max_size=30),
    st.sampled_from(["memory", "shared", "redis", "fail_open", "local", "", "redis://:pw@h/0"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
)


@st.composite
def key_names(draw: st.DrawFn) -> str:
    data = draw(st.data())
    kind = draw(st.sampled_from(["schema", "schema", "schema", "typo", "random"]))
    if kind == "schema":
        return draw(st.sampled_from(KEYS))
    if kind == "typo":
        return typo(draw(st.sampled_from(KEYS)), data)
    return draw(st.text(max_size=20))


@st.composite
def tables(draw: st.DrawFn) -> dict[str, Any]:
    return draw(st.dictionaries(key_names(), values, max_size=6))


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A TOML document: a [resilience] table, module tables (some nested too deep), other
    tables of the application, or random text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    lines: list[str] = []
    if draw(st.booleans()):
        lines.append(f"title = {toml_value(draw(scalars))}")
    if draw(st.integers(0, 9)) == 0:
        lines.append(f"resilience = {toml_value(draw(scalars))}")  # not a table
        return "\n".join(lines)
    lines.append("[resilience]")
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in draw(tables()).items()]
    modules = draw(st.lists(st.text(max_size=12), max_size=3, unique=True))
    for module in modules:
        lines.append(f"[resilience.{toml_key(module)}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in draw(tables()).items()]
        if draw(st.integers(0, 5)) == 0:
            lines.append(f"[resilience.{toml_key(module)}.deeper]")
            lines.append("circuit_breaker_threshold = 3")
    if draw(st.booleans()):
        lines.append("[exchange]")
        lines.append(f"api = {toml_value(draw(scalars))}")
    return "\n".join(lines) + "\n"


# -- environment ---------------------------------------------------------------------------

env_texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "1",
            "0",
            "true",
            "off",
            "yes",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "1e-320",
            "5e-324",
            " 7 ",
            "1_000",
            "0x10",
            "١٢",
            "",
            "redis",
            "memory",
            "9" * 30,
            "9" * 5000,
            "18446744073709551616",
            "4294967296",
            "-1",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
)


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    data = draw(st.data())
    environ: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["global", "module", "typo", "app", "random"]))
        name = draw(st.sampled_from(KEYS)).upper()
        if kind == "module":
            module = draw(st.sampled_from(["LIVE", "RISK", "LIVE_EU", "", "X-Y", "é"]))
            variable = f"PEAK_TRADE_{module}__{name}"
        elif kind == "typo":
            variable = "PEAK_TRADE_" + typo(name, data)
        elif kind == "app":
            variable = "PEAK_TRADE_" + draw(st.sampled_from(["API_KEY", "EXCHANGE", "MODE"]))
        elif kind == "random":
            variable = "PEAK_TRADE_" + draw(st.text(max_size=20))
        else:
            variable = f"PEAK_TRADE_{name}"
        environ[variable] = draw(env_texts)
    return environ


# -- the loader under test -----------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory) / "fuzz.toml"


def load_every_module(path: Path | None, environ: Mapping[str, str]) -> None:
    """Loads the file and reads every module's settings (file tables and environment-only
    modules alike, which the loader validates when first asked for)."""
    loaded = load_config(path, environ=environ)
    modules = set(loaded.modules)
    for variable in environ:
        rest = variable[len("PEAK_TRADE_") :]
        module, sep, _ = rest.partition("__")
        if sep and module:
            modules.add(module.lower())
    for module in modules:
        loaded.module(module)


class Counter:
    def __init__(self) -> None:
        self.examples = self.accepted = self.refused = 0

    def run(self, path: Path | None, environ: Mapping[str, str]) -> None:
        self.examples += 1
        try:
            load_every_module(path, environ)
        except ConfigError as err:
            self.refused += 1
            assert str(err), "a ConfigError says what is wrong"
        else:
            self.accepted += 1
            build_every_module(path, environ)


def build_every_module(path: Path | None, environ: Mapping[str, str]) -> None:
    """What load_config accepted, the breakers and limiters are built from without error
    (a setting that passes validation must not fail later, when a decorator applies it)."""
    with fresh_resilience(ManualClock()):
        loaded = configure(path, environ=environ)
        for module in (*loaded.modules, "unlisted"):
            settings_ = loaded.module(module)
            backends = {
                settings_.circuit_breaker_backend,
                settings_.rate_limit_backend,
                settings_.bulkhead_backend,
            }
            if backends != {"memory"}:
                continue  # no shared file or Redis connection from random settings
            if settings_.fail_safe_defaults:
                continue  # needs a fallback: its own test
            guarded = with_resilience(module, "fuzzed", use_rate_limiter=True)(lambda: "ok")
            # A refusal is an answer; only another exception is a failure.
            with contextlib.suppress(CircuitBreakerError, RateLimitExceeded):
                assert guarded() == "ok"


FAST = scaled(400, slow=False)
LONG = scaled(20_000)
SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "database": None,
}


def fuzz_documents(scratch: Path, count: int) -> Counter:
    counter = Counter()

    @settings(max_examples=count, **SETTINGS)  # type: ignore[arg-type]
    @given(document=documents(), environ=environments())
    def run(document: str, environ: dict[str, str]) -> None:
        scratch.write_bytes(document.encode("utf-8", "surrogatepass"))
        counter.run(scratch, environ)

    run()
    return counter


def test_random_toml_and_environment_give_a_config_or_a_config_error(scratch: Path) -> None:
    counter = fuzz_documents(scratch, FAST)

    assert counter.examples >= FAST * 0.9
    # Both outcomes were reached: the generator is not all-invalid or all-valid.
    assert counter.accepted > 0 and counter.refused > 0


@pytest.mark.slow
def test_random_toml_and_environment_long_run(scratch: Path) -> None:
    counter = fuzz_documents(scratch, LONG)

    assert counter.examples >= LONG * 0.9
    print(
        f"config fuzz: {counter.examples} examples, {counter.accepted} accepted, "
        f"{counter.refused} refused with ConfigError, 0 other exceptions"
    )


@settings(max_examples=FAST, **SETTINGS)  # type: ignore[arg-type]
@given(data=st.binary(max_size=300))
def test_random_bytes_as_a_config_file_give_a_config_error_or_a_config(
    scratch: Path, data: bytes
) -> None:
    scratch.write_bytes(data)
    Counter().run(scratch, {})


@settings(max_examples=FAST, **SETTINGS)  # type: ignore[arg-type]
@given(path=st.text(max_size=40))
def test_any_config_path_gives_a_config_error_or_a_config(path: str) -> None:
    # Including paths with NUL characters, directories and files that do not exist.
    Counter().run(Path(path) if path else None, {"PEAK_TRADE_CONFIG": path} if path else {})


# -- valid documents are accepted with their values ----------------------------------------

valid_values: dict[str, st.SearchStrategy[Any]] = {
    "circuit_breaker_enabled": st.booleans(),
    "circuit_breaker_threshold": st.integers(1, MAX_FAILURE_THRESHOLD),
    "circuit_breaker_timeout": st.floats(1e-6, 1e6),
    "half_open_max_calls": st.integers(1, 1_000),
    "rate_limit_enabled": st.booleans(),
    "rate_limit_requests": st.integers(1, 10_000),
    "rate_limit_window": st.floats(1.0, 10_000.0),
    "rate_limit_burst": st.integers(1, 10_000),
    "metrics_enabled": st.booleans(),
    "fail_safe_defaults": st.booleans(),
    "circuit_breaker_backend": st.sampled_from(["memory", "shared"]),
    "rate_limit_backend": st.sampled_from(["memory", "shared"]),
    "redis_url": st.text(min_size=1, max_size=30),
    "redis_sentinels": st.lists(
        st.builds(
            "{}:{}".format, st.sampled_from(["127.0.0.1", "sentinel-a"]), st.integers(1, 65535)
        ),
        max_size=3,
    ),
    "redis_sentinel_master": st.text(min_size=1, max_size=30),
    "shared_dir": st.text(min_size=1, max_size=30),
    "on_backend_error": st.sampled_from(["fail_closed", "fail_open", "local"]),
    "health_token": st.text(min_size=1, max_size=30),
    "metrics_prefix": st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True),
    "circuit_breaker_failure_rate": st.floats(0.01, 1.0),
    "circuit_breaker_minimum_calls": st.integers(1, 1_000),
    "circuit_breaker_window_type": st.sampled_from(["count", "time"]),
    "circuit_breaker_window_calls": st.integers(1, 1_000),
    "circuit_breaker_window_seconds": st.floats(0.001, 86_400.0),
    "circuit_breaker_slow_call_duration": st.floats(0.001, 3_600.0),
    "circuit_breaker_backoff_multiplier": st.floats(1.0, 10.0),
    "circuit_breaker_max_timeout": st.floats(1.0, 86_400.0),
    "circuit_breaker_metrics_only": st.booleans(),
    "rate_limits": st.lists(
        st.builds(
            "{}/{}{}".format,
            st.integers(1, 1_000),
            st.integers(1, 100),
            st.sampled_from(["s", "m", "h"]),
        ),
        max_size=4,
    ),
    # Valid only below every window's burst, which other keys decide: 0 is always valid
    # (the random documents above try the others).
    "rate_limit_reserve": st.just(0),
    # Issue 16: the bulkhead and the retries.
    "max_concurrent": st.integers(1, 10_000),
    "bulkhead_max_wait": st.floats(0.0, 3_600.0),
    "bulkhead_backend": st.sampled_from(["memory", "shared"]),
    "retry_attempts": st.integers(1, 100),
    "retry_on": st.lists(
        st.sampled_from(["ConnectionError", "TimeoutError", "socket.timeout"]), max_size=3
    ),
    "retry_backoff": st.floats(0.0, 60.0),
    "retry_max_backoff": st.floats(0.0, 3_600.0),
    "retry_budget": st.floats(0.01, 1.0),
    "retry_min_per_second": st.integers(0, 1_000),
}
assert set(valid_values) == set(SCHEMA), "every key has a valid-value strategy"
module_names = st.text(min_size=1, max_size=12).filter(lambda m: "\x00" not in m)


@st.composite
def valid_setups(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    global_keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=8))
    globals_ = {k: draw(valid_values[k]) for k in global_keys}
    per_module = [k for k in KEYS if k not in GLOBAL_ONLY]
    modules = {
        m: {
            k: draw(valid_values[k])
            for k in draw(st.lists(st.sampled_from(per_module), unique=True, max_size=5))
        }
        for m in draw(st.lists(module_names, unique=True, max_size=3))
    }
    return globals_, modules


@settings(max_examples=scaled(200, slow=False), **SETTINGS)  # type: ignore[arg-type]
@given(setup=valid_setups())
def test_a_valid_random_document_is_accepted_with_every_value(
    scratch: Path, setup: tuple[dict[str, Any], dict[str, dict[str, Any]]]
) -> None:
    globals_, modules = setup
    lines = ["[resilience]"] + [f"{k} = {toml_value(v)}" for k, v in globals_.items()]
    for module, keys in modules.items():
        lines.append(f"[resilience.{toml_key(module)}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    scratch.write_text("\n".join(lines) + "\n", encoding="utf-8")

    loaded = load_config(scratch, environ={})

    def as_loaded(value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value  # TOML arrays: tuples

    for name, value in globals_.items():
        assert getattr(loaded.globals, name) == as_loaded(value)
    for module, keys in modules.items():
        settings_ = loaded.module(module)
        for name, value in {**globals_, **keys}.items():
            if name in keys or name not in GLOBAL_ONLY:
                expected = as_loaded(keys.get(name, value))
                pair_wins = "rate_limits" not in keys and (
                    "rate_limit_requests" in keys or "rate_limit_window" in keys
                )
                if name == "rate_limits" and pair_wins:
                    expected = ()  # the module's own rate wins over the global windows
                assert getattr(settings_, name) == expected


@settings(max_examples=scaled(200, slow=False), **SETTINGS)  # type: ignore[arg-type]
@given(data=st.data())
def test_valid_environment_values_are_accepted_as_typed(data: st.DataObject) -> None:
    # (rate_limits, redis_sentinels and retry_on have their own list syntax in the
    # environment, tested in test_config)
    lists = ("rate_limit_burst", "rate_limits", "redis_sentinels", "retry_on")
    name = data.draw(st.sampled_from([k for k in KEYS if k not in lists]))
    value = data.draw(valid_values[name])
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if isinstance(value, float):
        text = repr(value)
    module = data.draw(st.sampled_from(["", "live-eu"]))
    if module and name in GLOBAL_ONLY:
        module = ""
    variable = (
        f"PEAK_TRADE_{env_name(module)}__{name.upper()}"
        if module
        else (f"PEAK_TRADE_{name.upper()}")
    )

    loaded = load_config(None, environ={variable: text})
    settings_ = loaded.module(module) if module else loaded.globals

    if isinstance(value, str):
        assert getattr(settings_, name) == text  # strings are taken as they are
    else:
        assert getattr(settings_, name) == value


def test_a_recovery_timeout_from_the_environment_the_breaker_cannot_hold_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PEAK_TRADE_CIRCUIT_BREAKER_TIMEOUT", "1e308")

    with pytest.raises(ConfigError, match="PEAK_TRADE_CIRCUIT_BREAKER_TIMEOUT"):
        load_config()


@pytest.mark.parametrize("timeout", ["1e308", "1e-300"])
def test_a_recovery_timeout_the_breaker_cannot_hold_is_a_config_error_at_load(
    write_config: Any, timeout: str
) -> None:
    # Found by the fuzzer: these passed the schema and failed later, with a ValueError,
    # when with_resilience built its breaker.
    path = write_config(f"[resilience]\ncircuit_breaker_timeout = {timeout}\n")

    with pytest.raises(ConfigError, match=r"\[resilience\] circuit_breaker_timeout"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("circuit_breaker_max_timeout", "1e308"),
        ("circuit_breaker_slow_call_duration", "1e308"),
        ("circuit_breaker_slow_call_duration", "1e-300"),
    ],
)
def test_a_breaker_duration_it_cannot_hold_is_a_config_error_naming_its_key(
    write_config: Any, key: str, value: str
) -> None:
    # Found by building what the fuzzer's accepted documents configure: these passed the
    # schema and failed later, with a ValueError, when with_resilience built its breaker.
    path = write_config(f"[resilience]\n{key} = {value}\n")

    with pytest.raises(ConfigError, match=rf"\[resilience\] {key}: .*finite number of seconds"):
        load_config(path, environ={})


def test_a_config_path_with_a_nul_character_is_a_config_error() -> None:
    # Found by the fuzzer: open() raised a bare ValueError ("embedded null byte").
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config("conf\x00ig.toml", environ={})


EXTREMES = [
    "0",
    "-0.0",
    "5e-324",
    "1e-300",
    "1e-9",
    "0.5",
    "1",
    "1e9",
    "1.8e10",
    "1e308",
    "9223372036854775807",
    "-1",
]


@pytest.mark.parametrize("key", KEYS)
def test_every_extreme_number_in_every_key_is_refused_at_load_or_builds(
    scratch: Path, key: str
) -> None:
    # Each key alone with each extreme value (and beside a failure rate, which turns the
    # window keys on): what load_config accepts, with_resilience must build.
    for value in EXTREMES:
        for extra in ("", "circuit_breaker_failure_rate = 0.5\n"):
            if key == "circuit_breaker_failure_rate" and extra:
                continue
            scratch.write_text(f"[resilience]\n{extra}{key} = {value}\n")
            Counter().run(scratch, {})
