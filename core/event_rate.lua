-- Count one posted event against its key's per-second allowance, or refuse it uncounted.
--
-- KEYS[1]  counter of the key's events in the current second (the second is in the key name)
-- ARGV[1]  events allowed per second
-- ARGV[2]  counter lifetime in ms (a little over a second)
--
-- Returns {allowed (1/0), events counted this second, ms until the counter goes}.

local counted = tonumber(redis.call('GET', KEYS[1]) or '0')
if counted >= tonumber(ARGV[1]) then
  return {0, counted, redis.call('PTTL', KEYS[1])}
end
counted = redis.call('INCR', KEYS[1])
if counted == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, counted, redis.call('PTTL', KEYS[1])}
