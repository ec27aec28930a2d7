/**
 * The seal on verdicts stored in Redis (`redisCache({ secret })`): what opens
 * and what does not, hostile values included. Against a real Redis, the same
 * seal is tested in redis.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { VerdictSeal } from '../src/redis/seal.js';

const current = 'current-secret-0123456789abcdef0123456789';
const next = 'next-secret-0123456789abcdef0123456789abcd';
const key = 'tokengate:{abc}:v';
const json = '{"ok":false,"reason":"revoked","until":1}';

describe('VerdictSeal', () => {
  const seal = new VerdictSeal([current]);
  const sealed = seal.seal(key, json);

  it('opens what it sealed, for the same key, and nothing else', () => {
    expect(sealed).toMatch(/^[A-Za-z0-9_-]{43}\./);
    expect(sealed).not.toContain(current);
    expect(seal.open(key, sealed)).toBe(json);
    expect(seal.open('tokengate:{abd}:v', sealed)).toBeUndefined();
    expect(new VerdictSeal([next]).open(key, sealed)).toBeUndefined();
  });

  it('opens with any of its secrets and seals with the first', () => {
    const rotating = new VerdictSeal([next, current]);
    expect(rotating.open(key, sealed)).toBe(json);
    expect(seal.open(key, rotating.seal(key, json))).toBeUndefined();
    expect(new VerdictSeal([next]).open(key, rotating.seal(key, json))).toBe(json);
  });

  it('opens no hostile value', () => {
    const mac = sealed.slice(0, 43);
    const hostile = [
      '',
      json,
      '.',
      mac,
      `${mac}.`,
      `${mac}${json}`,
      `${mac}:${json}`,
      `${mac}.${json} `,
      `${mac}.${json.replace('revoked', 'REVOKED')}`,
      `${mac.slice(0, 42)}.${json}`,
      `${mac}A.${json}`,
      `${'*'.repeat(43)}.${json}`,
      `${'A'.repeat(43)}.${json}`,
      `${mac.slice(0, 40)}===.${json}`,
      `${mac}.${json}`.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')),
      `${'é'.repeat(43)}.${json}`,
    ];
    for (const value of hostile) expect(seal.open(key, value)).toBeUndefined();
  });

  it('opens a MAC only in its canonical spelling', () => {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    // The last of 43 characters carries 2 spare bits; '+' and '/' are base64 for '-' and '_'.
    const withDash = Array.from({ length: 100 }, (_, i) => seal.seal(key, `{"n":${i}}`)).find((value) =>
      /[-_]/.test(value.slice(0, 43)),
    );
    if (withDash === undefined) throw new Error('no MAC with - or _ in 100');
    const last = alphabet.indexOf(sealed[42] ?? '');
    const respelled = [
      `${sealed.slice(0, 42)}${alphabet[last ^ 1]}${sealed.slice(43)}`,
      `${withDash.slice(0, 43).replaceAll('-', '+').replaceAll('_', '/')}${withDash.slice(43)}`,
    ];
    expect(seal.open(key, withDash)).toBeDefined();
    for (const value of respelled) expect(seal.open(key, value)).toBeUndefined();
  });
});
