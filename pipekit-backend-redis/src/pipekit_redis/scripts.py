"""The Lua scripts: every state change pipekit makes in Redis is one script,
so it is atomic, and each is written so that running it twice (a retry after
a reply was lost) has the effect of running it once.

Fencing: ``<prefix>fence:<lock key>`` holds the highest fencing token of a
lock. ``ACQUIRE`` increments it (seeding a missing counter from the server
clock in microseconds, so tokens keep growing even when Redis lost its data
or evicted the counter); a write that carries a token lower than it is
refused, and a higher one raises it.
"""

from __future__ import annotations

__all__ = ["SCRIPTS"]

# KEYS: lock, fence. ARGV: owner value, ttl ms.
# -> {1, token} when taken, {0, holder value} when another holds it.
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, redis.call('GET', KEYS[2])}
end
if cur then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], t[1] .. string.sub('000000' .. t[2], -6))
end
return {1, redis.call('INCR', KEYS[2])}
"""

# KEYS: lock. ARGV: owner value. -> 1 released, 0 not ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: lock. ARGV: owner value, ttl ms. -> 1 renewed, 0 not ours any more.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Idempotency records are hashes {record = JSON, owner = claim id, exp =
# expiry in ms since the epoch ('' for none)}. A record is live until exp
# (by the caller's clock, passed as now); Redis drops the key a grace period
# later (PEXPIREAT), so that sweep can still count what expired.
# An expired record is replaced by create and refused by replace.

# KEYS: record. ARGV: json, owner, exp ms, pxat ms ('' for none), now ms.
# -> nil when stored (or already stored by this very call), else the live record's JSON.
CREATE = """
local cur = redis.call('HGET', KEYS[1], 'record')
if cur then
  if cur == ARGV[1] then return false end
  local e = redis.call('HGET', KEYS[1], 'exp')
  if not (e and e ~= '' and tonumber(e) <= tonumber(ARGV[5])) then return cur end
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'owner', ARGV[2], 'exp', ARGV[3])
if ARGV[4] ~= '' then redis.call('PEXPIREAT', KEYS[1], ARGV[4]) end
return false
"""

# KEYS: record. ARGV: json, owner, exp ms, pxat ms, now ms, expect-owner flag
# ('1'/'0'), expected owner.
# -> 1 replaced (or already holds exactly this), 0 no live record or another owner.
REPLACE = """
local cur = redis.call('HGET', KEYS[1], 'record')
if not cur then return 0 end
if cur == ARGV[1] then return 1 end
local e = redis.call('HGET', KEYS[1], 'exp')
if e and e ~= '' and tonumber(e) <= tonumber(ARGV[5]) then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if ARGV[6] == '1' then
  if owner ~= ARGV[7] then return 0 end
