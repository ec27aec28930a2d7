/**
 * A credential sent in a request header of its own (`X-Api-Key: <key>`), for a provider's `extract`. Node keeps the
 * first of repeated `Authorization` headers, but joins most other repeated headers with `, `: the repeat is told by
 * the raw headers, and refused, as a repeated `Authorization` is.
 */
import { z } from 'zod';
import { invalidRequest } from '../errors.js';
import { checkOptions, numberOption, optionsObject, shown } from '../options.js';
import { headerReader } from '../request.js';
import type { Credential, CredentialRequest } from '../types.js';

/** A credential found in a header of its own: its value, as sent. */
export interface HeaderCredential extends Credential {
  /** `header:` and the header's name in lowercase (`header:x-api-key`). */
  readonly source: `header:${string}`;
  /** The header's value, exactly as sent. */
  readonly secret: string;
}

/** Options of {@link headerExtractor}. */
export interface HeaderExtractorOptions {
  /**
   * What the whole value must match, anchored or not (`/key_[a-z0-9]{32}/` matches `key_…` alone, never a value
   * holding it; the `m` flag is ignored); any other value is a 400. Default: printable ASCII without space.
   */
  readonly pattern?: RegExp | undefined;
  /** Longest value accepted, in characters; a longer one is a 400. Default 4096, at most 16384. */
  readonly maxLength?: number | undefined;
}

/** A provider's `extract` for one header, with the `source` to declare beside it. */
export interface HeaderExtractor {
  (req: CredentialRequest, realm: string): HeaderCredential | undefined;
  /** `header:` and the header's name in lowercase: the provider's `source`. */
  readonly source: `header:${string}`;
}

/** A header name: an RFC 9110 token. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Printable ASCII without space: no white space, control character or comma a proxy could split or join on. */
const VISIBLE_ASCII = /^[\x21-\x7e]+$/;

const HeaderExtractorOptionsSchema = optionsObject(
  {
    pattern: z
      .instanceof(RegExp, { error: (issue) => `expected a RegExp, got ${shown(issue.input)}` })
      .refine((pattern) => !pattern.global && !pattern.sticky, {
        error: 'expected a RegExp without the g or y flag (test() with either depends on the last match)',
      })
      .optional(),
    maxLength: numberOption(1, { integer: true, max: 16384 }).optional(),
  },
  'an options object ({ pattern, maxLength })',
);

/**
 * Makes the `extract` of a provider whose credential is the value of the header `name` (any case), and its `source`.
 * An absent or empty header is no credential (`undefined`). A header sent more than once, longer than `maxLength`, or
 * whose value does not match `pattern` is a 400 `invalid_request` with the Bearer challenge of the gate's realm, which
 * names the header, never its value.
 *
 * @example
 * const extract = headerExtractor('X-Api-Key', { pattern: /^key_[A-Za-z0-9]{32}$/ });
 * const provider = { name: 'keys', source: extract.source, extract, cacheScope: 'keys', verify };
 * @throws TypeError naming `name` when it is not a header name, or the option that is wrong.
 */
export function headerExtractor(name: string, options: HeaderExtractorOptions = {}): HeaderExtractor {
  if (typeof name !== 'string' || !TOKEN.test(name)) {
    // A string is not shown: it may be the key itself, given where the header's name belongs.
    const got = typeof name === 'string' ? 'a string with a character a header name cannot hold' : shown(name);
    throw new TypeError(`headerExtractor: expected a header name (X-Api-Key), got ${got}`);
  }
  checkOptions(HeaderExtractorOptionsSchema, options, 'headerExtractor');
  const lower = name.toLowerCase();
  const source = `header:${lower}` as const;
  const read = headerReader(lower);
  const pattern = options.pattern === undefined ? VISIBLE_ASCII : wholeValue(options.pattern);
  const maxLength = options.maxLength ?? 4096;
  const extract = (req: CredentialRequest, realm: string): HeaderCredential | undefined => {
    const value = read(req);
    if (value === undefined || value === '') return undefined;
    if (value === null) throw invalidRequest(realm, `Only one ${name} header is allowed`);
    if (value.length > maxLength || !pattern.test(value))
      throw invalidRequest(realm, `The ${name} header is malformed`);
    return { source, secret: value };
  };
  return Object.assign(extract, { source });
}

/** `pattern` matching only a whole value: anchored at both ends, `^` and `$` never at a line's ends within it. */
function wholeValue(pattern: RegExp): RegExp {
  return new RegExp(`^(?:${pattern.source})$`, pattern.flags.replace('m', ''));
}
