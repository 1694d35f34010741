"""Rate limits in the budget's reservation script: one Lua call checks every rate limit, reserves
the budget (`redis_lua.RESERVE`, unchanged: its text is wrapped as a function), and counts the
request against the rate limits only when both admit it; then, for a routing policy's request,
admits it under its first target's model limits (`pipeline/target_limits.py`). One round trip,
atomic in Redis.

Keys, under the budget's prefix `p`:

    prq:<rule>         sorted set: the request admissions of the last minute (member: request id,
                       score: Redis time in ms)
    prs:<rule>         sorted set: the request admissions of the last second (requests_per_second)
    prk:<rule>         sorted set: the token admissions of the last minute, likewise
    prka:<rule>        hash: request id -> tokens counted (the worst case, then the actual usage)
    prks:<rule>        the sum of that hash
    pr:rlc:<rule>      the requests in flight, held as a budget hold of 1 per request: the
    prt:rlc:<rule>     budget's reaping releases the slots of a process that died

Times are Redis's clock (`TIME`), one clock for every process: the window is exact across them.
"""

from tallygate.pipeline.redis_lua import _COMMON, RESERVE

WINDOW_MS = 60000

_RATE = """
local W, S = 60000, 1000
local function rate_expire(p, id, now)
  local edge = now - W
  redis.call('ZREMRANGEBYSCORE', p .. 'rq:' .. id, '-inf', edge)
  redis.call('ZREMRANGEBYSCORE', p .. 'rs:' .. id, '-inf', now - S)
  local old = redis.call('ZRANGEBYSCORE', p .. 'rk:' .. id, '-inf', edge)
  if #old > 0 then
    local gone = 0
    for _, m in ipairs(old) do
      gone = gone + tonumber(redis.call('HGET', p .. 'rka:' .. id, m) or '0')
      redis.call('HDEL', p .. 'rka:' .. id, m)
    end
    redis.call('DECRBY', p .. 'rks:' .. id, gone)
    redis.call('ZREMRANGEBYSCORE', p .. 'rk:' .. id, '-inf', edge)
  end
end
local function oldest(key, now, w)
  local e = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #e == 0 then return 0 end
  return tonumber(e[2]) + (w or W) - now
end
-- nil when every rule admits; else {4, i, kind (1 requests, 2 tokens, 3 in flight, 4 requests per
-- second), wait ms (-1: never), used}
-- the refusal of rule i (`kind`) when one more request would pass `limit` in the sliding log
-- `key` of `window` ms; nil when it fits
local function log_full(key, limit, window, i, kind, now)
  local n = redis.call('ZCARD', key)
  if n + 1 > limit then
    local e = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
    return {4, i, kind, tonumber(e[2]) + window - now, n}
  end
end

local function rate_check(p, rules, tokens, now)
  for i, r in ipairs(rules) do
    rate_expire(p, r.id, now)
    local full = (r.rps and log_full(p .. 'rs:' .. r.id, r.rps, S, i, 4, now))
      or (r.rpm and log_full(p .. 'rq:' .. r.id, r.rpm, W, i, 1, now))
    if full then return full end
    if r.tpm then
      local sum = tonumber(redis.call('GET', p .. 'rks:' .. r.id) or '0')
      if sum + tokens > r.tpm then
        if tokens > r.tpm then return {4, i, 2, -1, sum} end
        local left, wait = sum, W
        local e = redis.call('ZRANGE', p .. 'rk:' .. r.id, 0, -1, 'WITHSCORES')
        for j = 1, #e, 2 do
          left = left - tonumber(redis.call('HGET', p .. 'rka:' .. r.id, e[j]) or '0')
          if left + tokens <= r.tpm then wait = tonumber(e[j + 1]) + W - now break end
        end
        return {4, i, 2, wait, sum}
      end
    end
    if r.conc then
      local held = tonumber(redis.call('GET', p .. 'rt:rlc:' .. r.id) or '0')
      if held + 1 > r.conc then return {4, i, 3, 1000, held} end
    end
  end
  return nil
end
-- counts the request; per rule: remaining requests, reset ms, remaining tokens, reset ms, remaining
-- requests this second, reset ms (-1: no such limit)
local function rate_commit(p, proc, rules, tokens, uid, now)
  local out = {0}
  for _, r in ipairs(rules) do
    local rr, rs, tr, ts, sr, ss = -1, -1, -1, -1, -1, -1
    if r.rps then
      local key = p .. 'rs:' .. r.id
      redis.call('ZADD', key, now, uid)
      redis.call('PEXPIRE', key, S + 1000)
      sr, ss = r.rps - redis.call('ZCARD', key), oldest(key, now, S)
    end
    if r.rpm then
      local key = p .. 'rq:' .. r.id
      redis.call('ZADD', key, now, uid)
      redis.call('PEXPIRE', key, W + 1000)
      rr, rs = r.rpm - redis.call('ZCARD', key), oldest(key, now)
    end
    if r.tpm then
      local key = p .. 'rk:' .. r.id
      redis.call('ZADD', key, now, uid)
      redis.call('HSET', p .. 'rka:' .. r.id, uid, tokens)
      local sum = redis.call('INCRBY', p .. 'rks:' .. r.id, tokens)
      for _, k in ipairs({key, p .. 'rka:' .. r.id, p .. 'rks:' .. r.id}) do redis.call('PEXPIRE', k, W + 1000) end
      tr, ts = r.tpm - sum, oldest(key, now)
    end
    if r.conc then
      redis.call('HINCRBY', p .. 'r:rlc:' .. r.id, proc, 1)
      redis.call('INCRBY', p .. 'rt:rlc:' .. r.id, 1)
      redis.call('SADD', p .. 'ps:' .. proc, 'rlc:' .. r.id)
    end
    for _, v in ipairs({rr, rs, tr, ts, sr, ss}) do out[#out + 1] = v end
  end
  return out
end
"""

