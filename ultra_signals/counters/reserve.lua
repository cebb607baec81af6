-- ultra-signals sniper caps: check-and-reserve (or record) one reservation in one atomic step.
--
-- The same rule as engine/sniper_counters.py (max_window_count, refusal, MemoryCounters): a new point at ts
-- must not overfill ANY window [a, a+len) that contains ts, not only the trailing one, because reservations
-- arrive out of event-time order.  Every key shares one hash tag, so a call lives in one Cluster slot.
--
-- KEYS[1]  sorted set, the whole deployment: member "<symbol>|<id>", score = event time (ms)
-- KEYS[2]  hash: latest = latest reserved event time, trimmed = points below it were removed
-- KEYS[3]  sorted set, the symbol's own (same members)
-- KEYS[4]  hash: member -> run id that won it (who "took" the bar, for the runners that lose it)
-- ARGV     mode ("reserve" | "record"), member, ts, keep_ms, ttl_ms, horizon_ms,
--          n_global, then (length_ms, cap, reason) per global rule,
--          n_symbol, then (length_ms, cap, reason) per symbol rule,
--          owner (run id, may be empty)
-- Reply    { allowed 1|0, reason or "", duplicate 1|0, trailing count per global rule..., owner of the member }
--
-- The member's id is run-independent (symbol, timeframe, bar), so when several runners decide the same bar
-- exactly one reservation is made; the others get duplicate=1 and the winner's run id.
--
-- "record" writes a reservation already decided elsewhere (the journal, or decisions made on local counts
-- while Redis was away) without checking caps: the signal went out, so the windows must show it.

-- fail, expect_type, num and fmt come from prelude.lua (counters/lua.py loads it in front of this file).

local global, meta, sym, owners = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local mode, member = ARGV[1], ARGV[2]
local ts = num(ARGV[3], 'ts')
local keep = num(ARGV[4], 'keep_ms')
local ttl = num(ARGV[5], 'ttl_ms')
local horizon = num(ARGV[6], 'horizon_ms')

local pos = 7
local function read_rules()
  local n = num(ARGV[pos], 'rule count')
  pos = pos + 1
  local out = {}
  for k = 1, n do
    out[k] = { len = num(ARGV[pos], 'length'), cap = num(ARGV[pos + 1], 'cap'), reason = ARGV[pos + 2] }
    pos = pos + 3
  end
  return out
end
local grules = read_rules()
local srules = read_rules()
local owner = ARGV[pos] or ''

expect_type(global, 'zset')
expect_type(sym, 'zset')
expect_type(meta, 'hash')
expect_type(owners, 'hash')
local m = redis.call('HMGET', meta, 'latest', 'trimmed')
local latest = 0
if m[1] then latest = num(m[1], meta .. ' field latest') end
local trimmed = nil
if m[2] then trimmed = num(m[2], meta .. ' field trimmed') end

local function reply(allowed, reason, duplicate, who)
  local out = { allowed, reason, duplicate }
  for k, r in ipairs(grules) do
    out[3 + k] = redis.call('ZCOUNT', global, '(' .. fmt(ts - r.len), fmt(ts))
  end
  out[#out + 1] = who or ''
  return out
end

-- Most points in any window [a, a+len) containing ts.  Only starts in (ts-len, ts] and ts itself need trying;
-- once `cap` points lie in (ts-len, ts] the window starting at the earliest holds them all, so stop there.
local function max_window(key, len, cap)
  local pts = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(ts - len), fmt(ts), 'WITHSCORES', 'LIMIT', 0, cap)
  if #pts / 2 >= cap then
    return cap
  end
  local best = redis.call('ZCOUNT', key, fmt(ts), '(' .. fmt(ts + len))
  for j = 2, #pts, 2 do
    local a = tonumber(pts[j])
    local c = redis.call('ZCOUNT', key, fmt(a), '(' .. fmt(a + len))
    if c > best then best = c end
  end
  return best
end

local function refusal(key, rules)
  for _, r in ipairs(rules) do
    if max_window(key, r.len, r.cap) + 1 > r.cap then
      return r.reason
    end
  end
  return nil
end

if redis.call('ZSCORE', global, member) then
  local held = redis.call('HGET', owners, member)
  if not held then
    held = ''
    if owner ~= '' and mode == 'record' then
      redis.call('HSET', owners, member, owner)  -- learn the owner of a point written before owners existed
      held = owner
    end
  end
  return reply(1, '', 1, held)
end

if mode == 'reserve' then
  -- Too late to check: points this reservation's windows need may have been trimmed already.
  if trimmed ~= nil and ts - horizon < trimmed then
    return reply(0, grules[#grules].reason, 0)
  end
  local reason = refusal(global, grules)
  if reason == nil and #srules > 0 then
    reason = refusal(sym, srules)
  end
  if reason ~= nil then
    return reply(0, reason, 0)
  end
elseif mode ~= 'record' then
  return redis.error_reply('unknown mode ' .. tostring(mode))
end

redis.call('ZADD', global, fmt(ts), member)
redis.call('ZADD', sym, fmt(ts), member)
if owner ~= '' then
  redis.call('HSET', owners, member, owner)
end
if ts > latest then
  -- Trim as the window slides, exactly when MemoryCounters does: keep `keep` ms behind the latest point.
  latest = ts
  redis.call('HSET', meta, 'latest', fmt(latest))
  local cutoff = latest - keep
  local old = redis.call('ZRANGEBYSCORE', global, '-inf', '(' .. fmt(cutoff))
  for i = 1, #old, 500 do
    redis.call('HDEL', owners, unpack(old, i, math.min(i + 499, #old)))
  end
  if redis.call('ZREMRANGEBYSCORE', global, '-inf', '(' .. fmt(cutoff)) > 0 then
    trimmed = cutoff
    redis.call('HSET', meta, 'trimmed', fmt(trimmed))
  end
end
if trimmed ~= nil then
  -- Points below `trimmed` can never matter again (later reservations that could see them are refused).
  redis.call('ZREMRANGEBYSCORE', sym, '-inf', '(' .. fmt(trimmed))
end
redis.call('PEXPIRE', global, ttl)
redis.call('PEXPIRE', sym, ttl)
redis.call('PEXPIRE', meta, ttl)
redis.call('PEXPIRE', owners, ttl)
return reply(1, '', 0, owner)
