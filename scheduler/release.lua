-- Give up the scheduler's leader lock, only if this scheduler holds it.
--
-- KEYS[1]  the lock
-- ARGV[1]  this scheduler's token

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
