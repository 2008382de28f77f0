-- The circuit breaker on Redis' clock: the native state machine's (rust/breaker.rs), for
-- a breaker shared by every host. KEYS[1]: a hash of state (0 closed, 1 half-open,
-- 2 open, 3 forced open, 4 disabled), period (bumped on every entry into closed or
-- half-open: a call's verdict counts only in the period that admitted it), streak
-- (consecutive failures while closed), due (us: when an open circuit lets a trial
-- through), since (us: when the last trial permit was granted; the half-open period's
-- start until one is), trials / passed (half-open calls admitted / succeeded),
-- opened_streak, failed_trials (trials failed in a row: the back-off exponent), shadow
-- (1: metrics_only, decide but admit), the failure-rate window (ws<i> / wc<i> / wf<i>:
-- slice number, calls, failures of slice i of 10; wseq: calls counted by a count
-- window), and the counters successes, failures, rejections, would_reject, slow_calls,
-- t<from><to>.
-- ARGV: op, failure_threshold, recovery_timeout (us), half_open_max_calls, admission
-- (kind + 4 * period; kind 1 normal, 2 trial, 3 bypass; -1: infer from the state),
-- outcome ('ok', 'fail', 'slow', 'release'), failure rate (ppm, 0 none), minimum_calls,
-- window is time (0/1), window size (calls or us), back-off multiplier, max open (us),
-- argument (us for 'open_for', 0/1 for 'shadow'), now (us; empty: Redis' TIME, the only
-- clock every host agrees on; set only by tests driving a manual clock); then, for any op,
-- pairs (admission, count): successes of calls this process admitted in a closed circuit
-- (or outside the machine) and has not sent yet, carried by this call and counted before
-- its op, as their own 'exit ok' would have counted them (carried.py).
-- Returns {result, remaining us, from, to, state, failure_count, shadow state}: result is
-- the admission for 'enter' (0 refused); from = -1: no transition; state is the one the
-- gauge shows (5 while shadow), shadow state the machine's own.
local k = KEYS[1]
local op = ARGV[1]
local rate = tonumber(ARGV[7]) or 0
-- What a closed circuit's admission needs; the rest is read after the fast path below.
local v = redis.call('HMGET', k, 'state', 'period', 'streak', 'shadow')
local state = tonumber(v[1]) or 0
local period = tonumber(v[2]) or 0
local streak = tonumber(v[3]) or 0
local shadow = tonumber(v[4]) or 0

local count_in_window -- (below: only a failure-rate window needs it)

-- Successes of calls admitted in a closed circuit: counted, and in the period that
-- admitted them, a failure streak ended and the failure-rate window's calls counted.
local function count_successes(normal, count)
  redis.call('HINCRBY', k, 'successes', count)
  if not normal then return end
  if rate > 0 then for _ = 1, count do count_in_window(false) end end
  if streak > 0 then
    streak = 0
    redis.call('HSET', k, 'streak', 0)
  end
end

local function count_carried()
  for at = 15, #ARGV - 1, 2 do
    local admission, count = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
    local kind = admission % 4
    count_successes(kind == 1 and state == 0 and (admission - kind) / 4 == period, count)
  end
end

-- The admission almost every guarded call asks for, into a closed circuit with no
-- failure-rate window: answered before the rest is read or the other functions are made
-- (each function made costs the server ~0.4 us a call, the whole script ~20 us).
if op == 'enter' and state == 0 and rate == 0 then
  count_carried()
  local shown = 0
  if shadow == 1 then shown = 5 end
  return {1 + 4 * period, 0, -1, -1, shown, streak, 0}
end

local threshold = tonumber(ARGV[2])
local timeout = tonumber(ARGV[3])
local max_trials = tonumber(ARGV[4])
local minimum_calls = tonumber(ARGV[8]) or 1
local window_is_time = tonumber(ARGV[9]) or 0
local window_size = tonumber(ARGV[10]) or 100
local multiplier = tonumber(ARGV[11]) or 1
local max_open = tonumber(ARGV[12]) or timeout
local argument = tonumber(ARGV[13]) or 0
local now = tonumber(ARGV[14])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
v = redis.call('HMGET', k, 'due', 'since', 'trials', 'passed', 'opened_streak', 'failed_trials')
local due = tonumber(v[1]) or 0
local since = tonumber(v[2]) or 0
local trials = tonumber(v[3]) or 0
local passed = tonumber(v[4]) or 0
local opened_streak = tonumber(v[5]) or 0
local failed_trials = tonumber(v[6]) or 0
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
count_in_window = function(failed)
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

count_carried()

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
    -- The permit's own time: a period begun by a state read long ago must not make it
    -- look abandoned to the next caller.
    since = now
    redis.call('HSET', k, 'trials', trials, 'since', string.format('%d', now))
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
    count_successes(normal, 1)
    if trial and trials > passed then
      -- Only a trial holding a permit closes: a success recorded by hand while half-open
      -- with no permit out (none taken, or given back) proves nothing.
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
elseif op == 'carry' then
  -- Nothing more than the carried successes (counted above): carried.py's flush.
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