# ARGV: number of the request's rules n, worst-case tokens, request id, number of the first
# target's rules m (a routing policy's first target's model limits), then per rule, the request's
# then the target's (id, requests per minute, tokens per minute, in flight, requests per second;
# '' for none), then RESERVE's own ARGV. -> RESERVE's {1..3, ...} answers unchanged | {4, i, kind,
# wait ms, used}: the request's i-th rule refuses | {0, per request rule: remaining requests, reset
# ms, remaining tokens, reset ms, remaining requests this second, reset ms} admitted under every
# rate limit and budget, followed when m > 0 by the first target's own answer, decided only once
# the request is admitted and never undoing it: {0, per target rule the same six} counted against
# its limits too | {4, i, kind, wait ms, used} its i-th rule refuses (counted against none of them:
# the executor skips that target as if it had answered 429).
RESERVE_RATED = _COMMON + _RATE + "local function budget_reserve(ARGV)\n" + RESERVE[len(_COMMON):] + """
end
local n, tokens, uid, m = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local function rules_from(b, count)
  local out = {}
  for i = 0, count - 1 do
    local at = b + i * 5
    out[i + 1] = {id = ARGV[at], rpm = tonumber(ARGV[at + 1]), tpm = tonumber(ARGV[at + 2]),
                  conc = tonumber(ARGV[at + 3]), rps = tonumber(ARGV[at + 4])}
  end
  return out
end
local rules, first = rules_from(5, n), rules_from(5 + n * 5, m)
local budget_argv = {}
for j = 5 + (n + m) * 5, #ARGV do budget_argv[#budget_argv + 1] = ARGV[j] end
local p, proc = budget_argv[1], budget_argv[3]
local ver = redis.call('GET', p .. 'ver') or '0'
if ver ~= budget_argv[6] then return {3, ver} end
local now = now_ms()
local refused = rate_check(p, rules, tokens, now)
if refused then return refused end
local res = budget_reserve(budget_argv)
if res[1] ~= 0 then return res end
local out = rate_commit(p, proc, rules, tokens, uid, now)
if m > 0 then
  local target = rate_check(p, first, tokens, now) or rate_commit(p, proc, first, tokens, uid, now)
  for _, v in ipairs(target) do out[#out + 1] = v end
end
return out
"""

# ARGV: prefix, process, request id, actual tokens, then per rule (id, has tokens '1'/'0',
# in flight '1'/'0'). Settles the tokens to the actual usage, releases the slot in flight; with
# actual '-' (never served), takes the request out of the windows altogether.
RATE_SETTLE = """
local p, proc, uid, actual = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i = 5, #ARGV, 3 do
  local id = ARGV[i]
  if ARGV[i + 1] == '1' then
    local cur = redis.call('HGET', p .. 'rka:' .. id, uid)
    if cur then
      local now = actual == '-' and 0 or tonumber(actual)
      redis.call('HSET', p .. 'rka:' .. id, uid, now)
      redis.call('INCRBY', p .. 'rks:' .. id, now - tonumber(cur))
      if actual == '-' then
        redis.call('HDEL', p .. 'rka:' .. id, uid)
        redis.call('ZREM', p .. 'rk:' .. id, uid)
      end
    end
  end
  if actual == '-' then
    redis.call('ZREM', p .. 'rq:' .. id, uid)
    redis.call('ZREM', p .. 'rs:' .. id, uid)
  end
  if ARGV[i + 2] == '1' then
    local cur = redis.call('HGET', p .. 'r:rlc:' .. id, proc)
    if cur then
      if tonumber(cur) <= 1 then
        redis.call('HDEL', p .. 'r:rlc:' .. id, proc)
        redis.call('SREM', p .. 'ps:' .. proc, 'rlc:' .. id)
      else
        redis.call('HINCRBY', p .. 'r:rlc:' .. id, proc, -1)
      end
      if redis.call('DECRBY', p .. 'rt:rlc:' .. id, 1) <= 0 then redis.call('DEL', p .. 'rt:rlc:' .. id) end
    end
  end
end
return 0
"""

# ARGV: prefix, then rule ids. -> per rule: requests and tokens in the last minute, requests in
# flight, requests in the last second (what the dashboard shows; expired entries are dropped,
# nothing is counted).
RATE_USAGE = _COMMON + _RATE + """
local p = ARGV[1]
local now = now_ms()
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  rate_expire(p, id, now)
  out[#out + 1] = redis.call('ZCARD', p .. 'rq:' .. id)
  out[#out + 1] = tonumber(redis.call('GET', p .. 'rks:' .. id) or '0')
  out[#out + 1] = tonumber(redis.call('GET', p .. 'rt:rlc:' .. id) or '0')
  out[#out + 1] = redis.call('ZCARD', p .. 'rs:' .. id)
end
return out
"""
