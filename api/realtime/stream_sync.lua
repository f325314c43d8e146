-- Renew this API process's count of a key's open streams, and take off it the streams it
-- closed since its last sync.
--
-- KEYS[1]  counts: a hash of API process name -> its open streams of the key
-- KEYS[2]  holders: a sorted set of API process name -> until when (ms) its count holds
-- ARGV[1]  this API process's name
-- ARGV[2]  its open streams of the key now
-- ARGV[3]  its streams of the key closed since the last sync (not in ARGV[2] any more)
-- ARGV[4]  how long a count holds without a renewal, in ms
--
-- A count that is there is lowered by ARGV[3]: streams opened meanwhile were counted by
-- stream_take.lua, in order on the same connection, so the count stays exact. A count that is
-- gone (it lapsed while the process stalled, or Redis lost it) is set to ARGV[2] again. A count
-- of zero is removed with its holder.
--
-- Returns the count left.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])

local closed = tonumber(ARGV[3])
local left
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  -- (HINCRBY refuses the "-0" a negated zero would be sent as.)
  if closed > 0 then
    left = redis.call('HINCRBY', KEYS[1], ARGV[1], -closed)
  else
    left = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
  end
else
  left = tonumber(ARGV[2])
  if left > 0 then
    redis.call('HSET', KEYS[1], ARGV[1], left)
  end
end
if left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return left
