-- One call's admission against a provider's fleet-wide limits, in one
-- round trip: a GCRA (generic cell rate algorithm) per limit, checked
-- together, on Redis's own clock, granting a small lease besides the
-- call's own cost. It also reads back which of the provider's API keys
-- another sidecar has benched.
--
-- KEYS[1]  requests: theoretical arrival time (TAT), microseconds
-- KEYS[2]  tokens: TAT, microseconds
-- KEYS[3…] one per API key (its fingerprint): present while benched
-- ARGV     requests_per_minute, requests min, requests max,
--          tokens_per_minute,   tokens min,   tokens max
--          (a limit of 0 is no limit; min is what the call needs now)
--
-- A limit L lets one unit through every 60 s / L and holds a burst of L:
-- n units fit while TAT + n * interval <= now + 60 s. Unlike a counter per
-- fixed window, no instant lets twice the limit through.
--
-- Returns {requests granted, tokens granted, wait in µs (0: granted),
--          then the milliseconds each API key stays benched (<= 0: not)}.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = 60000000

local function look(key, limit)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then
    tat = now
  end
  local interval = window / limit
  local fits = math.floor((now + window - tat) / interval + 1e-9)
  return tat, interval, fits
end

local wait = 0
local grants = {0, 0}
local writes = {}
for i = 0, 1 do
  local limit = tonumber(ARGV[i * 3 + 1])
  local min = tonumber(ARGV[i * 3 + 2])
  local max = tonumber(ARGV[i * 3 + 3])
  if limit > 0 and max > 0 then
    local tat, interval, fits = look(KEYS[i + 1], limit)
    if fits < min then
      wait = math.max(wait, tat + min * interval - window - now, 1)
    else
      grants[i + 1] = math.min(fits, max)
      writes[#writes + 1] = {KEYS[i + 1], tat + grants[i + 1] * interval}
    end
  end
end

local reply = {0, 0, 0}
if wait > 0 then
  reply[3] = math.ceil(wait)
else
  for _, write in ipairs(writes) do
    local tat = write[2]
    redis.call('SET', write[1], string.format('%.0f', tat),
      'PX', math.ceil((tat - now) / 1000) + 1000)
  end
  reply[1] = grants[1]
  reply[2] = grants[2]
end
for k = 3, #KEYS do
  reply[#reply + 1] = redis.call('PTTL', KEYS[k])
end
return reply
