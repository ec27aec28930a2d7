/**
 * Where an introspection provider sends its requests: the configured
 * endpoint, or the `introspection_endpoint` that the issuer's authorization
 * server metadata names (RFC 8414), found on first use and kept. A discovery
 * that fails decides nothing: it is a {@link ProviderFailure} for the
 * verifications that waited for it, and the next verification tries again.
 * A discovery serves every verification that joins it, each until its own
 * deadline; it is cancelled once none of them waits, and once the first of
 * them has given up, later verifications start another. The first discovery
 * to find the endpoint serves the waiters of every other, which are cancelled.
 */
import { z } from 'zod';
import { type Cancellation, ManualCancellation } from '../cancellation.js';
import { type HttpOptions, type JsonAnswer, ProviderHttp } from '../http.js';
import { isSecureUrl } from '../options.js';
import { ProviderFailure } from '../provider-failure.js';

/**
 * The part of an authorization server metadata document (RFC 8414 §2) that is read. The list of client
 * authentication methods is read only when it is a list of strings: anything else says nothing.
 */
const ServerMetadata = z.object({
  issuer: z.string(),
  introspection_endpoint: z.string().optional(),
  introspection_endpoint_auth_methods_supported: z.array(z.string()).optional().catch(undefined),
});

/** Largest metadata document read, in bytes, unless the provider's `maxBodyBytes` (sized for its answers) is larger. */
const MAX_METADATA_BYTES = 256 * 1024;

/** An endpoint's pool, and the path (query included) to request on it. */
interface Target {
  readonly http: ProviderHttp;
  readonly path: string;
}

/**
 * The metadata documents of `issuer`, as paths on its origin, in the order
 * they are tried: RFC 8414 §3.1 (the well-known part inserted before the
 * issuer's path, without its terminating `/`), then `openid-configuration`,
 * inserted the same way (RFC 8414 §5) and, for an issuer with a path,
 * appended to it as OpenID Connect Discovery 1.0 §4 does.
 */
function metadataLocations(issuer: string): string[] {
  const path = new URL(issuer).pathname.replace(/\/+$/, '');
  const inserted = [`/.well-known/oauth-authorization-server${path}`, `/.well-known/openid-configuration${path}`];
  return path === '' ? inserted : [...inserted, `${path}/.well-known/openid-configuration`];
}

/** Introspection requests' target: fixed, or discovered once through the issuer's metadata. */
export class IntrospectionTarget {
  readonly #name: string;
  readonly #options: HttpOptions;
  readonly #pools = new Map<string, ProviderHttp>();
  readonly #issuer: string | undefined;
  readonly #insecure: boolean;
  /**
   * The client authentication method the provider uses, as RFC 8414 names it (`client_secret_basic`), which a
   * document listing the methods its introspection endpoint supports must list; undefined: not checked.
   */
  readonly #authMethod: string | undefined;
  /** The pool that fetches the issuer's metadata documents, under their own size cap. */
  #metadataHttp: ProviderHttp | undefined;
  #target: Target | undefined;
  #discovering: Discovery | undefined;
  /** Every discovery under way: the first to find the target settles the others with it. */
  readonly #running = new Set<Discovery>();
  #closed = false;

  /**
   * `endpoint` when given, else `issuer` (both checked by the provider's option schema); `insecure` takes a
   * discovered endpoint over plain http on any host; `authMethod` is the client authentication the provider
   * uses, which a discovered endpoint must support when its metadata lists what it supports (undefined: any).
   */
  constructor(
    name: string,
    options: HttpOptions,
    where: {
      endpoint?: string | undefined;
      issuer?: string | undefined;
      insecure: boolean;
      authMethod: string | undefined;
    },
  ) {
    this.#name = name;
    this.#options = options;
    this.#insecure = where.insecure;
    this.#authMethod = where.authMethod;
    if (where.endpoint !== undefined) this.#target = this.#targetAt(new URL(where.endpoint));
    else this.#issuer = where.issuer;
  }

