/**
 * HTTP clients for flood tests: a keep-alive pool bound to one loopback
 * address (so the gate sees it as one client), single requests that report
 * what a client sees of a gate's answer, and a flood of never-seen Bearer
 * tokens from many connections. Every loop here is bounded in count and time.
 */
import { randomUUID } from 'node:crypto';
import { Pool } from 'undici';

/** What a client sees of one answer. */
export interface Answer {
  readonly status: number;
  /** `error` of a JSON error body (the test app's error handler), or the `subject` of a 200. */
  readonly code: string | undefined;
  readonly subject: string | undefined;
  readonly retryAfter: string | undefined;
}

/** A keep-alive pool to `url` whose sockets all come from `localAddress`. */
export function clientFrom(url: string, localAddress: string, connections: number): Pool {
  return new Pool(url, { connections, pipelining: 1, localAddress, headersTimeout: 10_000, bodyTimeout: 10_000 });
}

/** `GET /hello` with `Authorization: Bearer <token>`. */
export async function ask(pool: Pool, token: string): Promise<Answer> {
  const res = await pool.request({ method: 'GET', path: '/hello', headers: { authorization: `Bearer ${token}` } });
  const body = (await res.body.json()) as { error?: string; subject?: string };
  const retryAfter = res.headers['retry-after'];
  return {
    status: res.statusCode,
    code: body.error,
    subject: body.subject,
    retryAfter: Array.isArray(retryAfter) ? retryAfter.join(',') : retryAfter,
  };
}

/** What a flood saw. */
export interface FloodReport {
  readonly requests: number;
  /** Answers 401 (the provider rejected the token). */
  readonly rejected: number;
  /** Answers 503 `overloaded` with `Retry-After: 1`. */
  readonly overloaded: number;
  /** Every other answer, as `status code`, and failed requests as `error <message>`. */
  readonly other: readonly string[];
}

export interface Flood {
  /** Resolves once the first `overloaded` answer arrived (the wait is full), or after `withinMs` (false). */
  overloadedSeen(withinMs: number): Promise<boolean>;
  /** Stops every loop after its current request and resolves with what they saw. */
  stop(): Promise<FloodReport>;
}

/**
 * Starts `connections` loops on `pool`, each sending a new random token as
 * soon as its previous answer arrived, until stopped, `maxRequests` in all
 * or `maxMs` have passed.
 */
export function startFlood(pool: Pool, connections: number, limits: { maxRequests: number; maxMs: number }): Flood {
  const endAt = performance.now() + limits.maxMs;
  let stopped = false;
  let requests = 0;
  let rejected = 0;
  let overloaded = 0;
  const other: string[] = [];
  const onOverloaded: Array<() => void> = [];
  const loop = async () => {
    while (!stopped && requests < limits.maxRequests && performance.now() < endAt) {
      requests++;
      try {
        const answer = await ask(pool, `flood-${randomUUID()}`);
        if (answer.status === 401) rejected++;
        else if (answer.status === 503 && answer.code === 'overloaded' && answer.retryAfter === '1') {
          overloaded++;
          for (const resolve of onOverloaded.splice(0)) resolve();
        } else other.push(`${answer.status} ${answer.code}`);
      } catch (error) {
        other.push(`error ${(error as Error).message}`);
      }
    }
  };
  const loops = Promise.all(Array.from({ length: connections }, loop));
  return {
    overloadedSeen(withinMs) {
      if (overloaded > 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), withinMs);
        onOverloaded.push(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
    },
    async stop() {
      stopped = true;
      await loops;
      return { requests, rejected, overloaded, other };
    },
  };
}
