"""The Lua scripts of the shared budget (`pipeline/redis_budget.py`), each atomic in Redis.

Keys, under a prefix `p` (default `tg:`):

    p<slot>:s:<scope>    spend of a scope in one slot of its window (`core/windows.py`), picodollars:
                         a month's slot is its start (epoch ms), as before windows; 'd<start>' a day,
                         'w<start>' a week, 'r<slot ms>:<start>' a rolling window's slot
    p<slot>:ready        set once the counters of the window whose running slot is <slot> were
                         built from the ledger (for a rolling window: all its slots)
    pver                 bumped by every change of a budget or of a key's limit or labels
    pr:<scope>           hash: process id -> what that process holds against the scope
    prt:<scope>          what all processes hold against the scope (the sum of the hash)
    pps:<process>        set: the scopes a process holds something against
    pprocs               sorted set: process id -> the time (ms, Redis clock) its holds expire
    pu:<request>         the counters a reserved request's cost will count in, and '@<process>'
                         (the process that holds it), until its settle (7 days at most): a request
                         killed with its process between its ledger record and its settle is
                         settled from the record (`SETTLE_REPLAYED`), exactly once: when its
                         journal is replayed, or, if the record reached the database before the
                         kill, by a live process once the dead one is reaped
    pdead                set: processes reaped as dead whose notes are still to be looked at
    pd:<request>         a request settled in the last minute (a settle sent again is ignored)
    pmoved:<scope>       the last change of a budget's scope (its id and new scope): the first process to
                         see a change sets the scope's counters to the ledger's spend (`REBUILD` given it)

A process renews its entry every few seconds; one whose entry has expired (killed, or cut off
from Redis for the whole TTL) is reaped by the next script that looks: its holds leave the
totals. Counters and marks of days, weeks and rolling slots expire once no window can count
them (35 days; 48 slots); a month's stay. Amounts travel as decimal strings and are added by
Redis in 64-bit integers; limits are compared exactly by splitting numbers into 9-digit halves
(Lua's numbers are doubles).
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
local function add(h, l, s)
  local sh, sl = split(s)
  l = l + sl
  return h + sh + math.floor(l / B), l % B
end
local function text(h, l)
  if h > 0 then return string.format('%d%09d', h, l) end
  return string.format('%d', l)
end
local function expiry(name)
  local c = string.sub(name, 1, 1)
  if c == 'd' or c == 'w' then return 3024000000 end
  if c == 'r' then return tonumber(string.match(name, '^r(%d+):')) * 48 end
  return nil
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
    if d ~= proc then
      reap(p, d)
      redis.call('SADD', p .. 'dead', d)
    end
  end
end
"""

# ARGV: prefix, the request id and its counters separated by spaces ('' for none: nothing is
# noted), process, amount, ttl_ms, the budgets version the caller decided its
# scopes with, then (scope, limit, slots) triples, `slots` the window's slot names separated by
# spaces, the running one first (none: only the version is checked). {3, version}: stale.
# -> {0} held everywhere | {1, i, spent, held} the i-th scope (1-based) would pass its limit
#    | {2, i} the i-th scope's window has no counters built (Redis lost its state, or a new window)
RESERVE = _COMMON + """
local p, proc, amount, ttl = ARGV[1], ARGV[3], ARGV[4], tonumber(ARGV[5])
local ver = redis.call('GET', p .. 'ver') or '0'
if ver ~= ARGV[6] then return {3, ver} end
local function unsettled()
  local id, names = string.match(ARGV[2], '^(%S+) (.+)$')
  if id then redis.call('SET', p .. 'u:' .. id, names, 'PX', 604800000) end
  return {0}
end
if #ARGV < 7 then return unsettled() end
for i = 7, #ARGV, 3 do
  if redis.call('EXISTS', p .. string.match(ARGV[i + 2], '^%S+') .. ':ready') == 0 then return {2, (i - 4) / 3} end
end
local now = now_ms()
reap_dead(p, proc, now)
redis.call('ZADD', p .. 'procs', now + ttl, proc)
for i = 7, #ARGV, 3 do
  local h, l = 0, 0
  for slot in string.gmatch(ARGV[i + 2], '%S+') do
    h, l = add(h, l, redis.call('GET', p .. slot .. ':s:' .. ARGV[i]))
  end
  local held = redis.call('GET', p .. 'rt:' .. ARGV[i])
  local spent = text(h, l)
  h, l = sum3(spent, held, amount)
  if greater(h, l, ARGV[i + 1]) then return {1, (i - 4) / 3, spent, held or '0'} end
end
for i = 7, #ARGV, 3 do
  redis.call('HINCRBY', p .. 'r:' .. ARGV[i], proc, amount)
  redis.call('INCRBY', p .. 'rt:' .. ARGV[i], amount)
  redis.call('SADD', p .. 'ps:' .. proc, ARGV[i])
end
return unsettled()
"""

