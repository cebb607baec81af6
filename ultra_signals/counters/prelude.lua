-- ultra-signals Lua prelude: the helpers budget.lua and reserve.lua share.
--
-- Redis scripts cannot import one another, so the Python side (counters/lua.py) puts this file in front of each
-- script when it loads it: the script Redis runs (and whose SHA1 EVALSHA names) is prelude .. script.

local function fail(msg)
  error({ err = 'ULTRA_SIGNALS_FOREIGN ' .. msg })
end

local function expect_type(key, want)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= want then
    fail(key .. ' holds a ' .. t .. ', expected a ' .. want .. ' (a foreign value under our keys)')
  end
end

local function num(s, what)
  local n = tonumber(s)
  if n == nil then
    fail(what .. ' is not a number: ' .. tostring(s))
  end
  return n
end

local function fmt(x)
  return string.format('%.0f', x)
end
