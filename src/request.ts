/**
 * Reading one header of a plain {@link CredentialRequest}, repeats included:
 * Node keeps only the first of repeated `Authorization` headers in
 * `headers`, while `rawHeaders` shows every one. Scanning `rawHeaders` also
 * spares Node building the whole `headers` object, which it does lazily.
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
    const raw = req.rawHeaders;
    if (raw === undefined) {
      const header = req.headers[lower];
      return header === undefined || typeof header === 'string' ? header : null;
    }
    let value: string | undefined;
    for (let i = 0; i < raw.length; i += 2) {
      const key = raw[i] as string;
      if (key.length === length && (key === usual || key === lower || key.toLowerCase() === lower)) {
        if (value !== undefined) return null;
        value = raw[i + 1];
      }
    }
    return value;
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