  /** The target, or the discovery that finds it (shared by the verifications that wait for it, each until `cancellation`). */
  get(cancellation: Cancellation): Target | Promise<Target> {
    if (this.#target !== undefined) return this.#target;
    if (cancellation.aborted) return Promise.reject(timedOut(this.#name));
    let discovery = this.#discovering;
    if (discovery === undefined || discovery.retired) {
      const started = new Discovery(this.#name, (shared) => this.#discover(shared));
      discovery = started;
      this.#discovering = started;
      this.#running.add(started);
      started.found.then(
        (target) => {
          this.#target = target;
          for (const other of this.#running) if (other !== started) other.supersede(target);
          this.#running.clear();
        },
        () => {
          this.#running.delete(started);
          if (this.#discovering === started) this.#discovering = undefined;
        },
      );
    }
    return discovery.join(cancellation);
  }

  close(): Promise<void> {
    this.#closed = true;
    const pools = [...this.#pools.values(), ...(this.#metadataHttp === undefined ? [] : [this.#metadataHttp])];
    return Promise.all(pools.map((http) => http.close())).then(() => undefined);
  }

  #targetAt(url: URL): Target {
    if (this.#closed) throw new ProviderFailure('unreachable', `${this.#name} is closed`);
    let http = this.#pools.get(url.origin);
    if (http === undefined) {
      http = new ProviderHttp(this.#name, url.origin, this.#options);
      this.#pools.set(url.origin, http);
    }
    return { http, path: url.pathname + url.search };
  }

  /**
   * The endpoint named by the first metadata document, in the order of {@link metadataLocations}, that names
   * this issuer and an introspection endpoint. A document naming another issuer is not used (RFC 8414 §3.3), and
   * the next location is tried.
   */
  async #discover(cancellation: Cancellation): Promise<Target> {
    const issuer = this.#issuer as string;
    const http = this.#metadataPool(issuer);
    let otherIssuer: { at: string; named: string } | undefined;
    const tried: string[] = [];
    for (const location of metadataLocations(issuer)) {
      const answer = await this.#fetch(http, location, cancellation);
      const metadata = readMetadata(answer);
      if (metadata?.introspection_endpoint === undefined) {
        tried.push(`${location} (${unusable(answer, metadata)})`);
        continue;
      }
      if (metadata.issuer !== issuer) {
        otherIssuer ??= { at: location, named: metadata.issuer };
        continue;
      }
      const methods = metadata.introspection_endpoint_auth_methods_supported;
      const method = this.#authMethod;
      if (method !== undefined && methods !== undefined && methods.length > 0 && !methods.includes(method)) {
        // The client secret is not sent where the server says it would not be read.
        throw new ProviderFailure(
          'misconfigured',
          `${this.#name} metadata at ${location} lists no ${method} for its introspection endpoint (it lists ${methods.slice(0, 8).map(shownMethod).join(', ')}): set clientAuth to one it lists`,
        );
      }
      return this.#targetAt(this.#endpointUrl(metadata.introspection_endpoint, location));
    }
    if (otherIssuer !== undefined) {
      throw new ProviderFailure(
        'invalid_answer',
        `${this.#name} metadata at ${otherIssuer.at} names another issuer, ${shownIssuer(otherIssuer.named)}, where ${issuer} was expected (RFC 8414 §3.3: identical, a terminating / included): check issuer`,
      );
    }
    throw new ProviderFailure(
      'invalid_answer',
      `${this.#name} found no metadata naming an introspection_endpoint for issuer ${issuer}, at ${tried.join(', ')}: check issuer`,
    );
  }

  /** The pool for the issuer's metadata: its own, so that a `maxBodyBytes` sized for introspection answers holds a document. */
  #metadataPool(issuer: string): ProviderHttp {
    if (this.#closed) throw new ProviderFailure('unreachable', `${this.#name} is closed`);
    this.#metadataHttp ??= new ProviderHttp(this.#name, new URL(issuer).origin, {
      ...this.#options,
      maxBodyBytes: Math.max(this.#options.maxBodyBytes ?? 0, MAX_METADATA_BYTES),
    });
    return this.#metadataHttp;
  }

  /**
   * The answer at `location`; its status alone when it is no document (3xx, 4xx, not JSON): the next location is
   * tried. A server that is down (unreachable, past the deadline, 5xx, 429, too large) fails the discovery.
   */
  async #fetch(http: ProviderHttp, location: string, cancellation: Cancellation): Promise<JsonAnswer> {
    try {
      return await http.getJson(location, {}, cancellation);
    } catch (failure) {
      const status = failure instanceof ProviderFailure ? failure.upstreamStatus : undefined;
      if (status !== undefined && status < 500 && status !== 429) return { status, body: undefined };
      throw failure;
    }
  }

  /**
   * The discovered endpoint as a URL: absolute, no credentials or fragment, https (or http to a loopback host,
   * or to any host when `insecure`), and never http for an https issuer.
   */
  #endpointUrl(value: string, location: string): URL {
    const url = URL.canParse(value) ? new URL(value) : undefined;
    const issuerHttps = new URL(this.#issuer as string).protocol === 'https:';
    const usable =
      url !== undefined &&
      (url.protocol === 'https:' ||
        (url.protocol === 'http:' && !issuerHttps && (this.#insecure || isSecureUrl(url)))) &&
      url.username === '' &&
      url.password === '' &&
      url.hash === '';
    if (!usable) {
      throw new ProviderFailure(
        'invalid_answer',
        `${this.#name} metadata at ${location} names an introspection_endpoint it may not use (https without credentials or fragment; http only for an http issuer, to a loopback host unless allowInsecureRequests)`,
      );
    }
    return url;
  }
}

/**
 * One fetch of the issuer's metadata and the verifications waiting for it, each until its own
 * deadline. It runs under a cancellation of its own, cancelled once every waiter has given up before
 * it ended. It is retired (later verifications start another) once its first waiter has given up, so
 * that no fetch outlives the deadlines of the verifications that joined it within its first one's.
 */
class Discovery {
  readonly found: Promise<Target>;
  readonly #name: string;
  readonly #cancellation = new ManualCancellation();
  #found!: (target: Target) => void;
  #joined = 0;
  #waiting = 0;
  #ended = false;
  #retired = false;

  constructor(name: string, discover: (cancellation: Cancellation) => Promise<Target>) {
    this.#name = name;
    this.found = new Promise<Target>((resolve, reject) => {
      this.#found = resolve;
      discover(this.#cancellation).then(resolve, reject);
    });
    const end = () => {
      this.#ended = true;
    };
    this.found.then(end, end);
  }

  /** Another discovery found `target`: this one's waiters take it, and its own fetch is cancelled. */
  supersede(target: Target): void {
    this.#found(target);
    if (this.#ended) return;
    this.#ended = true;
    this.#cancellation.cancel();
  }

  /** Whether new verifications should start a discovery of their own instead of joining this one. */
  get retired(): boolean {
    return this.#retired;
  }

  /** The discovery's target for one waiter, which stops waiting when `cancellation` (not aborted yet) does. */
  join(cancellation: Cancellation): Promise<Target> {
    const first = this.#joined++ === 0;
    this.#waiting++;
    return new Promise<Target>((resolve, reject) => {
      let waiting = true;
      const leave = () => {
        const was = waiting;
        waiting = false;
        if (was) this.#waiting--;
        return was;
      };
      const onCancel = () => {
        if (!leave()) return;
        if (first) this.#retired = true;
        reject(timedOut(this.#name));
        if (this.#waiting === 0 && !this.#ended) {
          this.#ended = true;
          this.#cancellation.cancel();
        }
      };
      cancellation.onCancel(onCancel);
      this.found.then(
        (target) => {
          if (leave()) cancellation.offCancel(onCancel);
          resolve(target);
        },
        (failure: unknown) => {
          if (leave()) cancellation.offCancel(onCancel);
          reject(failure);
        },
      );
    });
  }
}

/**
 * An issuer a metadata document names, as an error shows it: a public identifier, cut at 200 characters and quoted as
 * printable ASCII, every other character a `\u` escape. JSON alone leaves line separators (U+2028, U+0085), C1
 * controls and bidi overrides as they are: a log viewer or terminal could take them for a line break or an escape.
 */
function shownIssuer(issuer: string): string {
  const quoted = JSON.stringify(issuer.length > 200 ? issuer.slice(0, 200) : issuer);
  const ascii = quoted.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return issuer.length > 200 ? `${ascii.slice(0, -1)}…"` : ascii;
}

/** A method name from a metadata document as an error shows it: a short token, else nothing of it. */
function shownMethod(method: string): string {
  return /^[\w.:-]{1,64}$/.test(method) ? method : '(a name not shown)';
}

function timedOut(name: string): ProviderFailure {
  return new ProviderFailure('timeout', `${name} did not answer within the deadline`);
}

/**
 * Why an answer is no document naming an introspection endpoint, for the cause of a failed discovery: its status, or,
 * for a 200, that it is not JSON (a page a catch-all route serves), not a metadata document (no `issuer`), or one
 * without `introspection_endpoint`.
 */
function unusable(answer: JsonAnswer, metadata: z.infer<typeof ServerMetadata> | undefined): string {
  if (answer.status !== 200) return String(answer.status);
  if (answer.body === undefined) return '200, not JSON';
  return metadata === undefined ? '200, not a metadata document' : 'no introspection_endpoint';
}

/** A metadata document from a 200 answer, or undefined for any other answer. */
function readMetadata(answer: JsonAnswer): z.infer<typeof ServerMetadata> | undefined {
  if (answer.status !== 200) return undefined;
  const parsed = ServerMetadata.safeParse(answer.body);
  return parsed.success ? parsed.data : undefined;
}
