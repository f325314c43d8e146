-- Write a call's live view unless Redis already holds a newer one.
--
-- KEYS[1]  the call's live hash
-- ARGV[1]  seq of the state being written
-- ARGV[2]  time to live in ms (0: keep while the call is active)
-- ARGV[3..] field, value pairs (the call's view is one JSON field, "call")
--
-- Writers race (a timer's worker, an event, the scheduler's repair); the seq guard makes the
-- hash only ever move forward. Returns 1 when written, 0 when a newer state was there.

local current = redis.call('HGET', KEYS[1], 'seq')
if current and tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
