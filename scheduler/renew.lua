-- Extend the scheduler's leader lock, only if this scheduler still holds it.
--
-- KEYS[1]  the lock
-- ARGV[1]  this scheduler's token
-- ARGV[2]  new time to live in ms
--
-- Returns 1 when extended, 0 when another scheduler holds the lock (or nobody does).

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
