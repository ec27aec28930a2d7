/**
 * The Lua scripts of the Redis tier. Each runs atomically on the node that
 * holds its keys; a key's value, lease, claims and tombstone share one hash
 * tag, so they are always on one node (Redis Cluster included).
 *
 * Keys of a store key K (its digest in base64url): `<prefix>{K}:v` the
 * verdict (JSON), `<prefix>{K}:l` the lease (the holder's claim id),
 * `<prefix>{K}:c` the claims that may still store (a hash: claim id to its
 * deadline on Redis's clock, ms), `<prefix>{K}:t` the tombstone (a random id
 * per invalidation; only a store without a claim reads it). Messages on
 * `<prefix>bus` carry a kind, K and the sender's instance id, nothing else.
 */
import { createHash } from 'node:crypto';

/** A script and its SHA-1, for EVALSHA. */
export interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/**
 * Most bytes of a value a script hands back: a value is at most 64 KiB of JavaScript characters (the tier's own limit,
 * checked again as it reads), so at most three times that in UTF-8. Anything longer is foreign and never sent.
 */
const MAX_VALUE_BYTES = 3 * 64 * 1024;

/**
 * Lua: reading the keys that anyone able to write to Redis could have set to anything. `text(key)` is the string at
 * `key`, or false when there is none, it is of another type, or it is longer than {@link MAX_VALUE_BYTES};
 * `claimsOf(key)` deletes a claims key that is not a hash, so that it lists no claim rather than fail every command.
 */
const READERS = `local function text(key)
  if redis.call('TYPE', key).ok ~= 'string' then return false end
  if redis.call('STRLEN', key) > ${MAX_VALUE_BYTES} then return false end
  return redis.call('GET', key)
end
local function claimsOf(key)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', key) end
  return key
end`;

/** KEYS value. The stored value, or nil (none, of another type, or too long). */
export const GET = script(`${READERS}
return text(KEYS[1])`);

/**
 * KEYS value, claims. Deletes the stored value and the claims that may still store, so that no answer asked for
 * before it lands after it; the lease stands (its holder's answer is refused), nothing is announced.
 */
export const DEL = script(`return redis.call('DEL', KEYS[1], KEYS[2])`);

/** Lua: `now`, Redis's own clock in ms (scripts replicate their effects: Redis 5 and later). */
const NOW = `local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)`;

/** Longest `leaseTime` an instance may take (ms): a longer lease in Redis is none of theirs. */
export const MAX_LEASE_MS = 60_000;

/** Most claims a key lists; past it the list starts anew (its claims then store nothing, which is safe). */
export const MAX_CLAIMS = 32;

/**
 * KEYS value, lease, claims; ARGV replace ('1' or ''), claim id, lease ms,
 * claim ms. {'s', value} when a value is stored (unless replace); else {'c'}
 * when the lease was free and is now this claim's (it joins the claims that
 * may store, until claim ms from now on Redis's clock); else {'h'}.
 */
export const LEASE = script(`${READERS}
if ARGV[1] == '' then
  local value = text(KEYS[1])
  if value then return {'s', value} end
end
local lease = redis.call('TYPE', KEYS[2]).ok
-- A lease is a string that expires within the longest lease any instance takes: anything else there was not written
-- by a tier, and would hold the key up for longer.
if lease ~= 'none' then
  local ttl = lease == 'string' and redis.call('PTTL', KEYS[2]) or -1
  if ttl < 0 or ttl > ${MAX_LEASE_MS} then redis.call('DEL', KEYS[2]) end
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  ${NOW}
  if redis.call('HLEN', claimsOf(KEYS[3])) >= ${MAX_CLAIMS} then redis.call('DEL', KEYS[3]) end
  redis.call('HSET', KEYS[3], ARGV[2], string.format('%.0f', now + tonumber(ARGV[4])))
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  return {'c'}
end
return {'h'}`);

/**
 * KEYS value, lease, tombstone, claims; ARGV JSON, ms to live, claim id or
 * '', channel, answered message, released message, '1' for a rejection.
 * Under a claim, ends its lease. An acceptance is stored only when its claim
 * is still listed among those that may store and its time (on Redis's
 * clock) has not passed: an invalidation or a rejection deletes the list, so
 * no answer asked for before either is stored after it, however late it
 * reaches Redis; a list evicted stores nothing. An acceptance without a claim
 * is stored only while the key has no tombstone. A rejection is always
 * stored, and lives at least as long as the value it replaces would have:
 * an instance may hold that acceptance, or one a rejection there outlives.
 * 1 stored, 0 not.
 */
export const SET = script(`${READERS}
local rejection = ARGV[7] == '1'
if ARGV[3] ~= '' then
  local mine = text(KEYS[2]) == ARGV[3]
  if mine then redis.call('DEL', KEYS[2]) end
  local deadline = redis.call('HGET', claimsOf(KEYS[4]), ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[3])
  local listed = false
  if deadline then
    ${NOW}
    listed = now <= tonumber(deadline)
  end
  if not listed and not rejection then
    if mine then redis.call('PUBLISH', ARGV[4], ARGV[6]) end
    return 0
  end
elseif not rejection and redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
local ms = tonumber(ARGV[2])
if rejection then
  redis.call('DEL', KEYS[4])
  ms = math.max(ms, redis.call('PTTL', KEYS[1]))
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', string.format('%.0f', ms))
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`);

/**
 * KEYS lease, claims; ARGV claim id, channel, released message. Withdraws the
 * claim, and ends the lease if the claim still holds it.
 */
export const RELEASE = script(`${READERS}
redis.call('HDEL', claimsOf(KEYS[2]), ARGV[1])
if text(KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 0`);

/**
 * KEYS value, lease, tombstone, claims; ARGV tombstone id, tombstone ms,
 * channel, invalidated message. Deletes the value, the lease and the claims
 * (none taken before can store any more), leaves the tombstone (a store
 * without a claim waits it out), tells every instance. It deletes first: a
 * Redis at its maxmemory that evicts nothing refuses only a script's first
 * write (with OOM), so a revocation is still taken and announced there.
 */
export const INVALIDATE = script(`
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1`);

/**
 * KEYS value, lease; ARGV '1' to read the value whatever the lease. What a
 * waiting instance reads: {value or '', 1 when the lease is held else 0}, the
 * value left out while the lease is held unless asked for. A poll leaves it
 * out: a value beside a held lease may be the one the holder is replacing
 * (unusable). A wait told of an answer reads it: it was stored since.
 */
export const PEEK = script(`${READERS}
local held = redis.call('EXISTS', KEYS[2])
if held == 1 and ARGV[1] ~= '1' then return {'', 1} end
return {text(KEYS[1]) or '', held}`);

/** ARGV channel, message. Publishes `message`: how an instance checks that its own subscription is live. */
export const PROBE = script(`return redis.call('PUBLISH', ARGV[1], ARGV[2])`);
