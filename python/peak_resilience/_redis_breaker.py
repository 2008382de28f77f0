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
from typing import TYPE_CHECKING, Any

from peak_resilience import _backends
from peak_resilience._breaker import CircuitBreaker, CircuitState, _on_transition
from peak_resilience._native import CircuitBreaker as _NativeBreaker
from peak_resilience._redis_link import UNAVAILABLE, RedisLink, Script
from peak_resilience.errors import CircuitBreakerError

if TYPE_CHECKING:
    from peak_resilience.testing import ManualClock

__all__ = ["RedisCircuitBreaker"]

BREAKER = Script(
    """
-- The circuit breaker on Redis' clock. KEYS[1]: a hash of state (0 closed, 1 half-open,
-- 2 open), period (bumped on every entry into closed or half-open: a call's verdict counts
-- only in the period that admitted it), streak (consecutive failures while closed), due
-- (us: when an open circuit lets a trial through), since (us: when the half-open period
-- began), trials / passed (half-open calls admitted / succeeded), opened_streak, and the
-- counters successes, failures, rejections, t<from><to>.
-- ARGV: op, failure_threshold, recovery_timeout (us), half_open_max_calls, admission
-- (kind + 4 * period; kind 1 normal, 2 trial, 3 infer from the state), outcome ('ok',
-- 'fail', 'release').
-- Returns {result, remaining us, from, to, state, failure_count}: result is the admission
-- for 'enter' (0 refused); from = -1: no transition.
local k = KEYS[1]
local op = ARGV[1]
local threshold = tonumber(ARGV[2])
local timeout = tonumber(ARGV[3])
local max_trials = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local v = redis.call('HMGET', k, 'state', 'period', 'streak', 'due', 'since', 'trials',
  'passed', 'opened_streak')
local state = tonumber(v[1]) or 0
local period = tonumber(v[2]) or 0
local streak = tonumber(v[3]) or 0
local due = tonumber(v[4]) or 0
local since = tonumber(v[5]) or 0
local trials = tonumber(v[6]) or 0
local passed = tonumber(v[7]) or 0
local opened_streak = tonumber(v[8]) or 0
local from, to = -1, -1
local result = 0

local function move(next)
  if next ~= state then
    redis.call('HINCRBY', k, 't' .. state .. next, 1)
    from, to = state, next
  end
  state = next
end

local function open(count)
  move(2)
  due = now + timeout
  opened_streak = count
  redis.call('HSET', k, 'state', 2, 'due', string.format('%d', due), 'opened_streak', count)
end

-- A new half-open period with `admitted` trials already given out.
local function half_open(admitted)
  move(1)
  period = period + 1
  trials, passed = admitted, 0
  redis.call('HSET', k, 'state', 1, 'period', period, 'since', string.format('%d', now),
    'trials', admitted, 'passed', 0)
end

local function close()
  move(0)
  period = period + 1
  streak = 0
  redis.call('HSET', k, 'state', 0, 'period', period, 'streak', 0)
end

-- An open circuit past its timeout reads half-open, before the next call arrives.
local function refresh()
  if state == 2 and now >= due then half_open(0) end
end

if op == 'enter' then
  if state == 0 then
    result = 1 + 4 * period
  elseif state == 2 and now < due then
    redis.call('HINCRBY', k, 'rejections', 1)
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
    redis.call('HINCRBY', k, 'rejections', 1)
  end
elseif op == 'exit' then
  local admission = tonumber(ARGV[5])
  local kind = admission % 4
  local admitted_in = (admission - kind) / 4
  if kind == 3 then
    refresh()
    kind = (state == 1) and 2 or 1
    admitted_in = period
  end
  local normal = kind == 1 and state == 0 and admitted_in == period
  local trial = kind == 2 and state == 1 and admitted_in == period
  local outcome = ARGV[6]
  if outcome == 'ok' then
    redis.call('HINCRBY', k, 'successes', 1)
    if normal and streak > 0 then
      streak = 0
      redis.call('HSET', k, 'streak', 0)
    elseif trial then
      passed = passed + 1
      if passed >= max_trials then close() else redis.call('HSET', k, 'passed', passed) end
    end
  elseif outcome == 'fail' then
    redis.call('HINCRBY', k, 'failures', 1)
    if normal then
      streak = streak + 1
      if streak >= threshold then open(streak) else redis.call('HSET', k, 'streak', streak) end
    elseif trial then
      open(1)
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
elseif op == 'stats' then
  return redis.call('HMGET', k, 'successes', 'failures', 'rejections',
    't00', 't01', 't02', 't10', 't11', 't12', 't20', 't21', 't22')
end
local remaining = 0
if state == 2 and due > now then remaining = due - now end
local failure_count = opened_streak
if state == 0 then failure_count = streak end
return {result, remaining, from, to, state, failure_count}
"""
)

_ADMISSION_INFERRED = 3


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

    def _encode_settings(self) -> None:
        self._settings = (
            str(self.failure_threshold).encode(),
            str(round(self.recovery_timeout * 1_000_000)).encode(),
            str(self.half_open_max_calls).encode(),
        )

    def _run(self, op: bytes, admission: int = 0, outcome: bytes = b"") -> Any:
        reply = self._link.run(BREAKER, self._key, op, *self._settings, admission, outcome)
        if reply is UNAVAILABLE:
            return UNAVAILABLE
        if reply[2] >= 0:
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

    def _exit(self, admission: int, outcome: bool | None) -> None:
        """Reports how a call admitted by ``_enter`` ended (None: no verdict)."""
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
        """Opens the circuit for every host, for ``recovery_timeout`` seconds."""
        if self._run(b"open") is UNAVAILABLE:
            _NativeBreaker.force_open(self)

    def set_settings(
        self, failure_threshold: int, recovery_timeout: float, half_open_max_calls: int
    ) -> None:
        super().set_settings(failure_threshold, recovery_timeout, half_open_max_calls)
        self._encode_settings()

    def _counters(self) -> list[int] | None:
        reply = self._link.run(BREAKER, self._key, b"stats", *self._settings, 0, b"")
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

    def transition_count(self, from_state: int, to_state: int) -> int:
        """Transitions from ``from_state`` to ``to_state`` on every host."""
        local = _NativeBreaker.transition_count(self, from_state, to_state)  # validates
        counters = self._counters()
        if counters is None:
            return local
        return counters[3 + from_state * 3 + to_state]

    @property
    def redis_available(self) -> bool:
        """False while Redis is unreachable (``on_backend_error`` applies meanwhile)."""
        return self._link.available
