/**
 * Provider date-times read strictly: RFC 3339 date-times, and the same
 * without an offset read as UTC; every other layout and every date that does
 * not exist is refused, by `dateTimeMs` and by the Partoo answer schema.
 */
import { describe, expect, it } from 'vitest';
import { DateTimeText, dateTimeMs } from '../src/providers/date-time.js';
import { CheckTokenAnswer } from '../src/providers/partoo.js';

/** Accepted date-times and the instant each names, as `toISOString()` writes it. */
const ACCEPTED: ReadonlyArray<readonly [string, string]> = [
  ['2099-08-02T19:15:54.256000+00:00', '2099-08-02T19:15:54.256Z'],
  ['2099-08-02T19:15:54.256000', '2099-08-02T19:15:54.256Z'],
  ['2099-08-02T19:15:54Z', '2099-08-02T19:15:54.000Z'],
  ['2099-08-02t19:15:54z', '2099-08-02T19:15:54.000Z'],
  ['2099-08-02T19:15:54', '2099-08-02T19:15:54.000Z'],
  ['2099-08-02T21:15:54.256+02:00', '2099-08-02T19:15:54.256Z'],
  ['2099-08-02T14:45:54.256-04:30', '2099-08-02T19:15:54.256Z'],
  ['2099-08-02T00:30:00+01:00', '2099-08-01T23:30:00.000Z'],
  ['2099-12-31T23:59:59-00:00', '2099-12-31T23:59:59.000Z'],
  ['2099-08-02T19:15:54.2Z', '2099-08-02T19:15:54.200Z'],
  ['2099-08-02T19:15:54.25Z', '2099-08-02T19:15:54.250Z'],
  // Fractions of any length; what is below a millisecond is cut off, never rounded up.
  ['2099-08-02T19:15:54.256999999999999999Z', '2099-08-02T19:15:54.256Z'],
  ['2099-08-02T19:15:54.999999', '2099-08-02T19:15:54.999Z'],
  ['2024-02-29T00:00:00Z', '2024-02-29T00:00:00.000Z'],
  ['2000-02-29T00:00:00Z', '2000-02-29T00:00:00.000Z'],
  ['2099-04-30T23:59:59Z', '2099-04-30T23:59:59.000Z'],
  ['0099-01-01T00:00:00Z', '0099-01-01T00:00:00.000Z'],
  ['9999-12-31T23:59:59.999+00:00', '9999-12-31T23:59:59.999Z'],
  // A leap second (RFC 3339 §5.7) is the last millisecond of its minute, whatever its fraction.
  ['2016-12-31T23:59:60Z', '2016-12-31T23:59:59.999Z'],
  ['2016-12-31T23:59:60.5Z', '2016-12-31T23:59:59.999Z'],
  ['2017-01-01T00:59:60+01:00', '2016-12-31T23:59:59.999Z'],
];

/** Strings that are not date-times; `Date.parse` takes most of them. */
const REFUSED: readonly string[] = [
  'x 2099',
  '12/31/2099',
  'Sun, 02 Aug 2099 19:15:54 GMT',
  '2099',
  '2099-08-02',
  '2099-08-02T19:15Z',
  '2099-08-02 19:15:54Z',
  '2099-02-30T00:00:00Z',
  '2099-02-29T00:00:00Z',
  '2100-02-29T00:00:00Z',
  '2099-04-31T00:00:00Z',
  '2099-13-01T00:00:00Z',
  '2099-00-10T00:00:00Z',
  '2099-08-00T00:00:00Z',
  '2099-08-32T00:00:00Z',
  '2099-08-02T24:00:00Z',
  '2099-08-02T23:60:00Z',
  '2099-08-02T23:59:61Z',
  '2099-08-02T19:15:54.Z',
  '2099-08-02T19:15:54,256Z',
  '2099-08-02T19:15:54+0000',
  '2099-08-02T19:15:54+00',
  '2099-08-02T19:15:54+24:00',
  '2099-08-02T19:15:54+01:60',
  '2099-08-02T19:15:54 +00:00',
  ' 2099-08-02T19:15:54Z',
  '2099-08-02T19:15:54Z\n',
  '2099-08-02T19:15:54.256000+00:00 ',
  '+002099-08-02T19:15:54Z',
  '99-08-02T19:15:54Z',
  '２０９９-08-02T19:15:54Z',
  '2099-W31-7T19:15:54Z',
  '2099-214T19:15:54Z',
  '2099-8-2T19:15:54Z',
  '20990802T191554Z',
  '',
  'Infinity',
  'null',
];

describe('dateTimeMs', () => {
  it.each(ACCEPTED)('reads %j as %s', (text, instant) => {
    const ms = dateTimeMs(text);
    expect(ms).toBeTypeOf('number');
    expect(new Date(ms as number).toISOString()).toBe(instant);
    expect(DateTimeText.safeParse(text)).toEqual({ success: true, data: text });
  });

  it.each(REFUSED)('refuses %j', (text) => {
    expect(dateTimeMs(text)).toBeUndefined();
    expect(DateTimeText.safeParse(text).success).toBe(false);
  });
});

describe('CheckTokenAnswer dates', () => {
  const answer = {
    status: 'valid',
    expiration_date: '2099-08-02T19:15:54.256000+00:00',
    generated_by: '5309c3a237bbc544d8e26737',
    creation_date: '2019-08-01T17:15:54.256000',
    consumption_date: null,
  };

  it('takes the documented forms, null and absent dates, and keeps the strings as they came', () => {
    expect(CheckTokenAnswer.parse(answer)).toEqual(answer);
    expect(CheckTokenAnswer.safeParse({ status: 'valid' }).success).toBe(true);
  });

  it.each(
    ['expiration_date', 'creation_date', 'consumption_date'].flatMap((field) =>
      REFUSED.map((text) => [field, text] as const),
    ),
  )('refuses an answer whose %s is %j', (field, text) => {
    expect(CheckTokenAnswer.safeParse({ ...answer, [field]: text }).success).toBe(false);
  });
});
