-- Take one slot (and, for simulated calls, one per-second slot) for a new call, or none.
--
-- KEYS[1]  slots: sorted set of the key's active calls of one kind (member call id, score the
--          time its slot was taken in ms), with the member '*' (score +inf) once it is known to
--          hold them all (core/keys.py)
-- KEYS[2]  rate (optional): sorted set of the key's calls created in the window (member call
--          id, score ms)
-- ARGV[1]  call id
-- ARGV[2]  max active calls
-- ARGV[3]  max calls per window (with KEYS[2])
-- ARGV[4]  window length in ms (1000 for "per second")
--
-- Concurrency is checked before rate, so a key at its concurrency cap is told so even when its
-- rate window is also full. A refused request changes nothing. A call that holds its slot
-- already (the same command sent again after a dropped connection) is granted again, taking
-- nothing more. Time is Redis's own clock, so API processes on different hosts share one
-- timeline.
--
-- Returns {code, limit, remaining, reset_ms}: code 0 granted (limit/remaining describe the
-- rate window), 1 concurrency refused, 2 rate refused, 3 the slot set is not known: restore it
-- from PostgreSQL (restore.lua) and ask again, 4 the call holds its slot already.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_active = tonumber(ARGV[2])
local max_rate = tonumber(ARGV[3])
local window = tonumber(ARGV[4])

if not redis.call('ZSCORE', KEYS[1], '*') then
  return {3, max_active, 0, window}
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {4, max_rate, 0, window}
end

local active = redis.call('ZCARD', KEYS[1]) - 1
if active >= max_active then
  return {1, max_active, 0, window}
end

local recent = 0
if #KEYS > 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  recent = redis.call('ZCARD', KEYS[2])
  if recent >= max_rate then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local reset = tonumber(oldest[2]) + window - now
    if reset < 1 then reset = 1 end
    return {2, max_rate, 0, reset}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], window * 2)
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return {0, max_rate, max_rate - recent - 1, window}
