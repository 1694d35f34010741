"""The Lua scripts of the shared budget (`pipeline/redis_budget.py`), each atomic in Redis.

Keys, under a prefix `p` (default `tg:`):

    p<month>:s:<scope>   spend of a scope in the month starting at <month> (epoch ms), picodollars
    p<month>:ready       set once that month's counters were built from the ledger
    pver                 bumped by every change of a budget or of a key's limit or labels
    pr:<scope>           hash: process id -> what that process holds against the scope
    prt:<scope>          what all processes hold against the scope (the sum of the hash)
    pps:<process>        set: the scopes a process holds something against
    pprocs               sorted set: process id -> the time (ms, Redis clock) its holds expire

A process renews its entry every few seconds; one whose entry has expired (killed, or cut off
from Redis for the whole TTL) is reaped by the next script that looks: its holds leave the
totals. Amounts travel as decimal strings and are added by Redis in 64-bit integers; limits are
compared exactly by splitting numbers into 9-digit halves (Lua's numbers are doubles).
"""

_COMMON = """
local B = 1000000000
local function split(s)
  s = s or '0'
  if string.sub(s, 1, 1) == '-' then return 0, 0 end
  local n = string.len(s)
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end
local function sum3(a, b, c)
  local ah, al = split(a)
  local bh, bl = split(b)
  local ch, cl = split(c)
  local lo = al + bl + cl
  return ah + bh + ch + math.floor(lo / B), lo % B
end
local function greater(h1, l1, s)
  local h2, l2 = split(s)
  return h1 > h2 or (h1 == h2 and l1 > l2)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function reap(p, d)
  for _, sid in ipairs(redis.call('SMEMBERS', p .. 'ps:' .. d)) do
    local cur = redis.call('HGET', p .. 'r:' .. sid, d)
    if cur then
      redis.call('HDEL', p .. 'r:' .. sid, d)
      if redis.call('DECRBY', p .. 'rt:' .. sid, cur) <= 0 then redis.call('DEL', p .. 'rt:' .. sid) end
    end
  end
  redis.call('DEL', p .. 'ps:' .. d)
  redis.call('ZREM', p .. 'procs', d)
end
local function reap_dead(p, proc, now)
  for _, d in ipairs(redis.call('ZRANGEBYSCORE', p .. 'procs', '-inf', now, 'LIMIT', 0, 16)) do
    if d ~= proc then reap(p, d) end
  end
end
"""

# ARGV: prefix, month, process, amount, ttl_ms, the budgets version the caller decided its scopes
# with, then (scope, limit) pairs (none: only the version is checked). {3, version}: stale.
# -> {0} held everywhere | {1, i, spent, held} the i-th scope (1-based) would pass its limit
#    | {2} this month's counters are not built (Redis lost its state, or a new month)
RESERVE = _COMMON + """
local p, month, proc, amount, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local ver = redis.call('GET', p .. 'ver') or '0'
if ver ~= ARGV[6] then return {3, ver} end
if #ARGV < 7 then return {0} end
if redis.call('EXISTS', p .. month .. ':ready') == 0 then return {2} end
local now = now_ms()
reap_dead(p, proc, now)
redis.call('ZADD', p .. 'procs', now + ttl, proc)
for i = 7, #ARGV, 2 do
  local spent = redis.call('GET', p .. month .. ':s:' .. ARGV[i])
  local held = redis.call('GET', p .. 'rt:' .. ARGV[i])
  local h, l = sum3(spent, held, amount)
  if greater(h, l, ARGV[i + 1]) then return {1, (i - 5) / 2, spent or '0', held or '0'} end
end
for i = 7, #ARGV, 2 do
  redis.call('HINCRBY', p .. 'r:' .. ARGV[i], proc, amount)
  redis.call('INCRBY', p .. 'rt:' .. ARGV[i], amount)
  redis.call('SADD', p .. 'ps:' .. proc, ARGV[i])
end
return {0}
"""

# ARGV: prefix, process, month, amount held, actual cost, n held, the n held scopes, then the
# scopes the cost counts against. A hold already reaped is not released twice.
SETTLE = _COMMON + """
local p, proc, month, amount, actual, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
for i = 7, 6 + n do
  local sid = ARGV[i]
  local cur = redis.call('HGET', p .. 'r:' .. sid, proc)
  if cur then
    local left = redis.call('HINCRBY', p .. 'r:' .. sid, proc, '-' .. amount)
    local removed = amount
    if left <= 0 then
      redis.call('HDEL', p .. 'r:' .. sid, proc)
      redis.call('SREM', p .. 'ps:' .. proc, sid)
      if left < 0 then removed = cur end
    end
    if redis.call('DECRBY', p .. 'rt:' .. sid, removed) <= 0 then redis.call('DEL', p .. 'rt:' .. sid) end
  end
end
if actual ~= '0' then
  for i = 7 + n, #ARGV do redis.call('INCRBY', p .. month .. ':s:' .. ARGV[i], actual) end
end
return 0
"""

# ARGV: prefix, process, ttl_ms. Renews this process's holds; reaps dead processes. -> the number
# of live processes (this one included).
HEARTBEAT = _COMMON + """
local p, proc, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
reap_dead(p, proc, now)
redis.call('ZADD', p .. 'procs', now + ttl, proc)
return redis.call('ZCARD', p .. 'procs')
"""

# ARGV: prefix, process. A process stopping cleanly lets go of whatever it still holds.
RELEASE_ALL = _COMMON + """
reap(ARGV[1], ARGV[2])
return 0
"""

# ARGV: prefix, month, mark ('1': this completes the month's build), then (scope, ledger spend)
# pairs. Each counter becomes the larger of itself and the ledger: never below what the ledger
# holds, never counting a cost twice.
REBUILD = _COMMON + """
local p, month = ARGV[1], ARGV[2]
for i = 4, #ARGV, 2 do
  local key = p .. month .. ':s:' .. ARGV[i]
  local h, l = sum3(ARGV[i + 1], '0', '0')
  if greater(h, l, redis.call('GET', key)) then redis.call('SET', key, ARGV[i + 1]) end
end
if ARGV[3] == '1' then redis.call('SET', p .. month .. ':ready', '1') end
return 0
"""
