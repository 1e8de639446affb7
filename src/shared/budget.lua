-- Budgets held by the whole fleet. Per budget and window, three keys:
--   H  hash: tokens_spent, tokens_reserved, usd_spent, usd_reserved
--      (integers; USD in millionths)
--   Z  sorted set: the calls holding a reservation, scored by when their
--      hold expires (ms on Redis's clock)
--   A  hash: what each of those calls holds, "tokens:usd"
-- A call is checked against every budget it falls under and reserved on
-- all of them, or on none, in one round trip. A hold that outlives its
-- call's bounds (a pod killed, a settle or an undo that never arrived) is
-- released when it expires, the next time the window is touched.
--
-- The windows are Redis's: a "reserve" or "read" names each budget's
-- window as the pod reckons it (from Redis's clock as last seen), and is
-- turned back, changing nothing, when Redis's clock now falls outside any
-- of them; the pod then asks again for the windows holding Redis's now.
-- A pod's own clock never decides which window a call counts in.
--
-- KEYS     H, Z, A for each budget
-- ARGV[1]  "reserve", "settle", "read" or "add"
-- ARGV[2]  when the keys expire (unix seconds)
-- ARGV[3]  the call's reservation id ("" for "read")
-- then, for "reserve": how long the hold lives (ms), the call's tokens
--   and micro-USD, then per budget its window's start and end (unix
--   seconds), its tokens limit and its micro-USD limit (-1: none);
--   for "read": per budget its window's start and end;
--   for "settle": the tokens and micro-USD the call spent (0 and 0 to
--   undo a reservation whose answer was lost); a call's settle counts
--   once, however often it is sent
--   for "add": the tokens and micro-USD a pod spent while it counted
--   alone (the store away), added to the one budget once per id
--
-- Every answer starts with Redis's clock (unix ms), then:
--   "reserve": 0, then tokens used and micro-USD used per budget after
--     the reservation; or, refused, the index of the budget (1-based),
--     1 for tokens or 2 for USD, what was used before; or -1: a window
--     does not hold Redis's now
--   "read": 0, then tokens spent, reserved, micro-USD spent, reserved per
--     budget; or -1 as for "reserve"
--   "settle", "add": 0

local op = ARGV[1]
local expire_at = tonumber(ARGV[2])
local id = ARGV[3]
local budgets = #KEYS / 3

local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function decrease(h, field, amount)
  -- `0 - x`, not `-x`: Lua writes -0 as "-0", which HINCRBY refuses.
  if redis.call('HINCRBY', h, field, 0 - amount) < 0 then
    redis.call('HSET', h, field, 0)
  end
end

local function release(h, a, holder)
  local held = redis.call('HGET', a, holder)
  if held then
    local sep = string.find(held, ':', 1, true)
    decrease(h, 'tokens_reserved', tonumber(string.sub(held, 1, sep - 1)))
    decrease(h, 'usd_reserved', tonumber(string.sub(held, sep + 1)))
    redis.call('HDEL', a, holder)
  end
end

local function purge(h, z, a)
  for _, holder in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now_ms)) do
    release(h, a, holder)
    redis.call('ZREM', z, holder)
  end
end

local function used(h)
  local fields = redis.call('HMGET', h, 'tokens_spent', 'tokens_reserved', 'usd_spent', 'usd_reserved')
  local numbers = {}
  for i = 1, 4 do
    numbers[i] = tonumber(fields[i]) or 0
  end
  return numbers
end

local function keep(i)
  for k = 3 * i - 2, 3 * i do
    redis.call('EXPIREAT', KEYS[k], expire_at)
  end
end

-- Whether every budget's window, at ARGV[first + stride * (i - 1)] (start)
-- and the next (end), holds Redis's now.
local function windows_hold_now(first, stride)
  for i = 1, budgets do
    local at = first + stride * (i - 1)
    if now_ms < tonumber(ARGV[at]) * 1000 or now_ms >= tonumber(ARGV[at + 1]) * 1000 then
      return false
    end
  end
  return true
end

if op == 'read' then
  if not windows_hold_now(4, 2) then
    return {now_ms, -1}
  end
  local out = {now_ms, 0}
  for i = 1, budgets do
    purge(KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i])
    for _, number in ipairs(used(KEYS[3 * i - 2])) do
      out[#out + 1] = number
    end
  end
  return out
end

if op == 'reserve' then
  if not windows_hold_now(7, 4) then
    return {now_ms, -1}
  end
  local hold_ms = tonumber(ARGV[4])
  local tokens = tonumber(ARGV[5])
  local usd = tonumber(ARGV[6])
  for i = 1, budgets do
    local h = KEYS[3 * i - 2]
    purge(h, KEYS[3 * i - 1], KEYS[3 * i])
    local tokens_limit = tonumber(ARGV[9 + 4 * (i - 1)])
    local usd_limit = tonumber(ARGV[10 + 4 * (i - 1)])
    local now = used(h)
    local tokens_used, usd_used = now[1] + now[2], now[3] + now[4]
    if tokens_limit >= 0 and tokens_used + tokens > tokens_limit then
      return {now_ms, i, 1, tokens_used}
    end
    if usd_limit >= 0 and usd_used + usd > usd_limit then
      return {now_ms, i, 2, usd_used}
    end
  end
  local out = {now_ms, 0}
  for i = 1, budgets do
    local h, z, a = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    redis.call('HINCRBY', h, 'tokens_reserved', tokens)
    redis.call('HINCRBY', h, 'usd_reserved', usd)
    redis.call('ZADD', z, now_ms + hold_ms, id)
    redis.call('HSET', a, id, tokens .. ':' .. usd)
    keep(i)
    local now = used(h)
    out[#out + 1] = now[1] + now[2]
    out[#out + 1] = now[3] + now[4]
  end
  return out
end

if op == 'add' then
  local h, a = KEYS[1], KEYS[3]
  if redis.call('HSETNX', a, 'alone:' .. id, 1) == 1 then
    redis.call('HINCRBY', h, 'tokens_spent', tonumber(ARGV[4]))
    redis.call('HINCRBY', h, 'usd_spent', tonumber(ARGV[5]))
    keep(1)
  end
  return {now_ms, 0}
end

-- settle: the hold released and the spend added, once: a settle sent
-- again (its answer lost) finds no hold and changes nothing. (A call that
-- outlived its hold is not counted here.)
local tokens = tonumber(ARGV[4])
local usd = tonumber(ARGV[5])
for i = 1, budgets do
  local h, z, a = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  if redis.call('ZREM', z, id) == 1 then
    release(h, a, id)
    redis.call('HINCRBY', h, 'tokens_spent', tokens)
    redis.call('HINCRBY', h, 'usd_spent', usd)
    keep(i)
  end
end
return {now_ms, 0}
