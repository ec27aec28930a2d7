/**
 * One way to talk to Redis whichever client the app brings: an ioredis
 * `Redis` or `Cluster`, or a node-redis client or cluster. Only scripts run on the
 * app's client (EVALSHA, with EVAL when the node does not know the script
 * yet); subscriptions run on a connection of the tier's own (`duplicate()`),
 * since a subscribed connection can do nothing else.
 */
import type { Script } from './scripts.js';

/** The part of an ioredis `Redis` or `Cluster` the tier uses. */
export interface IoRedisClient {
  /** EVALSHA: runs a script Redis already holds, by its SHA-1. */
  evalsha(sha: string, numberOfKeys: number, ...keysAndArguments: string[]): Promise<unknown>;
  /** EVAL: runs a script by its source (when the node does not know its SHA-1 yet). */
  eval(script: string, numberOfKeys: number, ...keysAndArguments: string[]): Promise<unknown>;
  /**
   * A new connection with the same options. A `Redis` takes options to override; a `Cluster` takes
   * its startup nodes first (none: its own), then options to override.
   */
  duplicate(first?: unknown, second?: unknown): IoRedisSubscriber;
  /** True on an ioredis `Cluster`, false on a `Redis`. */
  readonly isCluster?: boolean;
  /** Listens for the connection's state: `close` and `reconnecting` (lost), `ready` (back). */
  on(event: 'ready' | 'close' | 'reconnecting', listener: () => void): unknown;
  /** Stops listening, as {@link IoRedisClient.on} started. */
  off(event: 'ready' | 'close' | 'reconnecting', listener: () => void): unknown;
}

