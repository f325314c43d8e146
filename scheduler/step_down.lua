-- Give up the scheduler's lead (the scheduler is stopping), only if this scheduler holds it;
-- the record says it ended now, so the next leader's vacancy counts from this moment.
--
-- KEYS[1]  the leader lock
-- KEYS[2]  the lead's record (lead.lua)
-- ARGV[1]  this scheduler's token

if redis.call('GET', KEYS[1]) == ARGV[1] then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[2], 'until_ms', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  return redis.call('DEL', KEYS[1])
end
return 0
