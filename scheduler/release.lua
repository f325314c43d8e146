-- Delete a key only if it still holds this scheduler's token (a claim it took with SET NX PX,
-- which may have lapsed and been taken by another meanwhile).
--
-- KEYS[1]  the claim
-- ARGV[1]  this scheduler's token

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
