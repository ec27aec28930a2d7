/**
 * Reading one header of a plain {@link CredentialRequest}: its value is
 * `headers`' (so middleware that sets or removes it before the gate is
 * heard), and `rawHeaders`, when given, tells whether the client sent it
 * more than once: Node keeps only the first of repeated `Authorization`
 * headers in `headers`, while `rawHeaders` shows every one.
 */
import type { CredentialRequest } from './types.js';

/** Reads one header: its value, `undefined` when absent, `null` when sent more than once. */
export type HeaderReader = (req: CredentialRequest) => string | undefined | null;

/** A reader for the header `name` (any case). */
export function headerReader(name: string): HeaderReader {
  const lower = flat(name.toLowerCase());
  // The usual spelling (`Authorization`, `X-Api-Key`) is compared first: toLowerCase() allocates.
  const usual = lower.replace(/(^|-)([a-z])/g, (_, dash: string, letter: string) => dash + letter.toUpperCase());
  const length = lower.length;
  return (req) => {
    const header = req.headers[lower];
    if (header === undefined) return undefined;
    if (typeof header !== 'string') return null;
    const raw = req.rawHeaders;
    if (raw === undefined) return header;
    let sent = false;
    for (let i = 0; i < raw.length; i += 2) {
      const key = raw[i] as string;
      if (key.length === length && (key === usual || key === lower || key.toLowerCase() === lower)) {
        if (sent) return null;
        sent = true;
      }
    }
    return header;
  };
}

/**
 * A flat copy of `text`. The names compared on every request must not be slices of a longer string
 * (`'header:authorization'.slice(7)` is one): V8 compares a slice in its runtime, flattening it each
 * time, which costs more than the rest of a cached request's header read.
 */
function flat(text: string): string {
  return Array.from(text).join('');
}
