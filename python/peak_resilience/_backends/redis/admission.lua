-- One guarded call's admission in one round trip: the breaker's 'enter' and, when it
-- admits, the budget's 'take', atomically. The two scripts are the breaker's and the
-- bucket's own (breaker.lua, bucket.lua), pasted in below as functions when this one is
-- loaded (breaker_store.py), so that their rules live in one place each.
-- KEYS: the breaker, the bucket (one Redis: never on Cluster, where they are in two slots).
-- ARGV: n, the breaker's n arguments ('enter', ...), then the bucket's ('take', ...).
-- Returns enter's reply when the breaker refuses, else enter's reply and take's, as one
-- string of integers ("7 values" or "7 values 2 values"): a client parses a string in one
-- read where it reads an array element by element (redis-py: ~1 us each in Python);
-- a trial permit whose call is refused its token is given back here, as the two-step
-- path's 'release' does.
local function breaker(KEYS, ARGV)
--BREAKER--
end
local function bucket(KEYS, ARGV)
--BUCKET--
end
local n = tonumber(ARGV[1])
local breaker_arguments = {unpack(ARGV, 2, n + 1)}
local bucket_arguments = {unpack(ARGV, n + 2)}
if breaker_arguments[14] == '' then
  -- Redis' TIME read once for the two (each reads it when not given a time), given as a
  -- number (tonumber of a number costs nothing; of a string, a strtod).
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  breaker_arguments[14], bucket_arguments[5] = now, now
end
local entered = breaker({KEYS[1]}, breaker_arguments)
local function joined(reply) return string.format('%d %d %d %d %d %d %d', unpack(reply)) end
if entered[1] == 0 then return joined(entered) end
local taken = bucket({KEYS[2]}, bucket_arguments)
if taken[1] == 0 and entered[1] % 4 == 2 then
  -- (The successes the admission carried are counted already.)
  for at = #breaker_arguments, 15, -1 do breaker_arguments[at] = nil end
  breaker_arguments[1] = 'exit'
  breaker_arguments[5] = entered[1]
  breaker_arguments[6] = 'release'
  breaker({KEYS[1]}, breaker_arguments)
end
return joined(entered) .. string.format(' %d %d', taken[1], taken[2])
