-- Take the timers that are due, at most ARGV[2] of them, earliest first.
--
-- KEYS[1]  sorted set of one kind of timers (member "<kind>:<call id>[:...]", score due ms)
-- ARGV[1]  now in ms
-- ARGV[2]  most timers to take
--
-- Returns {member1, due1, member2, due2, ...}. Taking and removing happen together, so two
-- workers draining the same set never take the same timer.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
if #due > 0 then
  local members = {}
  for i = 1, #due, 2 do
    members[#members + 1] = due[i]
  end
  redis.call('ZREM', KEYS[1], unpack(members))
end
return due
