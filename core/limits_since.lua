-- How long this Redis has held the limits: sets LIMITS_SINCE to now when it is missing (a new
-- or flushed Redis), on Redis's own clock so every host reads one timeline.
--
-- KEYS[1]  LIMITS_SINCE (core/keys.py)
--
-- Returns {since ms, now ms}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], now, 'NX')
return {tonumber(redis.call('GET', KEYS[1])), now}
