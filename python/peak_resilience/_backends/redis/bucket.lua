-- A budget of one or more windows (all or nothing) on Redis' clock: the native bucket's
-- algorithms (rust/bucket.rs, fixed_window.rs, sliding_window.rs), for a budget shared
-- by every host. A window is a token bucket (GCRA), a fixed window counted per calendar
-- interval of Redis' TIME (intervals start at multiples of their length since the epoch)
-- or a sliding window (a log of when its last requests expire).
-- KEYS[1]: the bucket, a hash of tat/interval (window 0), tat1/interval1, ... (the
-- others' GCRA), period<i>/count<i> (fixed), log<i> (sliding: expiries in us, oldest
-- first, comma-separated), allowed, rejected and paused_until (us).
-- ARGV: mode, amount, window index (sync), reserve (tokens a normal call may not use; 0
-- for priority high), now (us; empty: Redis' TIME, the only clock every host agrees on;
-- set only by tests driving a manual clock), then per window: kind ('b' GCRA, 'f' fixed,
-- 's' sliding), interval (GCRA: us per token; otherwise the window's length in us),
-- tolerance (GCRA: us, interval * burst; otherwise the requests per window).
-- Modes: 'take' amount tokens from every window or none ({1, 0} or {0, wait us});
-- 'peek' ({wait us, allowed, rejected, paused us, per window: available us (GCRA) or
-- requests (otherwise)});
-- 'charge' (forced: may go into debt) and 'refund' (never beyond full) amount tokens in
-- every window; 'sync' window index to amount tokens used now; 'pause' for amount us
-- (0 lifts the pause; a shorter pause never shortens a longer one).
-- 'reserve' is a take that also returns what it left in each window ({1, 0, record, ...}:
-- a GCRA window's TAT, a fixed window's interval number, 1 for a sliding one), and
-- 'give_back' refunds amount tokens of such a take (its records comma-separated in the
-- index argument): no more than the take still owes in each window (GCRA: its TAT less
-- now; fixed: all of it while its interval lasts, nothing after), so a settlement that
-- arrives after the budget refilled and others took it gives nothing back.
local mode = ARGV[1]
local amount = tonumber(ARGV[2])
local index = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local n = (#ARGV - 5) / 3
local function field(name, i)
  if i == 0 then return name end
  return name .. i
end
local function us(value)
  -- %d: a plain number would be written with 14 significant digits and lose the us.
  return string.format('%d', value)
end
-- Each window's state, read once: kinds[i], intervals[i], tolerances[i], and tats[i]
-- (GCRA), periods[i]/counts[i] (fixed: the interval counted and its count), logs[i]
-- (sliding: the expiries still ahead of now, oldest first).
local kinds, tats, intervals, tolerances, periods, counts, logs = {}, {}, {}, {}, {}, {}, {}
for i = 0, n - 1 do
  local kind = ARGV[6 + 3 * i]
  local interval = tonumber(ARGV[7 + 3 * i])
  kinds[i], intervals[i], tolerances[i] = kind, interval, tonumber(ARGV[8 + 3 * i])
  if kind == 'f' then
    local state = redis.call('HMGET', KEYS[1], field('period', i), field('count', i))
    local period = math.floor(now / interval)
    local stored = tonumber(state[1]) or -1
    if stored >= period then
      periods[i], counts[i] = stored, tonumber(state[2]) or 0
    else
      periods[i], counts[i] = period, 0
    end
  elseif kind == 's' then
    local log = {}
    for expiry in string.gmatch(redis.call('HGET', KEYS[1], field('log', i)) or '', '%d+') do
      local e = tonumber(expiry)
      if e > now then log[#log + 1] = e end
    end
    logs[i] = log
  else
    local state = redis.call('HMGET', KEYS[1], field('tat', i), field('interval', i))
    local tat = tonumber(state[1]) or 0
    local before = tonumber(state[2])
    if tat > now and before and before ~= interval then
      -- The rate changed: the tokens already spent stay spent, in the new units.
      tat = now + math.floor((tat - now) * interval / before)
    end
    tats[i] = tat
  end
end
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused_until')) or 0
local function store(i)
  if kinds[i] == 'f' then
    redis.call('HSET', KEYS[1], field('period', i), us(periods[i]),
               field('count', i), us(counts[i]))
  elseif kinds[i] == 's' then
    local text = {}
    for k, e in ipairs(logs[i]) do text[k] = us(e) end
    redis.call('HSET', KEYS[1], field('log', i), table.concat(text, ','))
  else
    redis.call('HSET', KEYS[1], field('tat', i), us(tats[i]),
               field('interval', i), us(intervals[i]))
  end
end
-- How long window i makes a take of `amount` wait (0: it fits).
local function wait_of(i)
  if kinds[i] == 'f' then
    if counts[i] + amount <= tolerances[i] - reserve then return 0 end
    return (periods[i] + 1) * intervals[i] - now
  elseif kinds[i] == 's' then
    local log = logs[i]
    local over = #log + amount - (tolerances[i] - reserve)
    if over <= 0 then return 0 end
    return log[over] - now
  end
  local tat = math.max(tats[i], now)
  return tat + amount * intervals[i] - (now + tolerances[i] - reserve * intervals[i])
end
-- Counts `amount` in window i whatever its limit (a take that fits, or a charge).
local function add(i)
  if kinds[i] == 'f' then
    counts[i] = counts[i] + amount
  elseif kinds[i] == 's' then
    local log = logs[i]
    -- In order of expiry, however the callers' clocks disagreed.
    local expiry = math.max(now + intervals[i], log[#log] or 0)
    for _ = 1, amount do log[#log + 1] = expiry end
    while #log > tolerances[i] do table.remove(log, 1) end
  else
    tats[i] = math.max(tats[i], now) + amount * intervals[i]
  end
  store(i)
end
-- Uncounts `amount` in window i (never beyond empty). A sliding window has no record of
-- whose entries are whose here: it drops its oldest live ones, which leave the window
-- first anyway (dropping the newest could admit more than its limit in a later interval).
local function remove(i)
  if kinds[i] == 'f' then
    counts[i] = math.max(counts[i] - amount, 0)
  elseif kinds[i] == 's' then
    local log = logs[i]
    for _ = 1, math.min(amount, #log) do table.remove(log, 1) end
  else
    tats[i] = math.max(tats[i] - amount * intervals[i], 0)
  end
  store(i)
end
if mode == 'take' or mode == 'peek' or mode == 'reserve' then
  local wait = 0
  if paused > now then wait = paused - now end
  for i = 0, n - 1 do
    local w = wait_of(i)
    if w > wait then wait = w end
  end
  if mode ~= 'peek' then
    if wait > 0 then
      redis.call('HINCRBY', KEYS[1], 'rejected', 1)
      return {0, wait}
    end
    for i = 0, n - 1 do add(i) end
    redis.call('HINCRBY', KEYS[1], 'allowed', 1)
    if mode == 'take' then return {1, 0} end
    local reply = {1, 0}
    for i = 0, n - 1 do
      if kinds[i] == 'f' then
        reply[#reply + 1] = periods[i]
      elseif kinds[i] == 's' then
        reply[#reply + 1] = 1
      else
        reply[#reply + 1] = tats[i]
      end
    end
    return reply
  end
  local allowed = redis.call('HMGET', KEYS[1], 'allowed', 'rejected')
  local reply = {wait, tonumber(allowed[1]) or 0, tonumber(allowed[2]) or 0,
                 math.max(paused - now, 0)}
  for i = 0, n - 1 do
    local available
    if kinds[i] == 'f' then
      available = math.max(tolerances[i] - counts[i], 0)
    elseif kinds[i] == 's' then
      available = math.max(tolerances[i] - #logs[i], 0)
    else
      available = math.max(now + tolerances[i] - math.max(tats[i], now), 0)
    end
    reply[#reply + 1] = available
  end
  return reply
elseif mode == 'charge' then
  for i = 0, n - 1 do add(i) end
elseif mode == 'refund' then
  for i = 0, n - 1 do remove(i) end
elseif mode == 'give_back' then
  local records = {}
  for record in string.gmatch(ARGV[3], '%d+') do records[#records + 1] = tonumber(record) end
  local cost = amount
  for i = 0, n - 1 do
    local own = records[i + 1] or 0
    if kinds[i] == 'f' then
      amount = (periods[i] == own) and cost or 0
    elseif kinds[i] == 's' then
      amount = cost
    else
      amount = math.min(math.max(own - now, 0), cost * intervals[i])
      tats[i] = math.max(tats[i] - amount, 0)
      amount = 0
      store(i)
    end
    if amount > 0 then remove(i) end
  end
elseif mode == 'sync' then
  if kinds[index] == 'f' then
    counts[index] = amount
  elseif kinds[index] == 's' then
    logs[index] = {}
    amount = math.min(amount, tolerances[index])
    add(index)
  else
    tats[index] = now + amount * intervals[index]
  end
  store(index)
elseif mode == 'pause' then
  if amount == 0 then
    redis.call('HDEL', KEYS[1], 'paused_until')
  elseif now + amount > paused then
    redis.call('HSET', KEYS[1], 'paused_until', string.format('%d', now + amount))
  end
end
return 1
