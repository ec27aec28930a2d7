/**
 * The Lua scripts of the Redis tier. Each runs atomically on the node that
 * holds its keys; a key's value, lease and tombstone share one hash tag, so
 * they are always on one node (Redis Cluster included).
 *
 * Keys of a store key K (its digest in base64url): `<prefix>{K}:v` the
 * verdict (JSON), `<prefix>{K}:l` the lease (the holder's claim id),
 * `<prefix>{K}:t` the tombstone (a random id per invalidation). Messages on
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

/** KEYS value. The stored value, or nil. */
export const GET = script(`return redis.call('GET', KEYS[1])`);

/** Lua: `now`, Redis's own clock in ms (scripts replicate their effects, Redis 5 and later). */
const NOW = `local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)`;

/**
 * KEYS value, lease, tombstone; ARGV replace ('1' or ''), claim id, lease ms.
 * {'s', value} when a value is stored (unless replace); else {'c', tombstone
 * id or '', Redis's time in ms} when the lease was free and is now this
 * claim's; else {'h'}.
 */
export const LEASE = script(`
if ARGV[1] == '' then
  local value = redis.call('GET', KEYS[1])
  if value then return {'s', value} end
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  ${NOW}
  return {'c', redis.call('GET', KEYS[3]) or '', string.format('%.0f', now)}
end
return {'h'}`);

/**
 * KEYS value, lease, tombstone; ARGV JSON, ms to live, claim id, tombstone id
 * seen when the claim was taken, channel, answered message, released message,
 * Redis's time when the claim was taken, longest age of a claim that stores.
 * Ends the claim's lease; stores the value only when no invalidation came
 * since the claim was taken (the tombstone is the one it saw) and the claim
 * is younger, on Redis's clock, than a tombstone lives: an invalidation after
 * the claim leaves a tombstone that outlives it. 1 stored, 0 not. Without a
 * claim (ARGV 3, 4 and 8 empty), stores only while the key has no tombstone.
 */
export const SET = script(`
local tombstone = redis.call('GET', KEYS[3]) or ''
local mine = redis.call('GET', KEYS[2]) == ARGV[3]
if mine then redis.call('DEL', KEYS[2]) end
local stale = false
if ARGV[8] ~= '' then
  ${NOW}
  stale = now - tonumber(ARGV[8]) >= tonumber(ARGV[9])
end
if stale or tombstone ~= ARGV[4] then
  if mine then redis.call('PUBLISH', ARGV[5], ARGV[7]) end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1`);

/** KEYS lease; ARGV claim id, channel, released message. Ends the lease if the claim still holds it. */
export const RELEASE = script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 0`);

/**
 * KEYS value, lease, tombstone; ARGV tombstone id, tombstone ms, channel,
 * invalidated message. Deletes the value and the lease (a claim taken before
 * can no longer store), leaves the tombstone, tells every instance.
 */
export const INVALIDATE = script(`
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1`);

/**
 * KEYS value, lease. What a waiting instance polls: {'', 1} while the lease is
 * held, else {value or '', 0}. A value is read only once the lease is free: the
 * holder ends it as it stores, and a value beside a held lease is the one the
 * holder is replacing (unusable), not its answer.
 */
export const PEEK = script(`
if redis.call('EXISTS', KEYS[2]) == 1 then return {'', 1} end
return {redis.call('GET', KEYS[1]) or '', 0}`);

/** ARGV channel, message. Publishes `message`: how an instance checks that its own subscription is live. */
export const PROBE = script(`return redis.call('PUBLISH', ARGV[1], ARGV[2])`);