/** The tier's own ioredis connection, for its subscription. */
export interface IoRedisSubscriber {
  /** A message on a subscribed channel, the connection ready, or an error. */
  on(event: 'message', listener: (channel: string, message: string) => void): unknown;
  on(event: 'ready', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** SUBSCRIBE to the tier's channel. */
  subscribe(channel: string): Promise<unknown>;
  /** Closes the connection at once. */
  disconnect(): void;
}

/** The part of a node-redis (`redis` package) client or cluster the tier uses. The app connects it. */
export interface NodeRedisClient {
  /** EVALSHA: runs a script Redis already holds, by its SHA-1. */
  evalSha(sha: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  /** EVAL: runs a script by its source (when the node does not know its SHA-1 yet). */
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  /** A new client with the same options, not yet connected: the tier's own, for its subscription. */
  duplicate(): NodeRedisSubscriber;
  /** Listens for the connection's state: `end` and `reconnecting` (lost), `ready` (back). */
  on(event: 'ready' | 'end' | 'reconnecting', listener: () => void): unknown;
  /** Stops listening, as {@link NodeRedisClient.on} started. */
  off(event: 'ready' | 'end' | 'reconnecting', listener: () => void): unknown;
}

/** The tier's own node-redis connection (or cluster), for its subscription. */
export interface NodeRedisSubscriber {
  /** The connection ready, or an error. */
  on(event: 'ready', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** Connects it (the tier does, for its own copy). */
  connect(): Promise<unknown>;
  /** SUBSCRIBE to the tier's channel, `listener` receiving its messages. */
  subscribe(channel: string, listener: (message: string, channel: string) => void): Promise<unknown>;
  /** Closes the connection at once. */
  destroy(): void;
  /** A cluster's pub/sub node, whose client carries the subscription; absent on a client. */
  readonly pubSubNode?: { readonly client: { on(event: 'ready', listener: () => void): unknown } } | undefined;
}

/** A Redis client the tier can use: ioredis (`Redis`, `Cluster`) or node-redis (`createClient`, `createCluster`). */
export type RedisClient = IoRedisClient | NodeRedisClient;

/** What the tier needs from a client. */
export interface RedisDriver {
  /** Runs `script` with `keys` and `args`. */
  run(script: Script, keys: readonly string[], args: readonly string[]): Promise<unknown>;
  /**
   * Subscribes a connection of its own to `channel`: `onMessage` for each
   * message, `onReady` on each (re)connection, `onRefused` when Redis refuses
   * the subscription to the client's user ({@link isRefusal}). Returns its closing function.
   */
  subscribe(
    channel: string,
    onMessage: (message: string) => void,
    onReady: () => void,
    onRefused: (error: unknown) => void,
  ): () => void;
  /**
   * Calls `ready` whenever the app's client is (again) ready, and `lost` whenever it has lost its
   * connection (its commands then wait in the client's queue). Returns a function that stops both.
   */
  onConnection(ready: () => void, lost: () => void): () => void;
}

/** Listens to `events` of `client`: `ready` for its ready event, `lost` for the others. */
function connectionEvents<E extends string>(
  client: {
    on(event: E | 'ready', listener: () => void): unknown;
    off(event: E | 'ready', listener: () => void): unknown;
  },
  lostEvents: readonly E[],
  ready: () => void,
  lost: () => void,
): () => void {
  client.on('ready', ready);
  for (const event of lostEvents) client.on(event, lost);
  return () => {
    client.off('ready', ready);
    for (const event of lostEvents) client.off(event, lost);
  };
}

const ignore = () => {};

/**
 * Whether `error` is Redis refusing the client's user a command, key or channel (an ACL): `NOPERM` for a command
 * sent; from a script, `The user executing the script can't …` (Redis 6.2 and 7.0) or `ACL failure in script`
 * (Redis 7.2 and later).
 */
export function isRefusal(error: unknown): boolean {
  return /(?:^|\s)NOPERM\b|user executing the script can|ACL failure in script/.test(
    String((error as Error | undefined)?.message),
  );
}

/**
 * Why `error` means the app's client can never run the tier's scripts, or undefined when it may pass: a connection in
 * subscriber mode under RESP2 (ioredis refuses the command itself; Redis answers `… allowed in this context`), or a
 * Redis that knows no EVALSHA or EVAL (`rename-command` renamed or disabled it). Redis's own words are left out.
 */
export function unusableClient(error: unknown): string | undefined {
  const text = String((error as Error | undefined)?.message);
  if (/Connection in subscriber mode|allowed in this context/.test(text)) {
    return 'tokengate/redis: the client given to redisCache() is in subscriber mode (it ran SUBSCRIBE), where Redis runs no script: give the tier a client that does not subscribe, or nothing is shared and revocations reach no other instance';
  }
  if (/unknown command [`']eval(?:sha)?[`']/i.test(text)) {
    return 'tokengate/redis: Redis knows no EVALSHA or EVAL (renamed or disabled with rename-command): the tier runs every command as a script, so nothing is shared and revocations reach no other instance';
  }
  return undefined;
}

/** Ms before a node-redis subscriber that could not connect or subscribe is made anew. */
const RESTART_PAUSE_MS = 1000;
/** Longest pause between two tries of a subscription Redis refused (an ACL an administrator has yet to change). */
const MAX_REFUSED_PAUSE_MS = 60_000;

/** The pause before the next try of a subscription after `refusals` refusals in a row: doubling, to a minute. */
function refusedPause(refusals: number): number {
  return Math.min(RESTART_PAUSE_MS * 2 ** Math.min(refusals - 1, 16), MAX_REFUSED_PAUSE_MS);
}

/** Closes a node-redis connection that may already be closed (node-redis then throws). */
function destroy(connection: NodeRedisSubscriber): void {
  try {
    connection.destroy();
  } catch {
    // Already closed: nothing left to close.
  }
}

/** A driver for `client`. @throws TypeError when it is neither an ioredis nor a node-redis client. */
export function driverFor(client: RedisClient): RedisDriver {
  const candidate = (client ?? {}) as Partial<Record<'evalSha' | 'evalsha' | 'duplicate' | 'on', unknown>>;
  const common = typeof candidate.duplicate === 'function' && typeof candidate.on === 'function';
  if (common && typeof candidate.evalSha === 'function') return nodeRedisDriver(client as NodeRedisClient);
  if (common && typeof candidate.evalsha === 'function') return ioRedisDriver(client as IoRedisClient);
  throw new TypeError(
    typeof client === 'string'
      ? 'redisCache: expected an ioredis Redis or Cluster, or a node-redis client, got a string: pass a client, redisCache(new Redis(url))'
      : 'redisCache: expected an ioredis Redis or Cluster, or a node-redis client',
  );
}

/** `evalsha()`, and `evaluate()` when the node answers NOSCRIPT (it restarted, or never saw the script). */
async function withScript(evalsha: () => Promise<unknown>, evaluate: () => Promise<unknown>): Promise<unknown> {
  try {
    return await evalsha();
  } catch (error) {
    if (!String((error as Error | undefined)?.message).startsWith('NOSCRIPT')) throw error;
    return evaluate();
  }
}

function ioRedisDriver(client: IoRedisClient): RedisDriver {
  return {
    run: (script, keys, args) =>
      withScript(
        () => client.evalsha(script.sha, keys.length, ...keys, ...args),
        () => client.eval(script.source, keys.length, ...keys, ...args),
      ),
    subscribe(channel, onMessage, onReady, onRefused) {
      // A `Redis` subscribes again on each `ready` here, its failure caught: ioredis's own resubscription leaves its
      // promise unhandled when the connection drops again before Redis answers, and an unhandled rejection ends a
      // Node process by default. A `Cluster` keeps its own subscriber connections and resubscribes what Redis
      // confirmed; it subscribes again on `ready` too (SUBSCRIBE is idempotent): with `enableOfflineQueue: false`, its
      // first SUBSCRIBE, sent while it connects, is refused.
      // The app's client may connect lazily (`lazyConnect`, on its first command); the subscriber has no command to
      // send before it is connected, so it connects at once. A subscription Redis refused is tried again after a
      // pause that doubles (the ACL may be changed), and a try that then succeeds counts as a (re)connection.
      const resubscribes = client.isCluster !== true;
      const subscriber = resubscribes
        ? client.duplicate({ autoResubscribe: false, lazyConnect: false })
        : client.duplicate([], { lazyConnect: false });
      let closed = false;
      let refusals = 0;
      let retry: NodeJS.Timeout | undefined;
      const subscribe = () => {
        subscriber.subscribe(channel).then(
          () => {
            if (refusals === 0 || closed) return;
            refusals = 0;
            onReady();
          },
          (error: unknown) => {
            if (closed || !isRefusal(error)) return;
            refusals++;
            onRefused(error);
            clearTimeout(retry);
            retry = setTimeout(subscribe, refusedPause(refusals)).unref();
          },
        );
      };
      subscriber.on('error', ignore);
      subscriber.on('ready', () => {
        subscribe();
        onReady();
      });
      // Its only subscription is `channel`: every message is one of ours.
      subscriber.on('message', (_channel, message) => onMessage(message));
      if (!resubscribes) subscribe();
      return () => {
        closed = true;
        clearTimeout(retry);
        subscriber.disconnect();
      };
    },
    onConnection: (ready, lost) => connectionEvents(client, ['close', 'reconnecting'], ready, lost),
  };
}

function nodeRedisDriver(client: NodeRedisClient): RedisDriver {
  return {
    run: (script, keys, args) => {
      const options = { keys: [...keys], arguments: [...args] };
      return withScript(
        () => client.evalSha(script.sha, options),
        () => client.eval(script.source, options),
      );
    },
    subscribe(channel, onMessage, onReady, onRefused) {
      // A client is subscribed again by node-redis after each reconnection, then says 'ready'. A cluster says nothing
      // itself: its subscription is live once SUBSCRIBE has answered, and again each time the client of its pub/sub
      // node is ready (node-redis has then subscribed it again). A subscriber that could not connect or subscribe (a
      // cluster that cannot reach a node does not try again) is made anew after a pause. Once closed, no connection is
      // left open, not even one a cluster was still making.
      let closed = false;
      let subscriber: NodeRedisSubscriber | undefined;
      let pause: NodeJS.Timeout | undefined;
      /** Refusals in a row: a subscriber Redis refused is made anew after a pause that doubles (see refusedPause). */
      let refusals = 0;
      const start = () => {
        const current = client.duplicate();
        subscriber = current;
        current.on('error', ignore);
        current.on('ready', onReady);
        current
          .connect()
          .then(() => {
            if (closed) return destroy(current);
            return current.subscribe(channel, onMessage).then(() => {
              refusals = 0;
              if (closed || current.pubSubNode === undefined) return;
              current.pubSubNode.client.on('ready', onReady);
              onReady();
            });
          })
          .catch((error: unknown) => {
            if (closed) return;
            const refused = isRefusal(error);
            if (refused) {
              refusals++;
              onRefused(error);
            }
            destroy(current);
            pause = setTimeout(start, refused ? refusedPause(refusals) : RESTART_PAUSE_MS).unref();
          });
      };
      start();
      return () => {
        closed = true;
        clearTimeout(pause);
        if (subscriber !== undefined) destroy(subscriber);
      };
    },
    onConnection: (ready, lost) => connectionEvents(client, ['end', 'reconnecting'], ready, lost),
  };
}