# ARGV: prefix, process, the request id ('' for none), amount held, actual cost, n held, the n
# held scopes, then the counters ('<slot>:s:<scope>') the cost counts in. A hold already reaped is
# not released twice. A request settled already (a copy that timed out but ran, sent again) is
# not settled twice: its settle leaves `pd:<request>` for a minute. (A request neither noted nor
# settled is one Redis lost the state of: settled as before.)
SETTLE = _COMMON + """
local p, proc, amount, actual, n = ARGV[1], ARGV[2], ARGV[4], ARGV[5], tonumber(ARGV[6])
if ARGV[3] ~= '' then
  if redis.call('DEL', p .. 'u:' .. ARGV[3]) == 0 and redis.call('EXISTS', p .. 'd:' .. ARGV[3]) == 1 then
    return 0
  end
  redis.call('SET', p .. 'd:' .. ARGV[3], '1', 'PX', 60000)
end
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
  for i = 7 + n, #ARGV do
    local ms = expiry(ARGV[i])
    if redis.call('INCRBY', p .. ARGV[i], actual) == tonumber(actual) and ms then
      redis.call('PEXPIRE', p .. ARGV[i], ms)
    end
  end
end
return 0
"""

# ARGV: prefix, then (request id, cost) pairs: records a journal replay wrote, or records of a
# dead process's requests found in the ledger. Each request still unsettled (its process was
# killed before its settle) has its cost counted now, once; a settle that still comes (from a
# process only cut off from Redis past its TTL) is then a copy, ignored for an hour.
SETTLE_REPLAYED = _COMMON + """
local p, settled = ARGV[1], 0
for i = 2, #ARGV, 2 do
  local names = redis.call('GET', p .. 'u:' .. ARGV[i])
  if names then
    redis.call('DEL', p .. 'u:' .. ARGV[i])
    redis.call('SET', p .. 'd:' .. ARGV[i], '1', 'PX', 3600000)
    if ARGV[i + 1] ~= '0' then
      for name in string.gmatch(names, '%S+') do
        if string.sub(name, 1, 1) ~= '@' then
          local ms = expiry(name)
          if redis.call('INCRBY', p .. name, ARGV[i + 1]) == tonumber(ARGV[i + 1]) and ms then
            redis.call('PEXPIRE', p .. name, ms)
          end
        end
      end
    end
    settled = settled + 1
  end
end
return settled
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

# ARGV: prefix, a change of a budget's scope ('<scope id> <new scope>'; '' for none), the running
# slot of the window this completes the build of ('' for none), then (counter '<slot>:s:<scope>',
# ledger spend) pairs. Each counter becomes the larger of itself and the ledger: never below what
# the ledger holds, never counting a cost twice; or, for the first call naming a change, the
# ledger's (the counters held the old scope's spend).
REBUILD = _COMMON + """
local p = ARGV[1]
local exact = false
if ARGV[2] ~= '' then
  local moved = p .. 'moved:' .. string.match(ARGV[2], '^(%S+)')
  exact = redis.call('GET', moved) ~= ARGV[2]
  if exact then redis.call('SET', moved, ARGV[2]) end
end
for i = 4, #ARGV, 2 do
  local key = p .. ARGV[i]
  local h, l = sum3(ARGV[i + 1], '0', '0')
  if exact or greater(h, l, redis.call('GET', key)) then
    local ms = expiry(ARGV[i])
    if ms then redis.call('SET', key, ARGV[i + 1], 'PX', ms) else redis.call('SET', key, ARGV[i + 1]) end
  end
end
if ARGV[3] ~= '' then
  local ms = expiry(ARGV[3])
  local mark = p .. ARGV[3] .. ':ready'
  if ms then redis.call('SET', mark, '1', 'PX', ms) else redis.call('SET', mark, '1') end
end
return 0
"""
