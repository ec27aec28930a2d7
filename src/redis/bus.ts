/**
 * The tier's messages between instances, on one channel, through a
 * subscriber connection of its own. A message is a kind, a key and the
 * sender's instance id (`i<key>:<id>`), nothing else: the key is the store's
 * digest in base64url, never a credential, and no verdict travels here.
 *
 * Kinds: `a` an answer was stored, `r` a lease ended without one, `i` the
 * key was invalidated; `p<nonce>:<id>` is an instance's probe of its own
 * subscription. Anything else on the channel is ignored.
 *
 * The subscription counts as live only once a probe this instance published
 * comes back through it (after every (re)connection): from then on no
 * invalidation is missed, and at that moment the `onReconnect` listeners
 * drop whatever was cached while it was not live (on the first time too).
 * Until then probes go on: often at first, then one at a time and seldom, so
 * that a Redis that runs no script for a while (`-LOADING` a dataset after a
 * restart, while it already takes `SUBSCRIBE`) is found live once it does.
 */
import { randomBytes } from 'node:crypto';
import { isRefusal, type RedisDriver, unusableClient } from './driver.js';
import { PROBE } from './scripts.js';

/** What a message says about its key. */
export type MessageKind = 'a' | 'r' | 'i';

const MESSAGE = /^([ari])([A-Za-z0-9_-]{43}):([0-9a-f]{16})$/;
const PROBE_MESSAGE = /^p([0-9a-f]{16}):([0-9a-f]{16})$/;
/** Ms between the first probes after one (re)connection, and how many of them. */
const PROBE_INTERVAL_MS = 50;
const MAX_PROBES = 200;
/** Ms between the probes after those, each sent once the one before was answered, until one comes back. */
const SLOW_PROBE_INTERVAL_MS = 1000;

/** The store's key (32 Latin-1 characters) as it appears in Redis keys and messages. */
export function encodeKey(key: string): string {
  return Buffer.from(key, 'latin1').toString('base64url');
}

export function message(kind: MessageKind, encodedKey: string, instance: string): string {
  return `${kind}${encodedKey}:${instance}`;
}

export class RedisBus {
  readonly #instance: string;
  readonly #invalidated = new Set<(key: string) => void>();
  readonly #reconnected = new Set<() => void>();
  /** Listeners waiting for news of one encoded key. */
  readonly #watchers = new Map<string, Set<(kind: MessageKind) => void>>();
  readonly #close: () => void;
  readonly #driver: RedisDriver;
  readonly #channel: string;
  /** The nonce of the probes since the last (re)connection; undefined once one came back. */
  #probe: string | undefined;
  #probeTimer: NodeJS.Timeout | undefined;
  #live = false;
  #closed = false;
  /** Whether the first, frequent probes are being sent (until one comes back, or {@link MAX_PROBES} were sent). */
  #probing = false;
  /**
   * The one wait every `ready()` shares while the subscription is not live: settled (and dropped) once it is, once the
   * bus is closed, or once the probes cannot pass. Shared, so that callers polling `ready()` hold one promise.
   */
  #whenLive: ReadyWait | undefined;
  /** Set while the probes cannot pass (an ACL without the channel, a client in subscriber mode), until live. */
  #refusal: Error | undefined;

