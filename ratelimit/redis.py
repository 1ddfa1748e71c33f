"""Distributed limiter: the state of each queue lives in Redis, updated by Lua scripts.

One `try_acquire` is one EVALSHA round trip. The script reads the clock with Redis `TIME`,
so the workers' own clocks never matter. The algorithm is the one `memory.py` implements
(see `base.py`); the keys of a queue share a hash tag so they sit in one cluster slot:

    {prefix}:{<queue>}:s         hash: GCRA tats, token level, fair-queueing tags, lifetime grants
    {prefix}:{<queue>}:c         hash: grants and settled tokens per 5 s bucket (live figures)
    {prefix}:{<queue>}:w:<sub>   sorted set: waiter id -> expiry time
    {prefix}:{<queue>}:x:<res>   marker: reservation already settled (settle is idempotent)
    {prefix}:{<queue>}:tw        sorted set: tokens/minute window, reservation -> grant time
    {prefix}:{<queue>}:ta        hash: tokens/minute window, reservation -> tokens charged
    {prefix}:{<queue>}:k:<key>   sorted set: concurrency slots of a key ('' = none) -> lease expiry
    {prefix}:{<queue>}:ka        sorted set: every slot of the queue, "<key>\n<slot>" -> expiry (stats)

After a Redis restart the state is gone. A limiter that has already seen a queue then
starts it cold, as if the queue had been saturated and had just made a grant: the next
grant one emission interval later, and the last minute's token budget taken as spent
evenly over that minute (a sixth of it leaves the window every 10 s). So a restart adds no
burst on top of the one the queue may already have used, and any 1 s window still holds at
most rate + burst_size grants. A queue that was never seen starts with a full bucket of
`burst_size` (and of tokens), like the in-memory limiter. (A queue idle for STATE_TTL loses
its state too; a process that knew it then also starts it cold: one interval's wait.)
The hot state is stored as packed doubles (Lua `struct`): exact, and no number is formatted
or parsed on the hot path (that was a third of the script's time).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import redis as redis_lib
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .base import (BUCKET, BUCKETS, CONCURRENCY_POLL, DEFAULT_SLOT_TTL, DEFAULT_SUB_QUEUE, GCRA_SLACK, TOKEN_WINDOW,
                   Decision, LimiterBase, LimiterUnavailable, QueueLimits, QueueStats, slot_key, summarize)
from .resp import MultiplexedConnection, bulk

STATE_TTL = 86400          # seconds an idle queue's state is kept
SETTLED_TTL = 600          # seconds a settled reservation is remembered (double settles)

# Shared prologue. The clock: ARGV[1] overrides it (tests with a fake clock), else Redis TIME;
# nows is "now" as a string (for sorted-set ranges; formatting numbers in Lua is slow).
# The state is kept as packed doubles (struct), which Redis neither parses nor formats:
#   'k'       V (fair-queueing virtual time), tat messages/s, tat requests/min,
#             tokens charged in the sliding minute (NaN = not set), unused
#   'q:<sub>' finish tag F, lifetime grants      'n:<sub>' token need of its last waiter
# tidy() runs when a new counter bucket starts: it drops the buckets that left the window.
_PROLOGUE = """
local now, ts, tu, nows
if ARGV[1] ~= '' then now = tonumber(ARGV[1]); ts = ARGV[1]; tu = '0'; nows = ARGV[1] else
  local t = redis.call('TIME'); ts = t[1]; tu = t[2]; now = tonumber(ts) + tonumber(tu) / 1000000
  nows = ts .. '.' .. string.rep('0', 6 - #tu) .. tu end
local NAN = 0 / 0
local SLACK = """ + repr(GCRA_SLACK) + """
local function tidy(C, bucket, ttl)
  local old = {}
  if bucket % 60 == 0 then
    for _, f in ipairs(redis.call('HKEYS', C)) do
      local b = tonumber(string.sub(f, 2))
      if b and b <= bucket - """ + str(BUCKETS) + """ then old[#old + 1] = f end
    end
  else
    for i = """ + str(BUCKETS) + """, """ + str(BUCKETS) + """ + 3 do
      old[#old + 1] = 'g' .. (bucket - i); old[#old + 1] = 't' .. (bucket - i)
    end
  end
  if #old > 0 then redis.call('HDEL', C, unpack(old)) end
  redis.call('EXPIRE', C, ttl)
end
-- tokens/minute: TW (reservation -> grant time), TA (reservation -> tokens charged);
-- spent = their sum. expire() drops the charges that left the window, returns spent.
local WIN = """ + repr(TOKEN_WINDOW) + """
local function expire(TW, TA, spent)
  local edge = string.format('%.6f', now - WIN)
  while true do
    local old = redis.call('ZRANGEBYSCORE', TW, '-inf', edge, 'LIMIT', 0, 500)
    if #old == 0 then break end
    local amts = redis.call('HMGET', TA, unpack(old))
    for i = 1, #old do spent = spent - (tonumber(amts[i]) or 0) end
    redis.call('ZREM', TW, unpack(old)); redis.call('HDEL', TA, unpack(old))
  end
  if redis.call('ZCARD', TW) == 0 then spent = 0 end
  return spent
end
-- when q more tokens fit in the window (-1e300: now): the time the oldest charges leave it
local function free_at(TW, TA, spent, cap, q)
  if spent + q <= cap then return -1e300 end
  local over = spent + q - cap; local start = 0; local last = now
  while true do
    local items = redis.call('ZRANGE', TW, start, start + 99, 'WITHSCORES')
    if #items == 0 then return last + WIN end
    local ids = {}
    for i = 1, #items, 2 do ids[#ids + 1] = items[i] end
    local amts = redis.call('HMGET', TA, unpack(ids))
    for i = 1, #ids do
      last = tonumber(items[2 * i])
      over = over - (tonumber(amts[i]) or 0)
      if over <= 1e-9 then return last + WIN end
    end
    start = start + 100
  end
end
"""

# KEYS: 1 state hash, 2 counters hash, 3 token window (tw), 4 its charges (ta),
#       4+i waiters of sub-queue i (sorted set: waiter -> expiry),
#       then the queue's slots (ka) and the caller's concurrency key's slots (k:<key>)
# ARGV: 1 now|'' 2 need 3 caller sub index (1-based) 4 waiter|'' 5 known(1/0)
#       6 T_msg 7 T_rpm 8 burst tolerance (burst - 1, in intervals) 9 cap 10 waiter_ttl 11 grace 12 state_ttl
#       13..12+n per-sub field names ('q:<sub>'), 13+n..12+2n weights,
#       13+2n max_concurrency (0 = none) 14+2n slot lease 15+2n poll, 16+2n slot id 17+2n key
#       18+2n reservation id (the token window's entry)
# Returns one string (cheaper to read than an array): 'allowed retry_after sec usec reason reserved'
ACQUIRE_LUA = _PROLOGUE + """
local need = tonumber(ARGV[2]); local x = tonumber(ARGV[3]); local waiter = ARGV[4]
local Tm = tonumber(ARGV[6]); local Tr = tonumber(ARGV[7]); local b1 = tonumber(ARGV[8])
local cap = tonumber(ARGV[9])
local n = #KEYS - 6
local S = KEYS[1]; local TW = KEYS[3]; local TA = KEYS[4]
local NEG = -1e300
local h = redis.call('HMGET', S, 'k', unpack(ARGV, 13, 12 + n))
local fresh = not h[1]
local V, tm, tr, L0, t0 = 0, nil, nil, nil, nil
if not fresh then
  V, tm, tr, L0, t0 = struct.unpack('<ddddd', h[1])
  if tm ~= tm then tm = nil end
  if tr ~= tr then tr = nil end
  if L0 ~= L0 then L0 = nil end
end
local F, G = {}, {}
for i = 1, n do
  if h[1 + i] then F[i], G[i] = struct.unpack('<dd', h[1 + i]) else F[i], G[i] = 0, 0 end
end
local spent = 0
-- 1. rate limits: when is the next grant allowed (unclamped: may be long ago)
if fresh and ARGV[5] == '1' then  -- known queue, state gone: Redis restarted; start cold
  if Tm > 0 then tm = now + (b1 + 1) * Tm end
  if Tr > 0 then tr = now + (b1 + 1) * Tr end
  if cap > 0 then  -- the last minute's budget taken as spent evenly over it
    for i = 0, 5 do
      local id = 'cold' .. i
      redis.call('ZADD', TW, now - 50 + 10 * i, id); redis.call('HSET', TA, id, cap / 6)
    end
    redis.call('EXPIRE', TW, ARGV[12]); redis.call('EXPIRE', TA, ARGV[12])
    L0 = cap
  end
end
local allow = NEG; local why = 'ok'
if Tm > 0 and tm and tm - b1 * Tm > allow then allow = tm - b1 * Tm; why = 'rate' end
if Tr > 0 and tr and tr - b1 * Tr > allow then allow = tr - b1 * Tr; why = 'rpm' end
-- 2. tokens: the charges of the grants of the last minute (sliding window)
local ax = allow
local reason = false
if cap > 0 then
  spent = expire(TW, TA, L0 or 0)
  local a = free_at(TW, TA, spent, cap, need)
  if a > ax then ax = a end
  if a > now + 1e-6 and a > allow then reason = 'tokens' end
end
if not reason and ax > now + 1e-6 then reason = why end
-- 2b. concurrency: a free slot (expired leases dropped)
local mc = tonumber(ARGV[13 + 2 * n]); local CA = KEYS[#KEYS - 1]; local CK = KEYS[#KEYS]
if not reason and mc > 0 then
  redis.call('ZREMRANGEBYSCORE', CK, '-inf', nows)
  if redis.call('ZCARD', CK) >= mc then
    reason = 'concurrency'
    local first = redis.call('ZRANGE', CK, 0, 0, 'WITHSCORES')
    ax = now + math.min(tonumber(ARGV[15 + 2 * n]), tonumber(first[2]) - now)
  end
end
-- 3. active sub-queues: the caller, and those with a live waiter
local active = {x}
if n > 1 then
  local nowf = '(' .. nows
  for i = 1, n do
    if i ~= x and redis.call('ZCOUNT', KEYS[4 + i], nowf, '+inf') > 0 then active[#active + 1] = i end
  end
end
-- 4. weighted fair share: the grant goes to the smallest start tag max(V, F)
local sx = math.max(V, F[x])
if not reason and #active > 1 then
  local smin = sx; local y = x
  for j = 2, #active do
    local si = math.max(V, F[active[j]])
    if si < smin then smin = si; y = active[j] end
  end
  if y ~= x then
    local ay = allow
    if cap > 0 then
      local ny = tonumber(redis.call('HGET', S, 'n' .. string.sub(ARGV[12 + y], 2))) or 0
      ay = math.max(ay, free_at(TW, TA, spent, cap, ny))
    end
    if now < ay + tonumber(ARGV[11]) then reason = 'fair'; ax = ay + tonumber(ARGV[11]) end
  end
end
if not reason then  -- grant: commit every limit
  -- a grant up to SLACK intervals late keeps the schedule; later (or after idle) it restarts
  if Tm > 0 then if tm and tm >= now - SLACK * Tm then tm = tm + Tm else tm = now + Tm end end
  if Tr > 0 then if tr and tr >= now - SLACK * Tr then tr = tr + Tr else tr = now + Tr end end
  if cap > 0 then
    local res = ARGV[18 + 2 * n]
    redis.call('ZADD', TW, nows, res); redis.call('HSET', TA, res, ARGV[2])
    redis.call('EXPIRE', TW, ARGV[12]); redis.call('EXPIRE', TA, ARGV[12])
    L0 = spent + need; t0 = 0
  end
  local fx = F[x]
  if n > 1 then
    fx = sx + 1 / tonumber(ARGV[12 + n + x])
    local vmin = fx
    for j = 2, #active do local si = math.max(V, F[active[j]]); if si < vmin then vmin = si end end
    V = vmin
  end
  redis.call('HSET', S, 'k', struct.pack('<ddddd', V, tm or NAN, tr or NAN, L0 or NAN, t0 or 0),
             ARGV[12 + x], struct.pack('<dd', fx, G[x] + 1))
  local bucket = math.floor(now / """ + str(BUCKET) + """)
  if redis.call('HINCRBY', KEYS[2], 'g' .. bucket, '1') == 1 then tidy(KEYS[2], bucket, ARGV[12]); redis.call('EXPIRE', S, ARGV[12])
  elseif fresh then redis.call('EXPIRE', S, ARGV[12]) end
  if waiter ~= '' then redis.call('ZREM', KEYS[4 + x], waiter) end
  if mc > 0 then  -- take the slot: a lease the running step renews
    local exp = now + tonumber(ARGV[14 + 2 * n]); local slot = ARGV[16 + 2 * n]
    redis.call('ZADD', CK, exp, slot); redis.call('EXPIRE', CK, ARGV[12])
    redis.call('ZREMRANGEBYSCORE', CA, '-inf', nows)
    redis.call('ZADD', CA, exp, ARGV[17 + 2 * n] .. '\\n' .. slot); redis.call('EXPIRE', CA, ARGV[12])
  end
  return '1 0 ' .. ts .. ' ' .. tu .. ' ok ' .. ARGV[2]
end
-- 5. not yet. The countdown counts the grants that go first: those the other active
-- sub-queues get before our start tag is the smallest, and those of the waiters of our
-- sub-queue due before us (f grants per one of ours), so waiters do not all come back
-- for the same grant.
local W = KEYS[4 + x]
if waiter ~= '' then redis.call('ZREMRANGEBYSCORE', W, '-inf', nows) end
if reason ~= 'fair' and reason ~= 'concurrency' then
  local ahead = 0
  local wx = tonumber(ARGV[12 + n + x]); local wsum = wx
  for j = 2, #active do
    local o = active[j]; local wo = tonumber(ARGV[12 + n + o]); wsum = wsum + wo
    local so = math.max(V, F[o])
    if sx > so then ahead = ahead + math.ceil((sx - so) * wo - 1e-9) end
  end
  if waiter ~= '' then
    local rank = redis.call('ZRANK', W, waiter)
    if not rank then rank = redis.call('ZCARD', W) end
    ahead = ahead + rank * wsum / wx
  end
  if ahead > 0 then
    ax = ax + ahead * math.max(Tm, Tr)
    -- the waiters ahead first, each about the window's mean charge (the real usage, once settled)
    if cap > 0 then
      local cnt = redis.call('ZCARD', TW); local mean = need
      if cnt > 0 then mean = math.min(need, spent / cnt) end
      local q = need + ahead * mean
      local whole = math.floor((q - 1e-9) / cap)
      ax = math.max(ax, math.max(free_at(TW, TA, spent, cap, q - whole * cap), now) + whole * WIN)
    end
  end
end
if waiter ~= '' then
  if redis.call('ZADD', W, ax + tonumber(ARGV[10]), waiter) == 1 then redis.call('EXPIRE', W, ARGV[12]) end
  if n > 1 and cap > 0 then redis.call('HSET', S, 'n' .. string.sub(ARGV[12 + x], 2), ARGV[2]) end
end
if fresh or (cap > 0 and spent ~= (L0 or 0)) then  -- the window moved on (or a fresh state)
  if cap > 0 then L0 = spent end
  redis.call('HSET', S, 'k', struct.pack('<ddddd', V, tm or NAN, tr or NAN, L0 or NAN, t0 or 0))
  redis.call('EXPIRE', S, ARGV[12])
end
return '0 ' .. tostring(ax - now) .. ' ' .. ts .. ' ' .. tu .. ' ' .. reason .. ' 0'
"""

# KEYS: 1 state hash, 2 counters hash, 3 settled marker, 4 token window, 5 its charges.
# ARGV: 1 now|'' 2 cap 3 reserved 4 used 5 marker ttl 6 state ttl 7 reservation
# The real usage replaces the estimate in the window, at the grant's time (when the provider
# counted it); a charge that already left the window is not brought back.
SETTLE_LUA = _PROLOGUE + """
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[5]) then return 0 end
local S = KEYS[1]
local used = tonumber(ARGV[4])
local k = redis.call('HGET', S, 'k')
if k then
  local V, tm, tr, L0, t0 = struct.unpack('<ddddd', k)
  if L0 == L0 then
    local spent = expire(KEYS[4], KEYS[5], L0)
    local was = redis.call('HGET', KEYS[5], ARGV[7])
    if was then
      spent = spent + used - tonumber(was)
      redis.call('HSET', KEYS[5], ARGV[7], ARGV[4])
    end
    redis.call('HSET', S, 'k', struct.pack('<ddddd', V, tm, tr, spent, t0))
  end
end
local bucket = math.floor(now / """ + str(BUCKET) + """)
if used > 0 and redis.call('HINCRBY', KEYS[2], 't' .. bucket, ARGV[4]) == used then
  tidy(KEYS[2], bucket, ARGV[6])
end
return 1
"""

# KEYS: as for acquire, without the caller's concurrency key.  ARGV: 1 now|'' 2 cap 3.. per-sub field names
# Returns: seconds, microseconds, token level now ('' = full/unset), lifetime grants per
# sub-queue, the counters hash, live waiters per sub-queue, live slots ("<key>\n<slot>").
STATS_LUA = _PROLOGUE + """
local S = KEYS[1]
local n = #KEYS - 5
local cap = tonumber(ARGV[2])
local h = redis.call('HMGET', S, 'k', unpack(ARGV, 3, 2 + n))
local level = ''
if h[1] and cap > 0 then
  local V, tm, tr, L0, t0 = struct.unpack('<ddddd', h[1])
  if L0 == L0 then
    local spent = expire(KEYS[3], KEYS[4], L0)
    if spent ~= L0 then redis.call('HSET', S, 'k', struct.pack('<ddddd', V, tm, tr, spent, t0)) end
    level = tostring(cap - spent)
  end
end
local g = {}
for i = 1, n do
  if h[1 + i] then local f, c = struct.unpack('<dd', h[1 + i]); g[i] = c else g[i] = 0 end
end
local w = {}
local nowf = '(' .. nows
for i = 1, n do w[i] = redis.call('ZCOUNT', KEYS[4 + i], nowf, '+inf') end
return {ts, tu, level, g, redis.call('HGETALL', KEYS[2]), w,
        redis.call('ZRANGEBYSCORE', KEYS[#KEYS], '(' .. nows, '+inf')}
"""

# KEYS: 1 the key's slots, 2 the queue's slots. ARGV: 1 slot 2 "<key>\n<slot>"
RELEASE_LUA = "redis.call('ZREM', KEYS[1], ARGV[1]); return redis.call('ZREM', KEYS[2], ARGV[2])"

# KEYS: as for release. ARGV: 1 now|'' 2 lease 3 slot 4 "<key>\n<slot>". A slot already
# dropped (its lease lapsed) is not taken back: its place may have been granted again.
RENEW_LUA = _PROLOGUE + """
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 0 end
local exp = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', exp, ARGV[3]); redis.call('ZADD', KEYS[2], 'XX', exp, ARGV[4])
return 1
"""

# KEYS: 1 waiters of the sub-queue. ARGV: 1 waiter
FORGET_LUA = "return redis.call('ZREM', KEYS[1], ARGV[1])"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class _Plan:
    """What never changes between two acquires of one queue: keys, config, the packed command."""

    __slots__ = ("keys", "index", "default", "args", "head", "tail", "slots")

    def __init__(self, keys: list[str], index: dict[str, bytes], args: list[str], sha: str, slots: str):
        self.keys, self.index, self.args, self.slots = keys, index, args, slots
        self.default = index[DEFAULT_SUB_QUEUE]
        enc = [k.encode() for k in keys]
        # EVALSHA sha numkeys keys... concurrency-key now need sub waiter known static... slot key res
        self.head = (b"*%d\r\n" % (3 + len(enc) + 1 + 5 + len(args) + 3)
                     + bulk([b"EVALSHA", sha.encode(), str(len(enc) + 1).encode(), *enc]))
        self.tail = bulk([a.encode() for a in args])


class _Request:
    """The per-call part of one acquire: its arguments, the caller's concurrency key's slot
    set, the slot it takes if granted (empty when the queue has no max_concurrency) and its
    reservation (the token window's entry; empty without a token limit)."""

    __slots__ = ("dyn", "slots", "slot", "key", "res")

    def __init__(self, dyn: list[bytes], slots: str, slot: str, key: str, res: str = ""):
        self.dyn, self.slots, self.slot, self.key, self.res = dyn, slots, slot, key, res

    def last(self) -> list[str]:
        """The arguments after the queue's static ones."""
        return [self.slot, self.key, self.res]

    def packed(self, plan: _Plan) -> bytes:
        return (plan.head + bulk([self.slots.encode()]) + bulk(self.dyn) + plan.tail
                + bulk([self.slot.encode(), self.key.encode(), self.res.encode()]))


class RedisLimiter(LimiterBase):
    """Limits that hold across every process talking to the same Redis.

    `client` is a `redis.Redis` or a URL. `clock` is for tests only: when given, its value
    replaces Redis TIME as "now" (every process must then share it).
    `waiter_ttl`: how long a denied waiter stays registered past its retry time.
    `fair_grace`: seconds an available grant is kept for the sub-queue whose turn it is
    (default: `QueueLimits.default_fair_grace()`).

    Errors reaching Redis raise `LimiterUnavailable` (retryable); nothing is granted then.
    """

    def __init__(self, client: "redis_lib.Redis | str", key_prefix: str = "af:rl", *,
                 waiter_ttl: float = 10.0, fair_grace: float | None = None,
                 clock: Callable[[], float] | None = None, socket_timeout: float = 2.0,
                 where: str | None = None, async_client: Callable[[], Any] | None = None,
                 slot_ttl: float = DEFAULT_SLOT_TTL):
        if isinstance(client, str):
            from ..redisconn import redis_client

            self._url = client
            client = redis_client(client, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
        else:
            kw = getattr(client, "connection_pool", None)
            kw = kw.connection_kwargs if kw is not None else {}
            self._url = f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
        self._url = where or self._url
        self.redis = client
        self.key_prefix = key_prefix
        self.slot_ttl = slot_ttl
        self.waiter_ttl = waiter_ttl
        self.fair_grace = fair_grace
        self._clock = clock
        # makes a redis.asyncio client on the same Redis, for the async checks when the sync
        # client is not plain TCP (Sentinel): redis-py's async Sentinel finds the master
        self._async_client_factory = async_client
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._settle = client.register_script(SETTLE_LUA)
        self._stats = client.register_script(STATS_LUA)
        self._forget = client.register_script(FORGET_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._renew = client.register_script(RENEW_LUA)
        # The hot path writes the EVALSHA command itself and sends it on a pooled connection:
        # redis-py's Script call costs 2.5x the CPU (49 against 20 us a try_acquire,
        # bench/redis_clients.py). It uses ConnectionPool.get_connection() with no command
        # name, which redis-py >= 5.3 takes (pyproject pins redis; the floor is tested by
        # tests/test_dependency_pins.py). Any other client type uses Script.
        self._fast = type(client) is redis_lib.Redis
        self._known: set[str] = set()     # queues whose state this process has seen in Redis
        self._plans: dict[QueueLimits, _Plan] = {}

    # ---- helpers
    def _now(self) -> float:
        return self._clock() if self._clock else time.time()

    def _now_arg(self) -> str:
        return repr(float(self._clock())) if self._clock else ""

    def keys_for(self, queue_id: str) -> tuple[str, str, str]:
        """(state key, counters key, waiter key prefix) of a queue."""
        base = f"{self.key_prefix}:{{{queue_id}}}"
        return f"{base}:s", f"{base}:c", f"{base}:w:"

    def token_keys(self, queue_id: str) -> tuple[str, str]:
        """(window: reservation -> grant time, charges: reservation -> tokens) of a queue."""
        base = f"{self.key_prefix}:{{{queue_id}}}"
        return f"{base}:tw", f"{base}:ta"

    def slot_keys(self, queue_id: str, key: str) -> tuple[str, str]:
        """(slots of one concurrency key, every slot of the queue) of a queue."""
        base = f"{self.key_prefix}:{{{queue_id}}}"
        return f"{base}:k:{key}", f"{base}:ka"

    def _plan(self, limits: QueueLimits) -> _Plan:
        plan = self._plans.get(limits)
        if plan is None:
            state, counters, wprefix = self.keys_for(limits.id)
            subs = limits.sub_queue_weights
            slots = self.slot_keys(limits.id, "")[1]
            keys = [state, counters, *self.token_keys(limits.id)] + [wprefix + s for s, _ in subs] + [slots]
            index = {s: str(i + 1).encode() for i, (s, _) in enumerate(subs)}
            grace = self.fair_grace if self.fair_grace is not None else limits.default_fair_grace()
            args = [repr(limits.message_interval), repr(limits.request_interval),
                    repr(limits.burst_tolerance),
                    str(limits.max_tokens_per_minute or 0), repr(float(self.waiter_ttl)),
                    repr(float(grace)), str(STATE_TTL)]
            args += [f"q:{s}" for s, _ in subs] + [repr(float(w)) for _, w in subs]
            args += [str(limits.max_concurrency or 0), repr(float(self.slot_ttl)), repr(CONCURRENCY_POLL)]
            plan = _Plan(keys, index, args, self._acquire.sha, slots)
            if len(self._plans) > 10_000:
                self._plans.clear()
            self._plans[limits] = plan
        return plan

    def _unavailable(self, e: Exception) -> LimiterUnavailable:
        return LimiterUnavailable(f"rate limiter cannot reach Redis ({self._url}): {e}; "
                                  f"nothing was granted, retry later", retryable=True)

    def _call(self, script, keys, args):
        try:
            return script(keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError) as e:
            raise self._unavailable(e) from e

    def _call_acquire(self, plan: _Plan, req: "_Request"):
        if not self._fast:
            return self._call(self._acquire, [*plan.keys, req.slots], [*req.dyn, *plan.args, *req.last()])
        packed = req.packed(plan)
        pool = self.redis.connection_pool
        try:
            for attempt in range(3):
                conn = None
                try:
                    conn = pool.get_connection()
                    conn.send_packed_command([packed])
                    return conn.read_response()
                except NoScriptError:  # Redis restarted or SCRIPT FLUSH: load it, go again
                    self.redis.script_load(ACQUIRE_LUA)
                except (RedisConnectionError, OSError) as e:
                    # a dropped connection (e.g. Redis restarting): try again on a new one;
                    # a timeout is not retried, the script may have run
                    if conn is not None:
                        conn.disconnect()
                    if attempt == 2:
                        raise self._unavailable(e) from e
                    time.sleep(0.01 * (attempt + 1))
                finally:
                    if conn is not None:
                        pool.release(conn)
        except (RedisConnectionError, RedisTimeoutError) as e:
            raise self._unavailable(e) from e
        raise self._unavailable(RuntimeError("script could not be loaded"))

    # ---- Limiter
    def _request(self, limits: QueueLimits, sub_queue: str | None, tokens: int,
                 waiter: str | None, concurrency_key: str | None = None) -> tuple[_Plan, "_Request", str]:
        """(plan, the per-call EVALSHA arguments, sub-queue) of one acquire."""
        need = limits.check_tokens(tokens)
        plan = self._plan(limits)
        xi = plan.index.get(sub_queue) if sub_queue is not None else None
        if xi is None:
            sub_queue, xi = DEFAULT_SUB_QUEUE, plan.default
        dyn = [self._now_arg().encode(), b"%d" % need, xi,
               waiter.encode() if waiter else b"", b"1" if limits.id in self._known else b"0"]
        key = slot_key(concurrency_key) if limits.max_concurrency else ""
        slot = os.urandom(12).hex() if limits.max_concurrency else ""
        slots = self.slot_keys(limits.id, key)[0] if limits.max_concurrency else plan.slots
        res = os.urandom(12).hex() if limits.max_tokens_per_minute else ""
        return plan, _Request(dyn, slots, slot, key, res), sub_queue

    def _decision(self, limits: QueueLimits, sub_queue: str, r: Any, req: "_Request") -> Decision:
        self._known.add(limits.id)
        ok, retry, sec, usec, reason, reserved = (r.decode() if isinstance(r, bytes) else r).split()
        at = float(sec) + int(usec) / 1e6
        if ok == "1":
            return Decision(True, 0.0, req.res or None, int(reserved), at, "ok", sub_queue, req.slot or None, req.key)
        return Decision(False, float(retry), None, 0, at, reason, sub_queue)

    def try_acquire(self, limits: QueueLimits, sub_queue: str | None = None, tokens: int = 0,
                    waiter: str | None = None, concurrency_key: str | None = None) -> Decision:
        limits = QueueLimits.of(limits)
        plan, req, sub_queue = self._request(limits, sub_queue, tokens, waiter, concurrency_key)
        return self._decision(limits, sub_queue, self._call_acquire(plan, req), req)

    async def try_acquire_each_async(self, queues: list[QueueLimits]) -> list[Decision]:
        """One acquire on each queue, sent together: one round trip for all (the API checks
        a caller's address and tenant at once). Each is decided on its own, in order."""
        import anyio

        queues = [QueueLimits.of(q) for q in queues]
        conn = self._async_connection()
        if conn is None:
            client = self._async_client()
            if client is not None:
                return await self._acquire_each_asyncio(client, queues)
            return [await anyio.to_thread.run_sync(self.try_acquire, q) for q in queues]
        requests = [self._request(q, None, 0, None) for q in queues]
        packed = [req.packed(plan) for plan, req, _ in requests]
        for attempt in range(3):
            try:
                replies = await conn.execute(packed)
            except RedisConnectionError as e:  # nothing was sent, or the connection dropped: again
                if attempt == 2:
                    raise self._unavailable(e) from e
                await anyio.sleep(0.01 * (attempt + 1))
                continue
            except (RedisTimeoutError, ResponseError) as e:  # not retried: the scripts may have run
                raise self._unavailable(e) from e
            errors = [r for r in replies if isinstance(r, Exception)]
            if not errors:
                return [self._decision(q, sub, r, req) for q, (_, req, sub), r in zip(queues, requests, replies)]
            if not all(str(e).startswith("NOSCRIPT") for e in errors):
                raise self._unavailable(errors[0])
            # Redis restarted or SCRIPT FLUSH: no script ran; load it, go again
            await anyio.to_thread.run_sync(self.redis.script_load, ACQUIRE_LUA)
        raise self._unavailable(RuntimeError("script could not be loaded"))

    async def _acquire_each_asyncio(self, client, queues: list[QueueLimits]) -> list[Decision]:
        """try_acquire_each_async on a redis.asyncio client: one pipeline, one round trip."""
        import anyio

        requests = [self._request(q, None, 0, None) for q in queues]
        for attempt in range(3):
            pipe = client.pipeline(transaction=False)
            for plan, req, _ in requests:  # keys and arguments as _call_acquire sends them
                keys = [*plan.keys, req.slots]
                pipe.evalsha(self._acquire.sha, len(keys), *keys, *req.dyn, *plan.args, *req.last())
            try:
                replies = await pipe.execute(raise_on_error=False)
            except RedisConnectionError as e:  # e.g. the master failing over: again, then give up
                if attempt == 2:
                    raise self._unavailable(e) from e
                await anyio.sleep(0.01 * (attempt + 1))
                continue
            except RedisTimeoutError as e:  # not retried: the scripts may have run
                raise self._unavailable(e) from e
            errors = [r for r in replies if isinstance(r, Exception)]
            if not errors:
                return [self._decision(q, sub, r, req) for q, (_, req, sub), r in zip(queues, requests, replies)]
            if not all(isinstance(e, NoScriptError) for e in errors):
                raise self._unavailable(errors[0])
            await client.script_load(ACQUIRE_LUA)  # a promoted replica may not have it
        raise self._unavailable(RuntimeError("script could not be loaded"))

    def _async_client(self):
        """The event loop's redis.asyncio client from `async_client`, or None."""
        import asyncio

        if self._async_client_factory is None:
            return None
        loop = asyncio.get_running_loop()
        cached = getattr(self, "_aclient", None)
        if cached is not None and cached[0] is loop:
            return cached[1]
        client = self._async_client_factory()
        self._aclient = (loop, client)
        return client

    def _async_connection(self):
        """The event loop's multiplexed connection (`resp.MultiplexedConnection`), or None
        when the client is not plain TCP (unix socket, TLS, Sentinel...) or was given
        without its fast path: `async_client` (Sentinel) then serves, else the sync client
        runs on a thread."""
        import asyncio

        loop = asyncio.get_running_loop()
        cached = getattr(self, "_aconn", None)
        if cached is not None and cached[0] is loop:
            return cached[1]
        pool = self.redis.connection_pool
        if not self._fast or pool.connection_class is not redis_lib.Connection:
            return None
        conn = MultiplexedConnection.from_kwargs(pool.connection_kwargs)
        self._aconn = (loop, conn)
        return conn

    def forget(self, limits: QueueLimits, sub_queue: str | None, waiter: str) -> None:
        """Withdraw a waiter registration (the task gave up or went elsewhere)."""
        limits = QueueLimits.of(limits)
        wprefix = self.keys_for(limits.id)[2]
        self._call(self._forget, [wprefix + limits.resolve_sub_queue(sub_queue)], [waiter])

    def renew(self, limits: QueueLimits, decision: Decision) -> None:
        """Extend the lease of the decision's concurrency slot, if it still holds it."""
        if decision.slot is None:
            return
        self._call(self._renew, list(self.slot_keys(limits.id, decision.slot_key)),
                   [self._now_arg(), repr(float(self.slot_ttl)), decision.slot,
                    f"{decision.slot_key}\n{decision.slot}"])

    def settle(self, limits: QueueLimits, decision: Decision, tokens_used: int) -> None:
        """Replace the reserved estimate by the real usage (idempotent per reservation) and
        give the concurrency slot back."""
        limits = QueueLimits.of(limits)
        if tokens_used < 0:
            raise ValueError(f"tokens_used must be >= 0, got {tokens_used!r}")
        if decision.slot is not None:
            self._call(self._release, list(self.slot_keys(limits.id, decision.slot_key)),
                       [decision.slot, f"{decision.slot_key}\n{decision.slot}"])
        cap = limits.max_tokens_per_minute
        if not cap or not decision.allowed or not decision.reservation:
            return
        state, counters, _ = self.keys_for(limits.id)
        marker = f"{self.key_prefix}:{{{limits.id}}}:x:{decision.reservation}"
        self._call(self._settle, [state, counters, marker, *self.token_keys(limits.id)],
                   [self._now_arg(), cap, int(decision.tokens_reserved), int(tokens_used),
                    SETTLED_TTL, STATE_TTL, decision.reservation])

    def stats(self, limits: QueueLimits) -> QueueStats:
        limits = QueueLimits.of(limits)
        plan = self._plan(limits)
        subs = [s for s, _ in limits.sub_queue_weights]
        cap = limits.max_tokens_per_minute or 0
        r = self._call(self._stats, plan.keys, [self._now_arg(), cap, *[f"q:{s}" for s in subs]])
        now = float(r[0]) + int(r[1]) / 1e6
        level_s = _s(r[2])
        flat = [_s(v) for v in r[4]]
        grants: dict[int, int] = {}
        tokens: dict[int, int] = {}
        for f, v in zip(flat[::2], flat[1::2]):
            (grants if f[0] == "g" else tokens)[int(f[1:])] = int(v)
        rate, per_min, tok_min = summarize(grants, tokens, now)
        level = (float(level_s) if level_s else float(cap)) if cap else None
        by_key: dict[str, int] = {}
        for member in r[6]:
            key = _s(member).rpartition("\n")[0]
            by_key[key] = by_key.get(key, 0) + 1
        return QueueStats(limits.id, rate, tok_min,
                          {s: int(w) for s, w in zip(subs, r[5])},
                          {s: int(g) for s, g in zip(subs, r[3])},
                          per_min, level, now, sum(by_key.values()), by_key)

    def clear(self, limits: QueueLimits | None = None) -> int:
        """Delete the limiter's keys (one queue, or every queue under the prefix)."""
        limits = QueueLimits.of(limits) if limits is not None else None
        pattern = f"{self.key_prefix}:{{{limits.id}}}:*" if limits else f"{self.key_prefix}:*"
        n = 0
        try:
            for k in self.redis.scan_iter(match=pattern, count=500):
                n += self.redis.delete(k)
        except (RedisConnectionError, RedisTimeoutError) as e:
            raise self._unavailable(e) from e
        return n
