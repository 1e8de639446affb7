-- Budgets held by the whole fleet: one hash per budget and window, with
-- what was spent and what calls in flight hold, in tokens and micro-USD.
-- A call is checked against every budget it falls under and reserved on
-- all of them, or on none, in one round trip.
--
-- KEYS[i]  one budget's window: fields tokens_spent, tokens_reserved,
--          usd_spent, usd_reserved (integers; USD in millionths)
-- ARGV[1]  "reserve", "settle" or "read"
-- ARGV[2]  when the keys expire (unix seconds)
-- then four numbers per key:
--   reserve: tokens limit, micro-USD limit (-1: none), tokens, micro-USD
--   settle:  tokens and micro-USD reserved (released), spent (added)
--
-- Returns for "reserve": {0, then tokens used and micro-USD used per key
-- after the reservation} or, refused, {index of the key (1-based), 1 for
-- tokens or 2 for USD, what was used before}; for "settle" {0}; for
-- "read" {tokens spent, reserved, micro-USD spent, reserved} per key.

local op = ARGV[1]
local expire_at = tonumber(ARGV[2])

local function used(key)
  local fields = redis.call('HMGET', key, 'tokens_spent', 'tokens_reserved', 'usd_spent', 'usd_reserved')
  local numbers = {}
  for i = 1, 4 do
    numbers[i] = tonumber(fields[i]) or 0
  end
  return numbers
end

local function args(i)
  local base = 2 + (i - 1) * 4
  return tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
end

if op == 'read' then
  local out = {}
  for _, key in ipairs(KEYS) do
    for _, number in ipairs(used(key)) do
      out[#out + 1] = number
    end
  end
  return out
end

if op == 'reserve' then
  for i, key in ipairs(KEYS) do
    local tokens_limit, usd_limit, tokens, usd = args(i)
    local now = used(key)
    local tokens_used, usd_used = now[1] + now[2], now[3] + now[4]
    if tokens_limit >= 0 and tokens_used + tokens > tokens_limit then
      return {i, 1, tokens_used}
    end
    if usd_limit >= 0 and usd_used + usd > usd_limit then
      return {i, 2, usd_used}
    end
  end
  local out = {0}
  for i, key in ipairs(KEYS) do
    local _, _, tokens, usd = args(i)
    redis.call('HINCRBY', key, 'tokens_reserved', tokens)
    redis.call('HINCRBY', key, 'usd_reserved', usd)
    redis.call('EXPIREAT', key, expire_at)
    local now = used(key)
    out[#out + 1] = now[1] + now[2]
    out[#out + 1] = now[3] + now[4]
  end
  return out
end

-- settle
for i, key in ipairs(KEYS) do
  local tokens_held, usd_held, tokens, usd = args(i)
  -- `0 - x`, not `-x`: Lua writes -0 as "-0", which HINCRBY refuses.
  if redis.call('HINCRBY', key, 'tokens_reserved', 0 - tokens_held) < 0 then
    redis.call('HSET', key, 'tokens_reserved', 0)
  end
  if redis.call('HINCRBY', key, 'usd_reserved', 0 - usd_held) < 0 then
    redis.call('HSET', key, 'usd_reserved', 0)
  end
  redis.call('HINCRBY', key, 'tokens_spent', tokens)
  redis.call('HINCRBY', key, 'usd_spent', usd)
  redis.call('EXPIREAT', key, expire_at)
end
return {0}
