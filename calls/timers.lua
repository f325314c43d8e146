-- Take the timers that are due, at most ARGV[2] of them, and say when the next one falls due.
--
-- KEYS[1]  sorted set of timers (member "<kind>:<call id>[:<state>]", score due time ms)
-- ARGV[1]  now in ms
-- ARGV[2]  most timers to take
--
-- Returns {member1, due1, member2, due2, ..., next_due or false}. Taking and removing happen
-- together, so two schedulers could never hand out the same timer.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
if #due > 0 then
  local members = {}
  for i = 1, #due, 2 do
    members[#members + 1] = due[i]
  end
  redis.call('ZREM', KEYS[1], unpack(members))
end
local upcoming = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
due[#due + 1] = upcoming[2] or false
return due
