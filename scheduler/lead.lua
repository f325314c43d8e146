-- Keep the scheduler's lead, or take it when it is vacant, and keep the lead's record.
--
-- KEYS[1]  the leader lock: a string holding the leader's token, expiring
-- KEYS[2]  the lead's record: a hash of holder (a process's name), token, since_ms,
--          renewed_ms, until_ms (when its lock lapses or lapsed), changes (how often the lead
--          changed hands), vacant_ms (how long none held it before the holder took it) and
--          previous (who held it before)
-- ARGV[1]  this scheduler's token
-- ARGV[2]  the lock's time to live in ms
-- ARGV[3]  this scheduler's name
--
-- Time is Redis's own clock, so schedulers on different hosts share one timeline.
--
-- Returns {1} when this scheduler kept the lead; {0, holder} when another holds it (its name
-- from the record, '' if none is recorded); {2, previous, vacant_ms, since_renewal_ms} when it
-- took the lead just now: who held it before ('' if no one is recorded), how long none held it
-- (the lock lapsed, or its holder gave it up, that long ago) and how long since the previous
-- holder last renewed it (-1 for either when unknown: Redis lost the record).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, ttl, name = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local holder = redis.call('GET', KEYS[1])
if holder == token then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('HSET', KEYS[2], 'until_ms', now + ttl, 'renewed_ms', now)
  return {1}
end
if holder then
  return {0, redis.call('HGET', KEYS[2], 'holder') or ''}
end

local before = redis.call('HMGET', KEYS[2], 'holder', 'until_ms', 'renewed_ms')
local vacant, since_renewal = -1, -1
if before[2] then
  vacant = math.max(0, now - tonumber(before[2]))
end
if before[3] then
  since_renewal = math.max(0, now - tonumber(before[3]))
end
redis.call('SET', KEYS[1], token, 'PX', ttl)
redis.call('HSET', KEYS[2], 'holder', name, 'token', token, 'since_ms', now, 'renewed_ms', now,
  'until_ms', now + ttl, 'vacant_ms', vacant, 'previous', before[1] or '')
redis.call('HINCRBY', KEYS[2], 'changes', 1)
return {2, before[1] or '', vacant, since_renewal}
