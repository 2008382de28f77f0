-- A token bucket of one or more windows (GCRA, all or nothing) on Redis' clock: the
-- native bucket's algorithm (rust/bucket.rs), for a budget shared by every host.
-- KEYS[1]: the bucket, a hash of tat/interval (window 0), tat1/interval1, ... (the
-- others), allowed, rejected and paused_until (us).
-- ARGV: mode, amount, window index (sync), reserve (tokens a normal call may not use; 0
-- for priority high), now (us; empty: Redis' TIME, the only clock every host agrees on;
-- set only by tests driving a manual clock), then per window: interval (us per token),
-- tolerance (us: interval * burst).
-- Modes: 'take' amount tokens from every window or none ({1, 0} or {0, wait us});
-- 'peek' ({wait us, allowed, rejected, paused us, available us per window...});
-- 'charge' (forced: may go into debt) and 'refund' (never beyond full) amount tokens in
-- every window; 'sync' window index to amount tokens used now; 'pause' for amount us
-- (0 lifts the pause; a shorter pause never shortens a longer one).
local mode = ARGV[1]
local amount = tonumber(ARGV[2])
local index = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local n = (#ARGV - 5) / 2
local function field(name, i)
  if i == 0 then return name end
  return name .. i
end
local tats, intervals, tolerances = {}, {}, {}
for i = 0, n - 1 do
  local interval = tonumber(ARGV[6 + 2 * i])
  local state = redis.call('HMGET', KEYS[1], field('tat', i), field('interval', i))
  local tat = tonumber(state[1]) or 0
  local before = tonumber(state[2])
  if tat > now and before and before ~= interval then
    -- The rate changed: the tokens already spent stay spent, in the new units.
    tat = now + math.floor((tat - now) * interval / before)
  end
  tats[i], intervals[i], tolerances[i] = tat, interval, tonumber(ARGV[7 + 2 * i])
end
local paused = tonumber(redis.call('HGET', KEYS[1], 'paused_until')) or 0
local function store(i, tat)
  -- %d: a plain number would be written with 14 significant digits and lose the us.
  redis.call('HSET', KEYS[1], field('tat', i), string.format('%d', tat),
             field('interval', i), string.format('%d', intervals[i]))
end
if mode == 'take' or mode == 'peek' then
  local wait = 0
  if paused > now then wait = paused - now end
  for i = 0, n - 1 do
    local tat = math.max(tats[i], now)
    local w = tat + amount * intervals[i] - (now + tolerances[i] - reserve * intervals[i])
    if w > wait then wait = w end
  end
  if mode == 'take' then
    if wait > 0 then
      redis.call('HINCRBY', KEYS[1], 'rejected', 1)
      return {0, wait}
    end
    for i = 0, n - 1 do
      store(i, math.max(tats[i], now) + amount * intervals[i])
    end
    redis.call('HINCRBY', KEYS[1], 'allowed', 1)
    return {1, 0}
  end
  local counts = redis.call('HMGET', KEYS[1], 'allowed', 'rejected')
  local reply = {wait, tonumber(counts[1]) or 0, tonumber(counts[2]) or 0,
                 math.max(paused - now, 0)}
  for i = 0, n - 1 do
    reply[#reply + 1] = math.max(now + tolerances[i] - math.max(tats[i], now), 0)
  end
  return reply
elseif mode == 'charge' then
  for i = 0, n - 1 do store(i, math.max(tats[i], now) + amount * intervals[i]) end
elseif mode == 'refund' then
  for i = 0, n - 1 do store(i, math.max(tats[i] - amount * intervals[i], 0)) end
elseif mode == 'sync' then
  store(index, now + amount * intervals[index])
elseif mode == 'pause' then
  if amount == 0 then
    redis.call('HDEL', KEYS[1], 'paused_until')
  elseif now + amount > paused then
    redis.call('HSET', KEYS[1], 'paused_until', string.format('%d', now + amount))
  end
end
return 1