elseif owner ~= '' then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'owner', ARGV[2], 'exp', ARGV[3])
if ARGV[4] ~= '' then redis.call('PEXPIREAT', KEYS[1], ARGV[4]) end
return 1
"""

# KEYS: n records, then n fence keys (a record without a token repeats its own key).
# ARGV: n, then per record: json, owner, exp ms, pxat ms ('' none), token ('' none).
# Refused records (stale token) are checked before anything is written.
# -> the 1-based indexes of the refused records.
PUT_MANY = """
local n = tonumber(ARGV[1])
local refused = {}
local stale = {}
local high = {}
for i = 1, n do
  local token = ARGV[1 + (i - 1) * 5 + 5]
  if token ~= '' then
    local fk = KEYS[n + i]
    local cur = high[fk]
    if cur == nil then cur = tonumber(redis.call('GET', fk) or '0') end
    local t = tonumber(token)
    if t < cur then
      stale[i] = true
      refused[#refused + 1] = i
    else
      high[fk] = t
    end
  end
end
for i = 1, n do
  if not stale[i] then
    local b = 1 + (i - 1) * 5
    redis.call('DEL', KEYS[i])
    redis.call('HSET', KEYS[i], 'record', ARGV[b + 1], 'owner', ARGV[b + 2], 'exp', ARGV[b + 3])
    if ARGV[b + 4] ~= '' then redis.call('PEXPIREAT', KEYS[i], ARGV[b + 4]) end
  end
end
for fk, t in pairs(high) do
  local cur = tonumber(redis.call('GET', fk) or '0')
  if t > cur then redis.call('SET', fk, string.format('%.0f', t)) end
end
return refused
"""

# The generation of the records: a random tag replaced whenever a record is
# removed (and recreated when missing, e.g. after Redis lost its data).

# KEYS: generation. ARGV: a fresh tag. -> the current tag.
GENERATION = """
local g = redis.call('GET', KEYS[1])
if g then return g end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

# KEYS: record, generation. ARGV: a fresh tag. -> 1 removed, 0 absent.
DELETE = """
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: record, generation. ARGV: now ms, a fresh tag.
# Delete the record if it expired at now. -> 1 removed, 0 not.
DELETE_EXPIRED = """
local e = redis.call('HGET', KEYS[1], 'exp')
if e and e ~= '' and tonumber(e) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

# KEYS: record, generation. ARGV: json, a fresh tag.
# Delete the record only if it is still exactly this one (a damaged one).
DELETE_IF = """
if redis.call('HGET', KEYS[1], 'record') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

# Checkpoints: an index hash per namespace, id -> "<version> <chunks> <size>";
# chunk i of a blob is <chunk prefix><version>:<i>.

# KEYS: index, fence (the index again when unfenced).
# ARGV: id, entry, chunk prefix, token ('' none).
# -> 1 published, -1 refused (stale token), -2 a chunk is missing.
PUBLISH = """
if ARGV[4] ~= '' then
  local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
  local t = tonumber(ARGV[4])
  if t < cur then return -1 end
  if t > cur then redis.call('SET', KEYS[2], ARGV[4]) end
end
local version, n = string.match(ARGV[2], '^(%S+) (%d+) ')
n = tonumber(n)
for i = 0, n - 1 do
  local ck = ARGV[3] .. version .. ':' .. i
  if redis.call('EXISTS', ck) == 0 then return -2 end
end
for i = 0, n - 1 do redis.call('PERSIST', ARGV[3] .. version .. ':' .. i) end
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if old and old ~= ARGV[2] then
  local ov, on = string.match(old, '^(%S+) (%d+) ')
  if ov then
    for i = 0, tonumber(on) - 1 do redis.call('DEL', ARGV[3] .. ov .. ':' .. i) end
  end
end
return 1
"""

# KEYS: index. ARGV: id, chunk prefix. -> nil, or {entry, chunk0, chunk1, ...}
# (a missing chunk ends the list early: the caller sees the blob is damaged).
FETCH = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then return false end
local out = {e}
local version, n = string.match(e, '^(%S+) (%d+) ')
if not version then return out end
for i = 0, tonumber(n) - 1 do
  local c = redis.call('GET', ARGV[2] .. version .. ':' .. i)
  if not c then return out end
  out[#out + 1] = c
end
return out
"""

# KEYS: index. ARGV: id, chunk prefix. -> 1 deleted, 0 absent.
DROP = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local version, n = string.match(e, '^(%S+) (%d+) ')
if version then
  for i = 0, tonumber(n) - 1 do redis.call('DEL', ARGV[2] .. version .. ':' .. i) end
end
return 1
"""

# Dead letters (see dead_letters.py for the layout).

# KEYS: seq, ident, stages. ARGV: base ("<prefix>dlq:<len>:<P>:"), identity,
# member prefix ("<index>:<offset>:"), then field, value pairs.
# -> the id (an existing one when the identity is there: upsert).
DLQ_ADD = """
local base = ARGV[1]
local id = redis.call('HGET', KEYS[2], ARGV[2])
local fields = {}
local stage, first
for i = 4, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  if ARGV[i] == 'stage' then stage = ARGV[i + 1] end
  if ARGV[i] == 'first_failed' then first = ARGV[i + 1] end
end
if id then
  local lk = base .. 'l:' .. id
  local old = redis.call('HGET', lk, 'first_failed')
  redis.call('HSET', lk, unpack(fields))
  if old and tonumber(old) < tonumber(first) then redis.call('HSET', lk, 'first_failed', old) end
  return tonumber(id)
end
id = redis.call('INCR', KEYS[1])
local lk = base .. 'l:' .. id
redis.call('HSET', lk, unpack(fields))
redis.call('HSET', lk, '_ident', ARGV[2], '_member', ARGV[3] .. id)
redis.call('HSET', KEYS[2], ARGV[2], id)
redis.call('ZADD', base .. 's:' .. stage, 0, ARGV[3] .. id)
redis.call('SADD', KEYS[3], stage)
return id
"""

# KEYS: ident, stages. ARGV: base, ids... -> how many were deleted.
DLQ_DELETE = """
local base = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local lk = base .. 'l:' .. ARGV[i]
  local v = redis.call('HMGET', lk, 'stage', '_ident', '_member')
  if v[1] then
    local zk = base .. 's:' .. v[1]
    redis.call('DEL', lk)
    redis.call('HDEL', KEYS[1], v[2])
    redis.call('ZREM', zk, v[3])
    if redis.call('ZCARD', zk) == 0 then redis.call('SREM', KEYS[2], v[1]) end
    n = n + 1
  end
end
return n
"""

# KEYS: ident, stages. ARGV: base, stage, fingerprint ('' any), from member ('' all), count-only ('1'/'0').
# -> how many match (and, unless count-only, were deleted).
DLQ_PURGE = """
local base = ARGV[1]
local zk = base .. 's:' .. ARGV[2]
local members
if ARGV[4] ~= '' then
  members = redis.call('ZRANGEBYLEX', zk, '[' .. ARGV[4], '+')
else
  members = redis.call('ZRANGE', zk, 0, -1)
end
local n = 0
for _, m in ipairs(members) do
  local id = string.match(m, ':(%d+)$')
  local lk = base .. 'l:' .. id
  local ok = true
  if ARGV[3] ~= '' then ok = redis.call('HGET', lk, 'fingerprint') == ARGV[3] end
  if ok then
    n = n + 1
    if ARGV[5] ~= '1' then
      redis.call('HDEL', KEYS[1], redis.call('HGET', lk, '_ident'))
      redis.call('DEL', lk)
      redis.call('ZREM', zk, m)
    end
  end
end
if ARGV[5] ~= '1' and redis.call('ZCARD', zk) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return n
"""


SCRIPTS: dict[str, str] = {
    "acquire": ACQUIRE,
    "release": RELEASE,
    "renew": RENEW,
    "create": CREATE,
    "replace": REPLACE,
    "put_many": PUT_MANY,
    "generation": GENERATION,
    "delete": DELETE,
    "delete_expired": DELETE_EXPIRED,
    "delete_if": DELETE_IF,
    "publish": PUBLISH,
    "fetch": FETCH,
    "drop": DROP,
    "dlq_add": DLQ_ADD,
    "dlq_delete": DLQ_DELETE,
    "dlq_purge": DLQ_PURGE,
}
