/**
 * Date-times in provider answers, read strictly and the same on every
 * server: RFC 3339 `date-time` (`2019-08-02T17:15:54.256000+00:00`), and
 * the same without an offset (`2019-08-02T17:15:54.256000`, what Python's
 * `isoformat()` writes for a naive time), which is read as UTC, never in the
 * server's own time zone. Anything else is not a date-time: other layouts
 * (`12/31/2099`, `x 2099`) and dates that do not exist (February 30th, month 13,
 * hour 24). A leap second (`:60`, RFC 3339 §5.7), which a `Date` cannot hold,
 * is read as the last millisecond of its minute.
 */
import { z } from 'zod';

/**
 * Full date, `T`, full time with seconds and an optional fraction of any
 * length, then `Z`, a `±hh:mm` offset, or nothing. `T` and `Z` in either
 * case (RFC 3339 §5.6). `\d` is ASCII only without the `u` flag.
 */
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))?$/;

const MINUTE_MS = 60_000;

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/**
 * The instant `text` names, in epoch milliseconds (fractions of a
 * millisecond cut off), or `undefined` when it is not a date-time as this
 * module describes it.
 */
export function dateTimeMs(text: string): number | undefined {
  const match = DATE_TIME.exec(text);
  if (match === null) return undefined;
  const [, y, mo, d, h, mi, s, fraction = '', , sign, offsetHours = '0', offsetMinutes = '0'] = match;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  const offsetHour = Number(offsetHours);
  const offsetMinute = Number(offsetMinutes);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 60 || offsetHour > 23 || offsetMinute > 59) return undefined;
  // setUTCFullYear, unlike Date.UTC, takes years 0-99 as they are.
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  if (second === 60) date.setUTCHours(hour, minute, 59, 999);
  else date.setUTCHours(hour, minute, second, Number(fraction.slice(0, 3).padEnd(3, '0')));
  const offset = (offsetHour * 60 + offsetMinute) * MINUTE_MS;
  return date.getTime() - (sign === '-' ? -offset : offset);
}

/** A string that is a date-time as {@link dateTimeMs} reads it; the string itself is kept. */
export const DateTimeText = z.string().refine((text) => dateTimeMs(text) !== undefined, {
  error: 'expected an RFC 3339 date-time',
});
