/**
 * The one way providers talk HTTP: a keep-alive undici `Pool` per provider,
 * an `AbortSignal` deadline that covers connect, headers and body, a cap on
 * answer size, and no redirects. Everything that is not a clean JSON answer
 * becomes a {@link ProviderFailure}, so callers only see status + JSON.
 */
import { Pool } from 'undici';
import { ProviderFailure } from './types.js';

/** Connection settings shared by the HTTP providers. */
export interface HttpOptions {
  /** Most sockets open to the provider at once. Default 16. */
  readonly connections?: number;
  /** Answers larger than this many bytes are cut off and count as a provider failure. Default 65 536. */
  readonly maxBodyBytes?: number;
  /** How long an idle keep-alive socket stays open, in ms. Default 10 000. */
  readonly keepAliveTimeout?: number;
}

/** A provider answer that parsed as JSON. */
export interface JsonAnswer {
  readonly status: number;
  readonly body: unknown;
}

const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

/** A pool to one provider origin, plus the base path the provider's API lives under. */
export class ProviderHttp {
  readonly #pool: Pool;
  readonly #basePath: string;
  readonly #provider: string;
  readonly #maxBodyBytes: number;

  constructor(provider: string, baseUrl: string, options: HttpOptions = {}) {
    const url = new URL(baseUrl);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TypeError(`${provider}: baseUrl must be an http(s) URL`);
    }
    if (url.username || url.password || url.search || url.hash) {
      throw new TypeError(`${provider}: baseUrl must not carry credentials, a query or a fragment`);
    }
    this.#provider = provider;
    this.#basePath = url.pathname.replace(/\/+$/, '');
    this.#maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    this.#pool = new Pool(url.origin, {
      connections: options.connections ?? 16,
      keepAliveTimeout: options.keepAliveTimeout ?? 10_000,
      pipelining: 1,
    });
  }

  /**
   * GETs `path` (relative to the base URL, query included) and returns the
   * status and parsed JSON body for 2xx and 4xx answers.
   *
   * @throws ProviderFailure for connection errors and the deadline
   *   (`unreachable`, `timeout`), 3xx/5xx/429 (`status`, with `Retry-After`),
   *   and bodies that are too large, not JSON, or not labelled JSON (`invalid_answer`).
   */
  async getJson(path: string, headers: Record<string, string>, signal: AbortSignal): Promise<JsonAnswer> {
    let response: Awaited<ReturnType<Pool['request']>>;
    try {
      response = await this.#pool.request({
        method: 'GET',
        path: this.#basePath + path,
        headers: { accept: 'application/json', ...headers },
        signal,
      });
    } catch (error) {
      throw this.#transportFailure(error, signal);
    }
    const { statusCode: status, headers: responseHeaders, body } = response;
    let text: string;
    try {
      text = await readCapped(body, this.#maxBodyBytes, responseHeaders['content-length']);
    } catch (error) {
      body.destroy();
      if (error instanceof ProviderFailure) throw error;
      throw this.#transportFailure(error, signal);
    }
    if (status >= 500 || status === 429) {
      throw new ProviderFailure(
        'status',
        `${this.#provider} answered ${status}`,
        true,
        parseRetryAfter(responseHeaders['retry-after']),
        status,
      );
    }
    if (status < 200 || (status >= 300 && status < 400)) {
      // 1xx leftovers and redirects: a redirect is never followed (it could send the token elsewhere).
      throw new ProviderFailure('status', `${this.#provider} answered ${status}`, false, undefined, status);
    }
    if (!isJsonContentType(responseHeaders['content-type'])) {
      throw new ProviderFailure(
        'invalid_answer',
        `${this.#provider} answered ${status} without a JSON content type`,
        false,
        undefined,
        status,
      );
    }
    try {
      return { status, body: JSON.parse(text) as unknown };
    } catch {
      throw new ProviderFailure(
        'invalid_answer',
        `${this.#provider} answered ${status} with malformed JSON`,
        false,
        undefined,
        status,
      );
    }
  }

  close(): Promise<void> {
    return this.#pool.close();
  }

  #transportFailure(error: unknown, signal: AbortSignal): ProviderFailure {
    if (signal.aborted)
      return new ProviderFailure('timeout', `${this.#provider} did not answer within the deadline`, false);
    const code = (error as { code?: unknown } | null)?.code;
    return new ProviderFailure(
      'unreachable',
      `${this.#provider} is unreachable${typeof code === 'string' ? ` (${code})` : ''}`,
      true,
    );
  }
}

type HeaderField = string | string[] | undefined;

async function readCapped(body: AsyncIterable<Buffer>, maxBytes: number, contentLength: HeaderField): Promise<string> {
  if (typeof contentLength === 'string' && Number(contentLength) > maxBytes) throw tooLarge(maxBytes);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > maxBytes) throw tooLarge(maxBytes);
    chunks.push(chunk);
  }
  return chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks, size).toString('utf8');
}

function tooLarge(maxBytes: number): ProviderFailure {
  return new ProviderFailure('invalid_answer', `provider answer exceeded ${maxBytes} bytes`, false);
}

function isJsonContentType(value: HeaderField): boolean {
  if (typeof value !== 'string') return false;
  const type = value.split(';', 1)[0]?.trim().toLowerCase() ?? '';
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

/** `Retry-After` as seconds from now: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). */
function parseRetryAfter(value: HeaderField): number | undefined {
  if (typeof value !== 'string') return undefined;
  const trimmed = value.trim();
  if (/^\d{1,9}$/.test(trimmed)) return Number(trimmed);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, (date - Date.now()) / 1000);
}
