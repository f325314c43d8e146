-- Make a slot set known from PostgreSQL's list of the key's active calls of its kind.
--
-- KEYS[1]  the slot set (core/keys.py)
-- ARGV     score, member pairs: each active call and the time its slot was taken (ms)
--
-- A set known already is left as it is: another process restored it first, and the limiter
-- and the releases have kept it exact since (adding this older list could bring back the slot
-- of a call that ended meanwhile). Returns 1 when restored, 0 when it was known.

if redis.call('ZSCORE', KEYS[1], '*') then
  return 0
end
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1])
end
redis.call('ZADD', KEYS[1], '+inf', '*')
return 1
