-- ultra-signals ranked budget: the quality threshold's history, shared by the runners of a namespace.
--
-- The same rule as engine/budget.py (OnlineThreshold, budget_rank, quantile_rank) in one atomic step: the
-- threshold at ts from the points already held (every point with event time in (ts - window, ts]), then the
-- new point is added.  One set of keys per namespace, profile and timeframe, under the counters' hash tag.
--
-- KEYS[1]  sorted set: member = decision key, score = event time (ms); kept `keep_ms` behind the latest point
-- KEYS[2]  sorted set: member = decision key, score = quality; exactly the window (qtop - window, qtop]
-- KEYS[3]  hash: decision key -> quality as written by the caller (its shortest round-trip repr)
-- KEYS[4]  hash: decision key -> the threshold answered when it was first observed ("" = none)
-- KEYS[5]  hash: first (earliest point ever), latest (latest point), qtop (latest time KEYS[2] is cut at),
--          seq (points added so far)
-- KEYS[6]  sorted set: member = decision key, score = seq (lets a runner's fallback mirror pull what is new)
-- ARGV     mode ("observe" | "record" | "peek"), key, ts, quality, window_ms, target_per_day, min_history,
--          keep_ms, ttl_ms, late_limit (most points of lag a late call corrects for exactly)
-- Reply    { "new" | "dup" | "old" (older than anything kept: not held), threshold as a string or "" for none }
--
-- "observe": threshold, then add.  A key already held answers the threshold it got first (two runners deciding
-- the same bar measure it against the same number); a key seeded from a journal is measured as it stands.
-- "record": add without computing (a journal seed, a reconcile after an outage).  "peek": compute, add nothing.

-- fail, expect_type, num and fmt come from prelude.lua (counters/lua.py loads it in front of this file).

local tkey, qkey, vkey, thkey, meta, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local mode, key = ARGV[1], ARGV[2]
local ts = num(ARGV[3], 'ts')
local quality = ARGV[4]
local window = num(ARGV[5], 'window_ms')
local target = num(ARGV[6], 'target_per_day')
local min_history = num(ARGV[7], 'min_history')
local keep = num(ARGV[8], 'keep_ms')
local ttl = num(ARGV[9], 'ttl_ms')
local late_limit = num(ARGV[10] or '2000', 'late_limit')
if mode ~= 'observe' and mode ~= 'record' and mode ~= 'peek' then
  return redis.error_reply('unknown mode ' .. tostring(mode))
end
if mode ~= 'peek' then
  num(quality, 'quality')
end

expect_type(tkey, 'zset')
expect_type(qkey, 'zset')
expect_type(vkey, 'hash')
expect_type(thkey, 'hash')
expect_type(meta, 'hash')
expect_type(log, 'zset')
local m = redis.call('HMGET', meta, 'first', 'latest', 'qtop', 'seq')
local first, latest, qtop, seq = nil, nil, nil, 0
if m[1] then first = num(m[1], meta .. ' field first') end
if m[2] then latest = num(m[2], meta .. ' field latest') end
if m[3] then qtop = num(m[3], meta .. ' field qtop') end
if m[4] then seq = num(m[4], meta .. ' field seq') end

-- Move the window set's cut forward to `top`: drop the points that left (top - window, top].
local function advance(top)
  if qtop ~= nil and top <= qtop then
    return
  end
  local lo = '-inf'
  if qtop ~= nil then lo = '(' .. fmt(qtop - window) end
  local gone = redis.call('ZRANGEBYSCORE', tkey, lo, fmt(top - window))
  for i = 1, #gone, 500 do
    redis.call('ZREM', qkey, unpack(gone, i, math.min(i + 499, #gone)))
  end
  qtop = top
  redis.call('HSET', meta, 'qtop', fmt(qtop))
end

-- The rank of the threshold among n window points, or nil (engine/budget.py budget_rank, same doubles).
local function rank(n)
  if first == nil or n < min_history then
    return nil
  end
  local span = math.max(math.min(window, ts - first), 3600000)
  local rate = n / (span / 86400000)
  if rate <= target then
    return nil
  end
  local q = 1.0 - target / rate
  local index = n * q - 1
  local prev = math.floor(index)
  local k = prev
  if index - prev ~= 0 then k = prev + 1 end
  if k < 0 then k = 0 end
  if k > n - 1 then k = n - 1 end
  return k
end

-- Sorted numbers, and how many of them are <= x (binary search).
local function sorted_values(members)
  local out = {}
  for i = 1, #members, 500 do
    local part = redis.call('HMGET', vkey, unpack(members, i, math.min(i + 499, #members)))
    for j = 1, #part do
      out[#out + 1] = num(part[j], vkey .. ' value')
    end
  end
  table.sort(out)
  return out
end

local function count_le(arr, x)
  local lo, hi = 1, #arr
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    if arr[mid] <= x then lo = mid + 1 else hi = mid - 1 end
  end
  return lo - 1
end

-- Late (a runner behind the others, ts < qtop): the window (ts - window, ts] is the window set minus A (its
-- points after ts) plus B (points before the set's cut, still in ts's window).  Both are as small as the lag,
-- so the k-th value is found by rank queries on the set, corrected by A and B, never by sorting the window.
-- More than `late_limit` points of lag: the window set as it stands (qtop's window) is used instead.
local function late_threshold()
  local a_lo = math.max(ts, qtop - window)
  local b_hi = math.min(ts, qtop - window)
  local amem = redis.call('ZRANGEBYSCORE', tkey, '(' .. fmt(a_lo), fmt(qtop), 'LIMIT', 0, late_limit + 1)
  local bmem = {}
  if b_hi > ts - window then
    bmem = redis.call('ZRANGEBYSCORE', tkey, '(' .. fmt(ts - window), fmt(b_hi), 'LIMIT', 0, late_limit + 1)
  end
  local zc = redis.call('ZCARD', qkey)
  if #amem + #bmem > late_limit then
    local k = rank(zc)
    if k == nil then return '' end
    return redis.call('ZRANGE', qkey, k, k, 'WITHSCORES')[2]
  end
  local k = rank(zc - #amem + #bmem)
  if k == nil then return '' end
  local av, bv = sorted_values(amem), sorted_values(bmem)
  local in_a = {}
  for _, m in ipairs(amem) do in_a[m] = true end
  local function count(x)
    return redis.call('ZCOUNT', qkey, '-inf', string.format('%.17g', x)) - count_le(av, x) + count_le(bv, x)
  end
  local best = nil
  for _, x in ipairs(bv) do
    if (best == nil or x < best) and count(x) >= k + 1 then best = x end
  end
  -- The first position in the window set whose value has k+1 points at or below it, then past A's members.
  local lo, hi, found = 0, zc - 1, nil
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local x = tonumber(redis.call('ZRANGE', qkey, mid, mid, 'WITHSCORES')[2])
    if count(x) >= k + 1 then
      found = mid
      hi = mid - 1
    else
      lo = mid + 1
    end
  end
  while found ~= nil and found < zc do
    local e = redis.call('ZRANGE', qkey, found, found, 'WITHSCORES')
    if not in_a[e[1]] then
      local x = tonumber(e[2])
      if best == nil or x < best then best = x end
      break
    end
    found = found + 1
  end
  if best == nil then return '' end
  return string.format('%.17g', best)
end

local function threshold()
  if first == nil then
    return ''
  end
  if qtop == nil or ts >= qtop then
    -- In order (the usual case): the window set is exactly (ts - window, ts] once cut at ts.
    advance(ts)
    local k = rank(redis.call('ZCARD', qkey))
    if k == nil then return '' end
    return redis.call('ZRANGE', qkey, k, k, 'WITHSCORES')[2]
  end
  return late_threshold()
end

local function add()
  if latest ~= nil and ts < latest - keep then
    -- Older than anything kept: it only sets the span (as OnlineThreshold does); its key is not held.
    if first == nil or ts < first then
      first = ts
      redis.call('HSET', meta, 'first', fmt(first))
    end
    return false
  end
  redis.call('ZADD', tkey, fmt(ts), key)
  redis.call('HSET', vkey, key, quality)
  seq = seq + 1
  redis.call('ZADD', log, seq, key)
  redis.call('HSET', meta, 'seq', fmt(seq))
  if first == nil or ts < first then
    first = ts
    redis.call('HSET', meta, 'first', fmt(first))
  end
  if qtop == nil or ts > qtop - window then
    redis.call('ZADD', qkey, quality, key)
  end
  if qtop == nil or ts > qtop then
    advance(ts)
  end
  if latest == nil or ts > latest then
    latest = ts
    redis.call('HSET', meta, 'latest', fmt(latest))
    -- Keep `keep` ms behind the latest point, as OnlineThreshold does (two windows: room for late runners).
    local old = redis.call('ZRANGEBYSCORE', tkey, '-inf', '(' .. fmt(latest - keep))
    for i = 1, #old, 500 do
      local part = { unpack(old, i, math.min(i + 499, #old)) }
      redis.call('HDEL', vkey, unpack(part))
      redis.call('HDEL', thkey, unpack(part))
      redis.call('ZREM', log, unpack(part))
      redis.call('ZREM', qkey, unpack(part))
    end
    redis.call('ZREMRANGEBYSCORE', tkey, '-inf', '(' .. fmt(latest - keep))
  end
  return true
end

local function expire()
  for _, k in ipairs({ tkey, qkey, vkey, thkey, meta, log }) do
    redis.call('PEXPIRE', k, ttl)
  end
end

local held = redis.call('HEXISTS', vkey, key) == 1
if held then
  if mode == 'record' then
    return { 'dup', '' }
  end
  local answered = redis.call('HGET', thkey, key)
  if answered and mode == 'observe' then
    return { 'dup', answered }
  end
  return { 'dup', threshold() }
end
if mode == 'record' then
  local added = add()
  expire()
  if added then return { 'new', '' } end
  return { 'old', '' }
end
local used = threshold()
if mode == 'observe' and add() then
  redis.call('HSET', thkey, key, used)
end
expire()
return { 'new', used }
