"""A circuit breaker whose state lives in Redis: opened by one host, open on every host.

The state machine is the native one's (see ``rust/breaker.rs``), as one Lua script: each
step (asking to run a call, reporting how it ended, reading the state, reset, force-open)
is one ``EVALSHA``, atomic on the server and timed by Redis' clock (``TIME``). The state
is one hash under a key with a ``{...}`` hash tag, for Redis Cluster.

The native in-process breaker of the same settings stays underneath: it validates the
arguments, and it is the fallback when ``on_backend_error="local"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from peak_resilience._backends import choice as _backends
from peak_resilience._backends.redis.connection import UNAVAILABLE, RedisLink, Script
from peak_resilience._breaker import (
    CircuitBreaker,
    CircuitState,
    ExceptionClasses,
    WindowType,
    _on_transition,
)
from peak_resilience._native import CircuitBreaker as _NativeBreaker
from peak_resilience.errors import CircuitBreakerError

if TYPE_CHECKING:
    from peak_resilience._native import ManualClock

__all__ = ["RedisCircuitBreaker"]

BREAKER = Script(
    """
-- The circuit breaker on Redis' clock. KEYS[1]: a hash of state (0 closed, 1 half-open,
-- 2 open, 3 forced open, 4 disabled), period (bumped on every entry into closed or
-- half-open: a call's verdict counts only in the period that admitted it), streak
-- (consecutive failures while closed), due (us: when an open circuit lets a trial
-- through), since (us: when the half-open period began), trials / passed (half-open calls
-- admitted / succeeded), opened_streak, failed_trials (trials failed in a row: the
-- back-off exponent), shadow (1: metrics_only, decide but admit), the failure-rate window
-- (ws<i> / wc<i> / wf<i>: slice number, calls, failures of slice i of 10; wseq: calls
-- counted by a count window), and the counters successes, failures, rejections,
-- would_reject, slow_calls, t<from><to>.
-- ARGV: op, failure_threshold, recovery_timeout (us), half_open_max_calls, admission
-- (kind + 4 * period; kind 1 normal, 2 trial, 3 bypass; -1: infer from the state),
-- outcome ('ok', 'fail', 'slow', 'release'), failure rate (ppm, 0 none), minimum_calls,
-- window is time (0/1), window size (calls or us), back-off multiplier, max open (us),
-- argument (us for 'open_for', 0/1 for 'shadow').
-- Returns {result, remaining us, from, to, state, failure_count, shadow state}: result is
-- the admission for 'enter' (0 refused); from = -1: no transition; state is the one the
-- gauge shows (5 while shadow), shadow state the machine's own.
local k = KEYS[1]
local op = ARGV[1]
local threshold = tonumber(ARGV[2])
local timeout = tonumber(ARGV[3])
local max_trials = tonumber(ARGV[4])
local rate = tonumber(ARGV[7]) or 0
local minimum_calls = tonumber(ARGV[8]) or 1
local window_is_time = tonumber(ARGV[9]) or 0
local window_size = tonumber(ARGV[10]) or 100
local multiplier = tonumber(ARGV[11]) or 1
local max_open = tonumber(ARGV[12]) or timeout
local argument = tonumber(ARGV[13]) or 0
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local v = redis.call('HMGET', k, 'state', 'period', 'streak', 'due', 'since', 'trials',
  'passed', 'opened_streak', 'failed_trials', 'shadow')
local state = tonumber(v[1]) or 0
local period = tonumber(v[2]) or 0
local streak = tonumber(v[3]) or 0
local due = tonumber(v[4]) or 0
local since = tonumber(v[5]) or 0
local trials = tonumber(v[6]) or 0
local passed = tonumber(v[7]) or 0
local opened_streak = tonumber(v[8]) or 0
local failed_trials = tonumber(v[9]) or 0
local shadow = tonumber(v[10]) or 0
local from, to = -1, -1
local result = 0

local function move(next)
  if next ~= state then
    redis.call('HINCRBY', k, 't' .. state .. next, 1)
    from, to = state, next
  end
  state = next
end

local function open_until(count, until_us)
  move(2)
  due = until_us
  opened_streak = count
  redis.call('HSET', k, 'state', 2, 'due', string.format('%d', due), 'opened_streak', count)
end

local function open(count)
  open_until(count, now + timeout)
end

-- A new half-open period with `admitted` trials already given out.
local function half_open(admitted)
  move(1)
  period = period + 1
  trials, passed = admitted, 0
  redis.call('HSET', k, 'state', 1, 'period', period, 'since', string.format('%d', now),
    'trials', admitted, 'passed', 0)
end

local function clear_window()
  for i = 0, 9 do redis.call('HDEL', k, 'ws' .. i, 'wc' .. i, 'wf' .. i) end
end

local function close()
  move(0)
  period = period + 1
  streak = 0
  failed_trials = 0
  redis.call('HSET', k, 'state', 0, 'period', period, 'streak', 0, 'failed_trials', 0)
  if rate > 0 then clear_window() end
end

-- An open circuit past its timeout reads half-open, before the next call arrives.
local function refresh()
  if state == 2 and now >= due then half_open(0) end
end

-- A call the machine refuses: admitted outside it while in shadow mode.
local function refuse()
  if shadow == 1 then
    redis.call('HINCRBY', k, 'would_reject', 1)
    result = 3
  else
    redis.call('HINCRBY', k, 'rejections', 1)
  end
end

-- The slice a call falls in now, and how many slices the window spans.
local function slice_now(take)
  local width = math.ceil(window_size / 10)
  if window_is_time == 1 then return math.floor(now / width), 10 end
  local n
  if take then n = redis.call('HINCRBY', k, 'wseq', 1) - 1
  else n = math.max((tonumber(redis.call('HGET', k, 'wseq')) or 0) - 1, 0) end
  return math.floor(n / width), math.ceil(window_size / width)
end

local function window_totals(slice, span)
  local calls, failures = 0, 0
  for back = 0, span - 1 do
    local n = slice - back
    if n < 0 then break end
    local i = n % 10
    local w = redis.call('HMGET', k, 'ws' .. i, 'wc' .. i, 'wf' .. i)
    if tonumber(w[1]) == n then
      calls = calls + (tonumber(w[2]) or 0)
      failures = failures + (tonumber(w[3]) or 0)
    end
  end
  return calls, failures
end

-- Counts a call admitted while closed; true when its failure brings the rate to the
-- threshold with at least minimum_calls in the window.
local function count_in_window(failed)
  local slice, span = slice_now(true)
  local i = slice % 10
  if tonumber(redis.call('HGET', k, 'ws' .. i)) ~= slice then
    redis.call('HSET', k, 'ws' .. i, slice, 'wc' .. i, 0, 'wf' .. i, 0)
  end
  redis.call('HINCRBY', k, 'wc' .. i, 1)
  if not failed then return false end
  redis.call('HINCRBY', k, 'wf' .. i, 1)
  local calls, failures = window_totals(slice, span)
  return calls >= minimum_calls and failures * 1000000 >= rate * calls
end

if op == 'enter' then
  if state == 0 then
    result = 1 + 4 * period
  elseif state == 4 then
    result = 3
  elseif state == 3 then
    redis.call('HINCRBY', k, 'rejections', 1)
  elseif state == 2 and now < due then
    refuse()
  elseif state == 2 then
    half_open(1)
    result = 2 + 4 * period
  elseif trials < max_trials then
    trials = trials + 1
    redis.call('HSET', k, 'trials', trials)
    result = 2 + 4 * period
  elseif now >= since + timeout then
    -- Every permit has been out a whole recovery timeout without a verdict: its callers
    -- are presumed dead (a killed process); start over with a new period.
    half_open(1)
    result = 2 + 4 * period
  else
    refuse()
  end
elseif op == 'exit' then
  local admission = tonumber(ARGV[5])
  local kind, admitted_in
  if admission < 0 then
    refresh()
    if state == 0 then kind = 1 elseif state == 1 then kind = 2 else kind = 3 end
    admitted_in = period
  else
    kind = admission % 4
    admitted_in = (admission - kind) / 4
  end
  local normal = kind == 1 and state == 0 and admitted_in == period
  local trial = kind == 2 and state == 1 and admitted_in == period
  local outcome = ARGV[6]
  if outcome == 'ok' then
    redis.call('HINCRBY', k, 'successes', 1)
    if normal and rate > 0 then count_in_window(false) end
    if normal and streak > 0 then
      streak = 0
      redis.call('HSET', k, 'streak', 0)
    elseif trial then
      passed = passed + 1
      if passed >= max_trials then close() else redis.call('HSET', k, 'passed', passed) end
    end
  elseif outcome == 'fail' or outcome == 'slow' then
    redis.call('HINCRBY', k, 'failures', 1)
    if outcome == 'slow' then redis.call('HINCRBY', k, 'slow_calls', 1) end
    if normal then
      streak = streak + 1
      local trips = rate > 0 and count_in_window(true)
      if trips or streak >= threshold then
        open(streak)
      else
        redis.call('HSET', k, 'streak', streak)
      end
    elseif trial then
      -- Back-off: each trial failed in a row reopens for longer, up to max_open.
      local wait = timeout
      if multiplier > 1 then
        wait = math.min(timeout * multiplier ^ (failed_trials + 1), math.max(max_open, timeout))
      end
      failed_trials = failed_trials + 1
      redis.call('HSET', k, 'failed_trials', failed_trials)
      open_until(1, now + math.floor(wait))
    end
  elseif trial and trials > passed then
    trials = trials - 1
    redis.call('HSET', k, 'trials', trials)
  end
elseif op == 'state' then
  refresh()
elseif op == 'reset' then
  close()
elseif op == 'open' then
  open(opened_streak)
elseif op == 'open_for' then
  open_until(opened_streak, now + argument)
elseif op == 'force' then
  move(3)
  redis.call('HSET', k, 'state', 3)
elseif op == 'disable' then
  move(4)
  redis.call('HSET', k, 'state', 4)
elseif op == 'shadow' then
  refresh()
  if argument ~= shadow and state <= 2 then
    if argument == 1 then
      redis.call('HINCRBY', k, 't' .. state .. 5, 1)
      from, to = state, 5
    else
      redis.call('HINCRBY', k, 't5' .. state, 1)
      from, to = 5, state
    end
  end
  shadow = argument
  redis.call('HSET', k, 'shadow', shadow)
elseif op == 'window' then
  if rate == 0 then return {0, 0, failed_trials} end
  local slice, span = slice_now(false)
  local calls, failures = window_totals(slice, span)
  return {calls, failures, failed_trials}
elseif op == 'stats' then
  local fields = {'successes', 'failures', 'rejections', 'would_reject', 'slow_calls'}
  for a = 0, 5 do for b = 0, 5 do fields[#fields + 1] = 't' .. a .. b end end
  return redis.call('HMGET', k, unpack(fields))
end
local remaining = 0
if state == 2 and due > now then remaining = due - now end
if state == 3 then remaining = timeout end
local failure_count = opened_streak
if state == 0 then failure_count = streak end
local shown = state
if shadow == 1 and state <= 2 then shown = 5 end
return {result, remaining, from, to, shown, failure_count, state}
"""
)

_ADMISSION_INFERRED = -1
#: Counters before the transition counts in the 'stats' reply.
_COUNTERS = 5
_STATES = 6


def _key(name: str) -> str:
    return f"peak-resilience:{{breaker:{name}}}"


class RedisCircuitBreaker(CircuitBreaker):
    """``CircuitBreaker`` with its state in Redis; built by
    ``CircuitBreaker(backend="redis")``.

    A transition is logged (and passed to the transition hooks) by the process whose call
    caused it; the others see the new state on their next call.
    """

    #: The native Guard would consult the local state machine: guard calls in Python.
    _guard_in_python = True

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        name: str | None = None,
        half_open_max_calls: int = 1,
        *,
        clock: ManualClock | None = None,
        backend: _backends.Backend = "redis",
        shared_dir: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        on_backend_error: _backends.OnBackendError = "local",
        redis_timeout: float = _backends.DEFAULT_REDIS_TIMEOUT,
        failure_rate_threshold: float | None = None,
        minimum_calls: int | None = None,
        window_type: WindowType | None = None,
        window_size: float | None = None,
        slow_call_duration: float | None = None,
        backoff_multiplier: float | None = None,
        max_recovery_timeout: float | None = None,
        record_exceptions: ExceptionClasses | None = None,
        ignore_exceptions: ExceptionClasses | None = None,
        failure_result: Callable[[Any], object] | None = None,
        metrics_only: bool = False,
    ) -> None:
        if not name:
            raise ValueError(
                "backend='redis' needs a name for the breaker: hosts find the same state by name"
            )
        if clock is not None:
            raise ValueError(
                "backend='redis' runs on Redis' clock; clock= is for in-process breakers"
            )
        self._on_error = _backends.check_on_backend_error(on_backend_error)
        self._link = RedisLink(redis_url, timeout=redis_timeout, what=f"circuit breaker {name!r}")
        self._key = _key(name)
        self._encode_settings()
        super().__init__(name=name, backend="redis")
        if metrics_only:
            # The native breaker underneath took the mode; every host shares it from here.
            self.set_metrics_only(True)

    def _encode_settings(self) -> None:
        us = 1_000_000
        rate = self.failure_rate_threshold
        size = self.window_size
        self._settings = (
            str(self.failure_threshold).encode(),
            str(round(self.recovery_timeout * us)).encode(),
            str(self.half_open_max_calls).encode(),
        )
        self._policy = (
            str(round((rate or 0.0) * 1_000_000)).encode(),
            str(self.minimum_calls).encode(),
            b"1" if self.window_type == "time" else b"0",
            str(round(size * us) if self.window_type == "time" else int(size)).encode(),
            repr(float(self.backoff_multiplier)).encode(),
            str(round(self.max_recovery_timeout * us)).encode(),
        )
        # Timed by this process for the slow-call rule (None: not timed).
        self._slow_after = self.slow_call_duration

    def _run(self, op: bytes, admission: int = 0, outcome: bytes = b"", argument: int = 0) -> Any:
        reply = self._link.run(
            BREAKER, self._key, op, *self._settings, admission, outcome, *self._policy, argument
        )
        if reply is UNAVAILABLE:
            return UNAVAILABLE
        if len(reply) > 3 and reply[2] >= 0:
            _on_transition(self.name, int(reply[2]), int(reply[3]))
        return reply

    # The steps of a call -----------------------------------------------------------

    def _enter(self) -> int:
        """The admission (kind 1 closed, 2 trial, plus 4 * the period that admitted the
        call); raises CircuitBreakerError."""
        reply = self._run(b"enter")
        if reply is UNAVAILABLE:
            if self._on_error == "local":
                return _NativeBreaker._enter(self)
            if self._on_error == "fail_open":
                return 1
            # fail_closed: refused as by an open circuit, until Redis is tried again.
            raise CircuitBreakerError(self.name, float(self._link.retry_interval))
        if reply[0] == 0:
            raise CircuitBreakerError(self.name, int(reply[1]) / 1_000_000)
        return int(reply[0])

    def _exit(self, admission: int, outcome: bool | None, *, slow: bool = False) -> None:
        """Reports how a call admitted by ``_enter`` ended (None: no verdict; ``slow``: a
        success that took ``slow_call_duration`` or longer, counted as a failure)."""
        if slow and outcome is True:
            code = b"slow"
            outcome = False
        else:
            code = b"ok" if outcome is True else b"fail" if outcome is False else b"release"
        if self._run(b"exit", admission, code) is not UNAVAILABLE or self._on_error != "local":
            return
        # The local breaker: a verdict reported by hand counts in its current period; an
        # admission that Redis gave belongs to none of its periods and is ignored there.
        if admission != _ADMISSION_INFERRED:
            _NativeBreaker._exit(self, admission, outcome)
        elif outcome is True:
            _NativeBreaker.record_success(self)
        elif outcome is False:
            _NativeBreaker.record_failure(self)

    def allow(self) -> bool:
        """Whether a call may run now (takes a trial permit when half-open)."""
        try:
            self._enter()
        except CircuitBreakerError:
            return False
        return True

    def record_success(self) -> None:
        self._exit(_ADMISSION_INFERRED, True)

    def record_failure(self) -> None:
        self._exit(_ADMISSION_INFERRED, False)

    # State and operator actions ----------------------------------------------------

    def _state_reply(self) -> Any:
        return self._run(b"state")

    @property
    def state_code(self) -> int:
        reply = self._state_reply()
        if reply is UNAVAILABLE:
            if self._on_error == "local":
                code: int = _NativeBreaker.state_code.__get__(self)
                return code
            return CircuitState.CLOSED if self._on_error == "fail_open" else CircuitState.OPEN
        return int(reply[4])

    @property
    def failure_count(self) -> int:
        reply = self._state_reply()
        if reply is UNAVAILABLE:
            count: int = _NativeBreaker.failure_count.__get__(self)
            return count
        return int(reply[5])

    @property
    def retry_after(self) -> float:
        reply = self._state_reply()
        if reply is UNAVAILABLE:
            after: float = _NativeBreaker.retry_after.__get__(self)
            return after
        return int(reply[1]) / 1_000_000

    def reset(self) -> None:
        """Closes the circuit for every host."""
        if self._run(b"reset") is UNAVAILABLE:
            _NativeBreaker.reset(self)

    def force_open(self) -> None:
        """Holds the circuit open for every host (FORCED_OPEN) until ``reset()``."""
        if self._run(b"force") is UNAVAILABLE:
            _NativeBreaker.force_open(self)

    def open_for(self, seconds: float) -> None:
        """Opens the circuit for every host for exactly ``seconds``."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ValueError(f"seconds must be a positive number of seconds, got {seconds!r}")
        if self._run(b"open_for", argument=round(float(seconds) * 1_000_000)) is UNAVAILABLE:
            _NativeBreaker.open_for(self, seconds)

    def disable(self) -> None:
        """Lets every call through on every host (still counting) until ``reset()``."""
        if self._run(b"disable") is UNAVAILABLE:
            _NativeBreaker.disable(self)

    def set_metrics_only(self, enabled: bool) -> None:
        """Enters or leaves METRICS_ONLY mode on every host."""
        _NativeBreaker.set_metrics_only(self, enabled)  # the local fallback follows
        self._run(b"shadow", argument=1 if enabled else 0)

    @property
    def metrics_only(self) -> bool:
        """Whether the shared breaker reads METRICS_ONLY now."""
        return self.state_code == CircuitState.METRICS_ONLY

    @property
    def shadow_state_code(self) -> int:
        reply = self._state_reply()
        if reply is UNAVAILABLE:
            code: int = _NativeBreaker.shadow_state_code.__get__(self)
            return code
        return int(reply[6])

    def _window(self) -> list[int] | None:
        reply = self._run(b"window")
        if reply is UNAVAILABLE:
            return None
        return [int(v) for v in reply]

    @property
    def window_counts(self) -> tuple[int, int]:
        window = self._window()
        if window is None:
            counts: tuple[int, int] = _NativeBreaker.window_counts.__get__(self)
            return counts
        return window[0], window[1]

    @property
    def failure_rate(self) -> float:
        calls, failures = self.window_counts
        return failures / calls if calls else 0.0

    @property
    def failed_trials(self) -> int:
        window = self._window()
        if window is None:
            trials: int = _NativeBreaker.failed_trials.__get__(self)
            return trials
        return window[2]

    def set_settings(
        self,
        failure_threshold: int,
        recovery_timeout: float,
        half_open_max_calls: int,
        **policy: Any,
    ) -> None:
        super().set_settings(failure_threshold, recovery_timeout, half_open_max_calls, **policy)
        self._encode_settings()

    def _counters(self) -> list[int] | None:
        reply = self._link.run(
            BREAKER, self._key, b"stats", *self._settings, 0, b"", *self._policy, 0
        )
        if reply is UNAVAILABLE:
            return None
        return [int(v) if v is not None else 0 for v in reply]

    @property
    def success_total(self) -> int:
        counters = self._counters()
        if counters is None:
            total: int = _NativeBreaker.success_total.__get__(self)
            return total
        return counters[0]

    @property
    def failure_total(self) -> int:
        counters = self._counters()
        if counters is None:
            total: int = _NativeBreaker.failure_total.__get__(self)
            return total
        return counters[1]

    @property
    def rejection_total(self) -> int:
        counters = self._counters()
        if counters is None:
            total: int = _NativeBreaker.rejection_total.__get__(self)
            return total
        return counters[2]

    @property
    def would_reject_total(self) -> int:
        counters = self._counters()
        if counters is None:
            total: int = _NativeBreaker.would_reject_total.__get__(self)
            return total
        return counters[3]

    @property
    def slow_call_total(self) -> int:
        counters = self._counters()
        if counters is None:
            total: int = _NativeBreaker.slow_call_total.__get__(self)
            return total
        return counters[4]

    def transition_count(self, from_state: int, to_state: int) -> int:
        """Transitions from ``from_state`` to ``to_state`` on every host."""
        local = _NativeBreaker.transition_count(self, from_state, to_state)  # validates
        counters = self._counters()
        if counters is None:
            return local
        return counters[_COUNTERS + from_state * _STATES + to_state]

    def transition_counts(self) -> dict[tuple[int, int], int]:
        """Every transition that happened on any host, as {(from, to): count}."""
        counters = self._counters()
        if counters is None:
            return _NativeBreaker.transition_counts(self)
        pairs = ((a, b) for a in range(_STATES) for b in range(_STATES))
        return {
            pair: count for pair, count in zip(pairs, counters[_COUNTERS:], strict=True) if count
        }

    @property
    def redis_available(self) -> bool:
        """False while Redis is unreachable (``on_backend_error`` applies meanwhile)."""
        return self._link.available
