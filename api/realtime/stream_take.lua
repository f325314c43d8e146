-- Open one more stream of an API key, unless the key's streams on every API process together
-- reach the cap. Each process keeps its own count, renewed while it lives (stream_sync.lua):
-- the count of a process that stopped renewing it (it died) is dropped here first.
--
-- KEYS[1]  counts: a hash of API process name -> its open streams of the key
-- KEYS[2]  holders: a sorted set of API process name -> until when (ms) its count holds
-- ARGV[1]  this API process's name
-- ARGV[2]  the cap (MAX_STREAMS_PER_KEY)
-- ARGV[3]  how long a count holds without a renewal, in ms
--
-- Time is Redis's own clock, so API processes on different hosts share one timeline.
--
-- Returns {1, open} when the stream is counted (open: the key's streams now, this one
-- included), {0, open} when the key is at its cap (nothing changed but lapsed counts dropped).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])

local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #lapsed > 0 then
  redis.call('HDEL', KEYS[1], unpack(lapsed))
  redis.call('ZREM', KEYS[2], unpack(lapsed))
end

local open = 0
for _, count in ipairs(redis.call('HVALS', KEYS[1])) do
  open = open + tonumber(count)
end
if open >= tonumber(ARGV[2]) then
  return {0, open}
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {1, open + 1}