  constructor(driver: RedisDriver, channel: string, instance: string) {
    this.#instance = instance;
    this.#driver = driver;
    this.#channel = channel;
    this.#close = driver.subscribe(
      channel,
      (text) => this.#receive(text),
      () => this.#startProbing(),
      () => this.#refused(this.#refusedMessage()),
    );
  }

  /** Calls `listener` with each store key invalidated, here ({@link announce}) or by another instance. */
  onInvalidate(listener: (key: string) => void): () => void {
    this.#invalidated.add(listener);
    return () => this.#invalidated.delete(listener);
  }

  /** Tells this instance's own listeners that `key` was invalidated here (its own messages are not echoed to them). */
  announce(key: string): void {
    for (const listener of this.#invalidated) listener(key);
  }

  /** Calls `listener` each time the subscriber connects again after a break. */
  onReconnect(listener: () => void): () => void {
    this.#reconnected.add(listener);
    return () => this.#reconnected.delete(listener);
  }

  /** Calls `listener` with each message about `encodedKey` until the returned function is called. */
  watch(encodedKey: string, listener: (kind: MessageKind) => void): () => void {
    let listeners = this.#watchers.get(encodedKey);
    if (listeners === undefined) {
      listeners = new Set();
      this.#watchers.set(encodedKey, listeners);
    }
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0 && this.#watchers.get(encodedKey) === listeners) this.#watchers.delete(encodedKey);
    };
  }

  /**
   * Resolves once the subscription is live (at once if it is), or once the bus is closed: no wait outlives it.
   * Rejects when Redis refuses this client's user the channel (an ACL without it), or the client cannot run the
   * probe's script at all ({@link unusableClient}), and while it does.
   */
  ready(): Promise<void> {
    if (this.#live || this.#closed) return Promise.resolve();
    if (this.#refusal !== undefined) return Promise.reject(this.#refusal);
    this.#whenLive ??= readyWait();
    return this.#whenLive.promise;
  }

  /** Settles the shared wait of {@link ready}, if any: resolved without an error, rejected with one. */
  #settleReady(error?: Error): void {
    const wait = this.#whenLive;
    this.#whenLive = undefined;
    if (wait === undefined) return;
    if (error === undefined) wait.resolve();
    else wait.reject(error);
  }

  close(): void {
    this.#closed = true;
    this.#settleReady();
    this.#invalidated.clear();
    this.#reconnected.clear();
    clearInterval(this.#probeTimer);
    this.#probe = undefined;
    this.#close();
  }

  #receive(text: string): void {
    const probe = PROBE_MESSAGE.exec(text);
    if (probe !== null) {
      this.#probed(probe[1] as string, probe[2] as string);
      return;
    }
    const parsed = MESSAGE.exec(text);
    if (parsed === null) return;
    const [, kind, encodedKey, sender] = parsed as unknown as [string, MessageKind, string, string];
    for (const listener of this.#watchers.get(encodedKey) ?? []) listener(kind);
    if (kind !== 'i' || sender === this.#instance) return;
    const key = Buffer.from(encodedKey, 'base64url').toString('latin1');
    for (const listener of this.#invalidated) listener(key);
  }

  /**
   * The app's client is ready (again): probes anew, often, when the subscription is not known live and its first
   * probes are over. A subscriber that connected long before the client (which sends the probes) has run out of them.
   */
  probeIfNotLive(): void {
    if (!this.#live && !this.#closed && !this.#probing) this.#startProbing();
  }

  /**
   * The subscriber (re)connected: probe until a probe comes back, {@link MAX_PROBES} times often, then seldom and
   * never more than one unanswered at a time (a client that queues commands while disconnected holds one); nothing
   * once closed.
   */
  #startProbing(): void {
    if (this.#closed) return;
    this.#live = false;
    const nonce = randomBytes(8).toString('hex');
    this.#probe = nonce;
    clearInterval(this.#probeTimer);
    this.#probing = true;
    let sent = 0;
    let unanswered = 0;
    const send = () => {
      if (this.#probe !== nonce) return;
      if (this.#probing && sent === MAX_PROBES) {
        this.#probing = false;
        clearInterval(this.#probeTimer);
        this.#probeTimer = setInterval(send, SLOW_PROBE_INTERVAL_MS).unref();
      }
      if (!this.#probing && unanswered > 0) return;
      sent++;
      unanswered++;
      const args = [this.#channel, `p${nonce}:${this.#instance}`];
      this.#driver.run(PROBE, [], args).then(
        () => unanswered--,
        (error: unknown) => {
          unanswered--;
          const unusable = isRefusal(error) ? this.#refusedMessage() : unusableClient(error);
          if (unusable !== undefined) this.#refused(unusable);
        },
      );
    };
    this.#probeTimer = setInterval(send, PROBE_INTERVAL_MS).unref();
    send();
  }

  #probed(nonce: string, sender: string): void {
    if (sender !== this.#instance || nonce !== this.#probe) return;
    this.#probe = undefined;
    clearInterval(this.#probeTimer);
    this.#probing = false;
    this.#live = true;
    this.#refusal = undefined;
    for (const listener of this.#reconnected) listener();
    this.#settleReady();
  }

  /** What `ready()` says while Redis refuses this client's user the channel or the probe's script (an ACL). */
  #refusedMessage(): string {
    return `tokengate/redis: Redis refused this client's user the channel ${this.#channel} or the commands the tier runs (NOPERM): grant its ACL user &${this.#channel} and the commands the README lists, or revocations reach no other instance`;
  }

  /**
   * Redis refused this client's user the channel or the probe's script, or the client cannot run a script at all (in
   * subscriber mode, EVALSHA renamed): revocations cannot travel until that changes, so `ready()` says so, in
   * `message`. Redis's own words are left out (they may name a user).
   */
  #refused(message: string): void {
    if (this.#closed || this.#live) return;
    this.#refusal = new Error(message);
    this.#settleReady(this.#refusal);
  }
}

interface ReadyWait {
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
}

function readyWait(): ReadyWait {
  const wait = {} as ReadyWait;
  wait.promise = new Promise<void>((resolve, reject) => {
    wait.resolve = resolve;
    wait.reject = reject;
  });
  return wait;
}
