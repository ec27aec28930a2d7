/**
 * A `Retry-After` header's value as the seconds it asks to wait: what an HTTP provider's failure carries, whichever
 * form the provider wrote it in.
 */

/** The three forms of an HTTP-date (RFC 9110 §5.6.7), all GMT: IMF-fixdate, the obsolete RFC 850 form, asctime. */
const HTTP_DATES = [
  /^[A-Z][a-z]{2}, (?<d>\d{2}) (?<mon>[A-Z][a-z]{2}) (?<y>\d{4}) (?<h>\d{2}):(?<m>\d{2}):(?<s>\d{2}) GMT$/,
  /^[A-Z][a-z]{5,8}, (?<d>\d{2})-(?<mon>[A-Z][a-z]{2})-(?<yy>\d{2}) (?<h>\d{2}):(?<m>\d{2}):(?<s>\d{2}) GMT$/,
  /^[A-Z][a-z]{2} (?<mon>[A-Z][a-z]{2}) (?<d>[ \d]\d) (?<h>\d{2}):(?<m>\d{2}):(?<s>\d{2}) (?<y>\d{4})$/,
];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
/** Longest `Retry-After` read, in seconds: a longer one is clamped to it (and then to `maxRetryAfter`). */
export const MAX_RETRY_AFTER_S = 1e9;

/**
 * `Retry-After` (RFC 9110 §10.2.3) in seconds from now: delay-seconds or an HTTP-date; anything else (none, a
 * repeated header as Node gives it, a date that does not exist) is undefined.
 */
export function retryAfterSeconds(value: string | readonly string[] | null | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Math.min(Number(trimmed), MAX_RETRY_AFTER_S);
  const date = parseHttpDate(trimmed);
  return date === undefined ? undefined : Math.min(Math.max(0, (date - Date.now()) / 1000), MAX_RETRY_AFTER_S);
}

/** An HTTP-date in ms since the epoch; undefined when it is none, or names a day or time that does not exist. */
function parseHttpDate(text: string): number | undefined {
  const fields = HTTP_DATES.map((form) => form.exec(text)?.groups).find((groups) => groups !== undefined);
  if (fields === undefined) return undefined;
  const month = MONTHS.indexOf(fields.mon ?? '');
  const [day, hours, minutes, seconds] = [
    Number(fields.d),
    Number(fields.h),
    Number(fields.m),
    Number(fields.s),
  ] as const;
  let year = Number(fields.y);
  if (fields.yy !== undefined) {
    // The latest year with those two digits that is not more than 50 years ahead (RFC 9110 §5.6.7).
    const latest = new Date().getUTCFullYear() + 50;
    year = latest - ((latest - Number(fields.yy)) % 100);
  }
  const daysInMonth = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  if (month < 0 || day < 1 || day > daysInMonth || hours > 23 || minutes > 59 || seconds > 60) return undefined;
  return Date.UTC(year, month, day, hours, minutes, seconds);
}
