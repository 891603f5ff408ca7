//! The Lua scripts: each multi-key update of the store, applied atomically by Redis. Times are Redis's (`TIME`).
//!
//! A run's record is a hash `{prefix}:run:{id}`: `owner`, `status` (`queued`, `running`, `done`, `failed`),
//! `request` (until it ends), `may_act` (`1` when its manifest lets it act on the world), `attempt` (raised each time
//! a node starts or reclaims it: a finish naming an older attempt is refused), `node`, then `report` or `error`.

/// KEYS: queue, run. ARGV: max pending, owner, request, may_act, id. Replies 1 queued, 0 full.
pub(crate) const SUBMIT: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[2], 'owner', ARGV[2], 'status', 'queued', 'request', ARGV[3], 'may_act', ARGV[4],
  'attempt', 0)
redis.call('XADD', KEYS[1], '*', 'run', ARGV[5])
return 1
";

/// KEYS: queue, run. ARGV: group, entry, node. Replies `{attempt, owner, request}` when the run was queued (now
/// running under the new attempt), else `{0}` after releasing the entry (finished, or expired).
pub(crate) const START: &str = r"
if redis.call('HGET', KEYS[2], 'status') ~= 'queued' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return {0}
end
local attempt = redis.call('HINCRBY', KEYS[2], 'attempt', 1)
redis.call('HSET', KEYS[2], 'status', 'running', 'node', ARGV[3])
local fields = redis.call('HMGET', KEYS[2], 'owner', 'request')
return {attempt, fields[1], fields[2]}
";

/// KEYS: queue, run. ARGV: group, entry, node (the reclaimer). For an entry taken from a silent node: `{1}` when the
/// run never started or cannot have acted (it is queued again, for the caller to start), `{2, attempt, node}` when
/// it started and may have acted (the attempt is raised, so the silent node can no longer finish it), `{0}` when it
/// is finished or gone (the entry is released).
pub(crate) const RECOVER: &str = r"
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'queued' then
  return {1}
end
if status ~= 'running' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return {0}
end
if redis.call('HGET', KEYS[2], 'may_act') == '0' then
  redis.call('HSET', KEYS[2], 'status', 'queued')
  return {1}
end
local previous = redis.call('HGET', KEYS[2], 'node') or ''
local attempt = redis.call('HINCRBY', KEYS[2], 'attempt', 1)
redis.call('HSET', KEYS[2], 'node', ARGV[3])
return {2, attempt, previous}
";

/// KEYS: queue, run, due deliveries, then one key per delivery. ARGV: group, entry, attempt, status, report, error,
/// TTL seconds, then per delivery: id, run id, url, body. Replies 1, or 0 when the run is not running under that
/// attempt (nothing changes).
pub(crate) const FINISH: &str = r"
local fields = redis.call('HMGET', KEYS[2], 'status', 'attempt')
if fields[1] ~= 'running' or fields[2] ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[2], 'status', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'report', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'error', ARGV[6]) end
redis.call('HDEL', KEYS[2], 'request')
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 4, #KEYS do
  local at = 7 + (i - 4) * 4
  redis.call('HSET', KEYS[i], 'run_id', ARGV[at + 2], 'url', ARGV[at + 3], 'body', ARGV[at + 4], 'attempts', 0,
    'last_error', '')
  redis.call('ZADD', KEYS[3], now, ARGV[at + 1])
end
return 1
";

/// KEYS: queue, run. ARGV: group, entry, attempt, id. A run this node holds goes back to the queue under a new
/// entry. Replies 1, or 0 when the run is not running under that attempt.
pub(crate) const HAND_BACK: &str = r"
local fields = redis.call('HMGET', KEYS[2], 'status', 'attempt')
if fields[1] ~= 'running' or fields[2] ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[2], 'status', 'queued')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[1], '*', 'run', ARGV[4])
return 1
";

/// KEYS: due deliveries. ARGV: max, lease ms, delivery key prefix. Replies the due deliveries, each
/// `{id, run id, url, body, attempts, last error}`, now due again only after the lease.
pub(crate) const LEASE: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local leased = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[3] .. id, 'run_id', 'url', 'body', 'attempts', 'last_error')
  if not f[2] then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    table.insert(leased, {id, f[1], f[2], f[3], f[4], f[5]})
  end
end
return leased
";

/// KEYS: due deliveries, delivery. ARGV: id.
pub(crate) const DELIVERED: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
";

/// KEYS: due deliveries, delivery. ARGV: id, attempts, last error, ms until the next attempt.
pub(crate) const RETRY: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[2], 'attempts', ARGV[2], 'last_error', ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
return 1
";

/// KEYS: due deliveries, delivery, dead letters. ARGV: id, letter, how many letters are kept.
pub(crate) const DEAD_LETTER: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
return 1
";
