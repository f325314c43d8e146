-- Decide whether this scheduler starts a drain job now: some timer is due, no drain job waits
-- in the queue, and no other scheduler is starting one (the claim is free, and is taken).
--
-- KEYS[1..n-2]  the sorted sets of timers, one per kind (score: due time in ms)
-- KEYS[n-1]     the RQ queue of drain jobs (a list of job ids)
-- KEYS[n]       the dispatch claim
-- ARGV[1]       now in ms (the due times are the processes' clocks, as this one is)
-- ARGV[2]       this scheduler's token
-- ARGV[3]       the claim's time to live in ms (it is deleted once the job is enqueued; the
--               lifetime only bounds the wait after a scheduler died holding it)
--
-- Returns {start, next_due}: start 1 when this scheduler holds the claim and must enqueue a job
-- (then release the claim), else 0; next_due the earliest due time still ahead, -1 if none.

local now = tonumber(ARGV[1])
local queue, claim = KEYS[#KEYS - 1], KEYS[#KEYS]
local due, next_due = false, -1
for i = 1, #KEYS - 2 do
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[2] then
    local at = tonumber(first[2])
    if at <= now then
      due = true
    elseif next_due < 0 or at < next_due then
      next_due = at
    end
  end
end
if due and redis.call('LLEN', queue) == 0
    and redis.call('SET', claim, ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {1, next_due}
end
return {0, next_due}
