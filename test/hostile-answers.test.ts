/**
 * Hostile provider answers: wrong JSON, wrong types, missing or
 * extra fields, huge and slow-drip bodies, wrong content types and
 * redirects. Anything that is not a well-formed answer fails closed: 503,
 * never a pass and never a 401. Answers come from a tiny server whose every
 * reply the test writes (test/support/answer-server.ts).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type AuthContext,
  AuthError,
  createGate,
  type Gate,
  type GateEvent,
  onlineOrNot,
  partoo,
} from '../src/index.js';
import { type Answer, type AnswerServer, reply, startAnswerServer } from './support/answer-server.js';
import { gatedApp } from './support/gated-app.js';

const API_KEY = 'api-key-for-tests';
const TOKEN = 'SECRETbearer0123';
const CONN = { user_id: 'user-1', token: 'SECRETconn0123' };
const TIMEOUT = 400;

let provider: AnswerServer;
let elsewhere: AnswerServer;
let gate: Gate;

// Every test gets its own servers and gate: no connection, cached answer or count carries over.
beforeEach(async () => {
  provider = await startAnswerServer();
  // A redirect target that would happily answer: it must never be asked.
  elsewhere = await startAnswerServer();
  elsewhere.answer = (req, res) =>
    reply(res, 200, req.url?.includes('check_token') ? JSON.stringify(partooBody()) : JSON.stringify(verifyBody()));
  gate = createGate({
    providers: [onlineOrNot({ baseUrl: provider.url }), partoo({ apiKey: API_KEY, baseUrl: `${provider.url}/v2` })],
    timeout: TIMEOUT,
    // Off, so that every case is judged on its own answer (an open breaker would answer 503 for any).
    retry: false,
    breaker: false,
  });
});
afterEach(async () => {
  await gate.close();
  await provider.close();
  await elsewhere.close();
});

// ---- well-formed answers, as documented by OnlineOrNot API: Tokens (verify, permissions) and Partoo API: Check connection token ----

const envelope = (result: unknown) => ({ result, success: true, errors: [], messages: [] });
const verifyBody = (result: unknown = { id: 'tok-1', status: 'active' }) => envelope(result);
const permissionsBody = (permissions: unknown = ['uptime_checks (read)']) => envelope({ permissions });
const UNAUTHORIZED = {
  result: null,
  success: false,
  errors: [{ code: 10000, message: 'Authentication error' }],
  messages: [],
};
const partooBody = (fields: Record<string, unknown> = {}) => ({
  token: 'SECRETfreshConnectionToken',
  expiration_date: new Date(Date.now() + 3_600_000).toISOString(),
  generated_by: '5309c3a237bbc544d8e26737',
  creation_date: '2019-08-01T17:15:54.256000+00:00',
  consumption_date: null,
  status: 'valid',
  ...fields,
});

/** OnlineOrNot answers: `verify` and `permissions` bodies (JSON text), 200 unless said. */
function onlineOrNotAnswers(verify: string, permissions = JSON.stringify(permissionsBody()), status = 200): Answer {
  return (req, res) => reply(res, status, req.url?.startsWith('/v1/tokens/verify') ? verify : permissions);
}

/** What the gate makes of the current answer (nothing cached): 200, or the AuthError status. */
async function outcome(credential: 'bearer' | 'connection'): Promise<{ status: number; auth?: AuthContext }> {
  gate.clear();
  const req =
    credential === 'bearer' ? { headers: { authorization: `Bearer ${TOKEN}` } } : { headers: {}, query: CONN };
  try {
    const auth = await gate.authenticate(req);
    return { status: 200, auth };
  } catch (error) {
    if (!(error instanceof AuthError)) throw error;
    return { status: error.status };
  }
}

async function expectUnavailable(credential: 'bearer' | 'connection'): Promise<void> {
  const before = provider.calls;
  const res =
    credential === 'bearer'
      ? await request(gatedApp(gate).app).get('/me').set('Authorization', `Bearer ${TOKEN}`)
      : await request(gatedApp(gate).app).get('/me').query(CONN);
  expect(res.status).toBe(503);
  expect(res.headers['www-authenticate']).toBeUndefined();
  // The provider was really asked: the 503 is about its answer, not a short cut.
  expect(provider.calls).toBeGreaterThan(before);
}

describe('baseline: well-formed answers are understood', () => {
  it('OnlineOrNot: active token 200, 401 answer 401', async () => {
    provider.answer = onlineOrNotAnswers(JSON.stringify(verifyBody()));
    expect((await outcome('bearer')).status).toBe(200);
    gate.clear();
    provider.answer = onlineOrNotAnswers(JSON.stringify(UNAUTHORIZED), JSON.stringify(UNAUTHORIZED), 401);
    expect((await outcome('bearer')).status).toBe(401);
  });

  it('Partoo: valid 200, revoked 401, 404 answer 401', async () => {
    provider.answer = (_req, res) => reply(res, 200, JSON.stringify(partooBody()));
    expect((await outcome('connection')).status).toBe(200);
    gate.clear();
    provider.answer = (_req, res) => reply(res, 200, JSON.stringify(partooBody({ status: 'revoked' })));
    expect((await outcome('connection')).status).toBe(401);
    gate.clear();
    provider.answer = (_req, res) => reply(res, 404, '{"errors":{"json":"Resource not found"}}');
    expect((await outcome('connection')).status).toBe(401);
  });
});

// ---- property-based ----------------------------------------------------------------

const STATUSES = ['valid', 'consumed', 'revoked', 'expired'];
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const wrongTyped = fc.oneof(
  fc.integer(),
  // Finite only: JSON.stringify turns NaN and ±Infinity into null, which is a valid value for optional fields.
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.jsonValue(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue(), { maxKeys: 3 }),
);
const extraFields = fc.dictionary(
  fc
    .string({ minLength: 1, maxLength: 12 })
    .filter(
      (k) =>
        ![
          'result',
          'success',
          'errors',
          'messages',
          'status',
          'token',
          'expiration_date',
          'generated_by',
          'creation_date',
          'consumption_date',
          '__proto__',
        ].includes(k),
    ),
  fc.jsonValue({ maxDepth: 2 }),
  { minKeys: 1, maxKeys: 4 },
);

describe('Partoo answers (property)', () => {
  it('arbitrary JSON without a known status: 503', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.jsonValue().filter((v) => !(isObject(v) && STATUSES.includes(v.status as string))),
        async (body) => {
          provider.answer = (_req, res) => reply(res, 200, JSON.stringify(body));
          const before = provider.calls;
          expect((await outcome('connection')).status).toBe(503);
          expect(provider.calls).toBe(before + 1);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('a field of the wrong type: 503', async () => {
    const field = fc.constantFrom('status', 'expiration_date', 'generated_by', 'creation_date', 'consumption_date');
    const badValue = (name: string) =>
      name === 'status'
        ? fc.oneof(wrongTyped, fc.constantFrom('VALID', 'active', '', 'valid '))
        : name === 'generated_by'
          ? wrongTyped.filter((v) => v !== null)
          : fc.oneof(
              wrongTyped.filter((v) => v !== null),
              fc.constantFrom('', 'not a date', 'tomorrow', '2019-13-45T99:99'),
            );
    await fc.assert(
      fc.asyncProperty(
        field.chain((name) => badValue(name).map((value) => [name, value] as const)),
        async ([name, value]) => {
          provider.answer = (_req, res) => reply(res, 200, JSON.stringify(partooBody({ [name]: value })));
          expect((await outcome('connection')).status).toBe(503);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('a required field missing: 503; optional fields missing or null: accepted', async () => {
    provider.answer = (_req, res) => reply(res, 200, JSON.stringify({ ...partooBody(), status: undefined }));
    expect((await outcome('connection')).status).toBe(503);
    gate.clear();
    provider.answer = (_req, res) => reply(res, 200, '{"status":"valid"}');
    expect((await outcome('connection')).status).toBe(200);
    gate.clear();
    provider.answer = (_req, res) =>
      reply(res, 200, '{"status":"valid","expiration_date":null,"generated_by":null,"creation_date":null}');
    expect((await outcome('connection')).status).toBe(200);
  });

  it('extra fields are accepted when the schema is met, and left out of details (property)', async () => {
    await fc.assert(
      fc.asyncProperty(extraFields, fc.constantFrom(...STATUSES), async (extra, status) => {
        gate.clear();
        provider.answer = (_req, res) => reply(res, 200, JSON.stringify({ ...extra, ...partooBody({ status }) }));
        const result = await outcome('connection');
        expect(result.status).toBe(status === 'valid' ? 200 : 401);
        if (result.auth !== undefined) {
          for (const key of Object.keys(result.auth.details)) {
            expect(['status', 'expiration_date', 'generated_by', 'creation_date', 'consumption_date']).toContain(key);
          }
          expect(JSON.stringify(result.auth.details)).not.toContain('SECRETfreshConnectionToken');
        }
      }),
      { numRuns: 100 },
    );
  });

  it('error answers (400/403/404) that are not the documented shape: 503 (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(400, 403, 404),
        fc.jsonValue().filter((v) => !(isObject(v) && 'errors' in v)),
        async (status, body) => {
          provider.answer = (_req, res) => reply(res, status, JSON.stringify(body));
          expect((await outcome('connection')).status).toBe(503);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('OnlineOrNot answers (property)', () => {
  it('arbitrary JSON from verify: 503', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.jsonValue().filter((v) => !(isObject(v) && v.success === true)),
        async (body) => {
          provider.answer = onlineOrNotAnswers(JSON.stringify(body));
          expect((await outcome('bearer')).status).toBe(503);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('wrong types in verify or permissions: 503', async () => {
    const mutation = fc.oneof(
      wrongTyped.map((v) => ({ verify: verifyBody({ id: v, status: 'active' }) })),
      fc.constant({ verify: verifyBody({ id: '', status: 'active' }) }),
      wrongTyped.map((v) => ({ verify: verifyBody({ id: 'tok-1', status: v }) })),
      wrongTyped.filter((v) => !isObject(v)).map((v) => ({ verify: verifyBody(v) })),
      fc
        .oneof(wrongTyped, fc.constantFrom('true', 1))
        .filter((v) => v !== true)
        .map((v) => ({ verify: { ...verifyBody(), success: v } })),
      wrongTyped.filter((v) => !Array.isArray(v)).map((v) => ({ verify: { ...verifyBody(), errors: v } })),
      wrongTyped.filter((v) => !Array.isArray(v)).map((v) => ({ permissions: permissionsBody(v) })),
      fc
        .array(wrongTyped, { minLength: 1, maxLength: 3 })
        .map((list) => ({ permissions: permissionsBody(['uptime_checks (read)', ...list]) })),
      fc
        .jsonValue()
        .filter((v) => !(isObject(v) && v.success === true))
        .map((v) => ({ permissions: v })),
    );
    await fc.assert(
      fc.asyncProperty(mutation, async (bodies) => {
        provider.answer = onlineOrNotAnswers(
          JSON.stringify('verify' in bodies ? bodies.verify : verifyBody()),
          JSON.stringify('permissions' in bodies ? bodies.permissions : permissionsBody()),
        );
        expect((await outcome('bearer')).status).toBe(503);
      }),
      { numRuns: 200 },
    );
  });

  it('extra fields are accepted when the schema is met (property)', async () => {
    await fc.assert(
      fc.asyncProperty(extraFields, extraFields, async (extraTop, extraResult) => {
        gate.clear();
        provider.answer = onlineOrNotAnswers(
          JSON.stringify({ ...extraTop, ...envelope({ ...extraResult, id: 'tok-1', status: 'active' }) }),
          JSON.stringify({ ...extraTop, ...envelope({ ...extraResult, permissions: ['a'] }) }),
        );
        const result = await outcome('bearer');
        expect(result.status).toBe(200);
        expect(result.auth?.details).toEqual({ id: 'tok-1', status: 'active' });
        expect(result.auth?.permissions).toEqual(['a']);
      }),
      { numRuns: 100 },
    );
  });

  it('a 401 that is not the API error shape (a proxy page, say): 503, not a rejection (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.jsonValue().filter((v) => !(isObject(v) && v.success === false)),
        async (body) => {
          provider.answer = onlineOrNotAnswers(JSON.stringify(body), JSON.stringify(body), 401);
          expect((await outcome('bearer')).status).toBe(503);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('arbitrary bytes labelled JSON: 503 (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
        provider.answer = (_req, res) => {
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': bytes.length });
          res.end(bytes);
        };
        expect((await outcome('bearer')).status).toBe(503);
      }),
      { numRuns: 100 },
    );
  });
});

// ---- hand-written, through a real Express app -------------------------------------------

describe("a provider's Retry-After, as the client sees it", () => {
  /** `seconds` from now in the three forms of an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`, …). */
  const inFormats = (seconds: number) => {
    const date = new Date(Date.now() + seconds * 1000);
    const [weekday, day, month, year, time] = date.toUTCString().split(/,? /);
    const longWeekday = date.toLocaleDateString('en-US', { weekday: 'long', timeZone: 'UTC' });
    return {
      imf: `${weekday}, ${day} ${month} ${year} ${time} GMT`,
      rfc850: `${longWeekday}, ${day}-${month}-${year?.slice(2)} ${time} GMT`,
      asctime: `${weekday} ${month} ${String(Number(day)).padStart(2, ' ')} ${time} ${year}`,
    };
  };
  const soon = ['4', '5', '6']; // 5 s ahead, to the second
  // The gate's default cap is the breaker's cooldown, 10 s.
  it.each([
    ['delta-seconds', () => '3', ['3']],
    ['an IMF-fixdate 5 s ahead', () => inFormats(5).imf, soon],
    ['an IMF-fixdate a day ahead (capped)', () => inFormats(86_400).imf, ['10']],
    ['an asctime date 5 s ahead (GMT)', () => inFormats(5).asctime, soon],
    ['an RFC 850 date in the past', () => 'Sunday, 06-Nov-94 08:49:37 GMT', ['1']],
    ['a fraction', () => '1.5', [undefined]],
    ['a negative number', () => '-1', [undefined]],
    ['a word', () => 'soon', [undefined]],
    ['a date with a zone other than GMT', () => 'Sun, 06 Nov 2094 08:49:37 +0200', [undefined]],
    ['delay-seconds longer than any cap (clamped)', () => '9'.repeat(400), ['10']],
    ['an RFC 850 date 5 s ahead', () => inFormats(5).rfc850, soon],
    // RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past century; one less is ahead.
    ['an RFC 850 date whose year is 60 years ahead', () => inFormats(60 * 365.25 * 86_400).rfc850, ['1']],
    ['an RFC 850 date whose year is 40 years ahead (capped)', () => inFormats(40 * 365.25 * 86_400).rfc850, ['10']],
    ['a day that does not exist', () => 'Thu, 31 Feb 2099 08:49:37 GMT', [undefined]],
    ['an hour that does not exist', () => 'Sun, 02 Aug 2099 24:00:00 GMT', [undefined]],
  ])('%s', async (_name, value, shown) => {
    provider.answer = (_req, res) => {
      res.setHeader('retry-after', value());
      reply(res, 503, '{}');
    };
    const res = await request(gatedApp(gate).app).get('/me').query(CONN);
    expect(res.status).toBe(503);
    expect(shown).toContain(res.headers['retry-after']);
  });
});

describe('an answer its status decides, whose body never ends', () => {
  it.each([
    [429, '7', 'status'],
    [503, '7', 'status'],
    [200, undefined, 'invalid_answer'],
  ] as const)(
    '%i: a 503 at the deadline, with what the status said: its Retry-After, its reason',
    async (status, retryAfter, reason) => {
      provider.answer = (_req, res) => {
        res.writeHead(status, {
          'content-type': status === 200 ? 'text/html' : 'application/json',
          'content-length': '100',
          ...(retryAfter === undefined ? {} : { 'retry-after': retryAfter }),
        });
        res.write('{"errors":'); // and nothing more
      };
      const events: GateEvent[] = [];
      const slow = createGate({
        providers: [partoo({ apiKey: API_KEY, baseUrl: provider.url })],
        timeout: TIMEOUT,
        retry: false,
        breaker: false,
        onEvent: (event) => events.push(event),
      });
      try {
        const started = performance.now();
        const error = await slow.authenticate({ headers: {}, query: CONN }).catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(AuthError);
        expect((error as AuthError).status).toBe(503);
        expect((error as AuthError).headers['Retry-After']).toBe(retryAfter);
        expect(performance.now() - started).toBeLessThan(TIMEOUT + 2000);
        expect(events.filter((event) => event.type === 'provider_error')).toMatchObject([{ reason, status }]);
      } finally {
        await slow.close();
      }
    },
  );

  it('a 429 whose body stalled pauses calls, as any 429: it does not count toward the breaker', async () => {
    provider.answer = (_req, res) => {
      res.writeHead(429, { 'content-type': 'application/json', 'content-length': '100', 'retry-after': '2' });
      res.write('{"errors":');
    };
    const throttled = createGate({
      providers: [partoo({ apiKey: API_KEY, baseUrl: provider.url })],
      timeout: TIMEOUT,
      retry: false,
      breaker: { threshold: 1 },
    });
    try {
      expect((await rejectionOfGate(throttled)).headers['Retry-After']).toBe('2');
      expect(throttled.stats().breakers).toEqual({ partoo: 'closed' });
    } finally {
      await throttled.close();
    }
  });
});

/** The error `gate` answers a connection credential with. */
async function rejectionOfGate(gate: Gate): Promise<AuthError> {
  const error = await gate.authenticate({ headers: {}, query: CONN }).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(AuthError);
  return error as AuthError;
}

describe('hand-written hostile answers: 503 through Express', () => {
  const both = ['bearer', 'connection'] as const;

  it.each(both)('malformed JSON (%s)', async (credential) => {
    provider.answer = (_req, res) => reply(res, 200, '{"result": {"id": "tok-1", "status": "active"');
    await expectUnavailable(credential);
  });

  it.each(both)('empty 200 and 204 (%s)', async (credential) => {
    provider.answer = (_req, res) => reply(res, 200, '');
    await expectUnavailable(credential);
    provider.answer = (_req, res) => {
      res.writeHead(204);
      res.end();
    };
    await expectUnavailable(credential);
  });

  it.each([
    ['a JSON string', '"valid"'],
    ['a JSON array', '[{"status":"valid"}]'],
    ['null', 'null'],
    ['the status nested one level down', '{"result":{"status":"valid"}}'],
    ['a __proto__ key (prototype pollution attempt)', '{"__proto__":{"status":"valid"}}'],
    ['a number for the status', '{"status":1}'],
    ['deeply nested JSON', `${'['.repeat(30_000)}${']'.repeat(30_000)}`],
    // RFC 8259 §4: a name repeated in one object means what each reader makes of it (JSON.parse keeps the last).
    ['status named twice, revoked then valid', '{"status":"revoked","expiration_date":null,"status":"valid"}'],
    ['status named twice, the second escaped', '{"status":"revoked","st\\u0061tus":"valid"}'],
  ])('Partoo: %s', async (_name, body) => {
    provider.answer = (_req, res) => reply(res, 200, body);
    await expectUnavailable('connection');
  });

  it.each([
    ['success: false with 200', JSON.stringify({ ...verifyBody(), success: false })],
    ['result: null', JSON.stringify(verifyBody(null))],
    ['numeric id', JSON.stringify(verifyBody({ id: 42, status: 'active' }))],
    ['missing messages', JSON.stringify({ result: { id: 'tok-1', status: 'active' }, success: true, errors: [] })],
    [
      'a __proto__ result',
      '{"__proto__":{"result":{"id":"x","status":"active"}},"success":true,"errors":[],"messages":[]}',
    ],
    [
      'the result status named twice, revoked then active',
      '{"result":{"id":"tok-1","status":"revoked","status":"active"},"success":true,"errors":[],"messages":[]}',
    ],
  ])('OnlineOrNot verify: %s', async (_name, body) => {
    provider.answer = onlineOrNotAnswers(body);
    await expectUnavailable('bearer');
  });

  it('a name used once in each of several objects is no repeat, nor a name inside a string: the answer passes', async () => {
    const message = (code: number) => ({ code, message: 'status: "active", \\"status\\": 1', type: 'info' });
    provider.answer = onlineOrNotAnswers(
      JSON.stringify({ ...verifyBody(), messages: [message(1), message(2)], status: { status: 'active' } }),
    );
    expect((await outcome('bearer')).status).toBe(200);
  });

  it.each([
    ['ISO-8859-1 labelled as such', 'application/json; charset=iso-8859-1'],
    ['labelled UTF-8', 'application/json'],
  ])('a body that is not UTF-8 (%s): 503, never two subjects made one by U+FFFD', async (_name, contentType) => {
    const latin1 = (name: string) =>
      Buffer.concat([
        Buffer.from('{"result":{"id":"tok-'),
        Buffer.from(name, 'latin1'),
        Buffer.from('","status":"active"},"success":true,"errors":[],"messages":[]}'),
      ]);
    provider.answer = (req, res) => {
      const body = req.url?.startsWith('/v1/tokens/verify')
        ? latin1('\u00e9')
        : Buffer.from(JSON.stringify(permissionsBody()));
      res.writeHead(200, { 'content-type': contentType, 'content-length': body.length });
      res.end(body);
    };
    const events: string[] = [];
    const gate = createGate({
      providers: [onlineOrNot({ baseUrl: provider.url })],
      retry: false,
      breaker: false,
      onEvent: (event) => event.type === 'provider_error' && events.push(event.message),
    });
    try {
      await expect(gate.authenticate({ headers: { authorization: `Bearer ${TOKEN}` } })).rejects.toMatchObject({
        status: 503,
      });
      expect(events).toEqual(['onlineornot GET /v1/tokens/verify answered 200 with a body that is not UTF-8']);
    } finally {
      await gate.close();
    }
  });

  it('OnlineOrNot permissions: a string instead of a list', async () => {
    provider.answer = onlineOrNotAnswers(JSON.stringify(verifyBody()), JSON.stringify(permissionsBody('everything')));
    await expectUnavailable('bearer');
  });

  it('OnlineOrNot 401 with an HTML body (a proxy login page): 503, not a rejection', async () => {
    provider.answer = (_req, res) => reply(res, 401, '<html><body>Log in</body></html>', 'text/html');
    await expectUnavailable('bearer');
  });

  it.each(both)('huge bodies, declared or chunked, are cut off at the cap (%s)', async (credential) => {
    const cap = 64 * 1024;
    // Answers that would pass but for their size: a valid body with a large extra field.
    const valid = (req: { url?: string | undefined }) =>
      req.url?.includes('check_token') ? partooBody() : req.url?.includes('verify') ? verifyBody() : permissionsBody();
    provider.answer = (req, res) => reply(res, 200, JSON.stringify({ ...valid(req), padding: 'x'.repeat(cap) }));
    await expectUnavailable(credential);
    provider.answer = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }); // chunked: no Content-Length
      res.write(`${JSON.stringify(valid(req)).slice(0, -1)},"padding":"`);
      for (let i = 0; i < 64; i++) res.write('x'.repeat(16 * 1024));
      res.end('"}');
    };
    await expectUnavailable(credential);
  });

  it('a body of exactly the cap is read; maxBodyBytes lowers the cap', async () => {
    const cap = 64 * 1024;
    const exact = JSON.stringify(partooBody()).padEnd(cap, ' ');
    expect(Buffer.byteLength(exact)).toBe(cap);
    provider.answer = (_req, res) => reply(res, 200, exact);
    expect((await request(gatedApp(gate).app).get('/me').query(CONN)).status).toBe(200);
    provider.answer = (_req, res) => reply(res, 200, `${exact} `);
    gate.clear();
    await expectUnavailable('connection');

    const small = createGate({
      providers: [partoo({ apiKey: API_KEY, baseUrl: `${provider.url}/v2`, maxBodyBytes: 100 })],
      retry: false,
      breaker: false,
    });
    try {
      provider.answer = (_req, res) => reply(res, 200, JSON.stringify(partooBody()));
      expect(JSON.stringify(partooBody()).length).toBeGreaterThan(100);
      expect((await request(gatedApp(small).app).get('/me').query(CONN)).status).toBe(503);
    } finally {
      await small.close();
    }
  });

  it('failed answers are drained, not dropped: one keep-alive socket serves them all', async () => {
    const single = createGate({
      providers: [partoo({ apiKey: API_KEY, baseUrl: `${provider.url}/v2`, connections: 1 })],
      retry: false,
      breaker: false,
    });
    const failures: Array<[number, string, string]> = [
      [500, '{"error":"Internal Server Error"}', 'application/json'],
      [503, 'upstream unavailable', 'text/plain'],
      [429, '{"error":"slow down"}', 'application/json'],
      [200, '<html><body>maintenance</body></html>', 'text/html'],
      [302, 'moved', 'text/plain'],
    ];
    try {
      const before = provider.connections;
      for (const [status, body, type] of failures) {
        provider.answer = (_req, res) => reply(res, status, body.padEnd(4096, ' '), type);
        expect((await request(gatedApp(single).app).get('/me').query(CONN)).status).toBe(503);
      }
      provider.answer = (_req, res) => reply(res, 200, JSON.stringify(partooBody()));
      expect((await request(gatedApp(single).app).get('/me').query(CONN)).status).toBe(200);
      expect(provider.connections - before).toBe(1);
    } finally {
      await single.close();
    }
  });

  it.each(both)('a slow-drip body past the deadline (%s)', async (credential) => {
    const timers = new Set<NodeJS.Timeout>();
    provider.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{');
      const timer = setInterval(() => res.write(' '), 20);
      timers.add(timer);
      res.on('close', () => clearInterval(timer));
    };
    try {
      const started = performance.now();
      await expectUnavailable(credential);
      expect(performance.now() - started).toBeLessThan(TIMEOUT + 2000);
    } finally {
      for (const timer of timers) clearInterval(timer);
    }
  });

  it('an answer sent a byte at a time holds its bytes, not an object per byte (child process, heap after GC)', async () => {
    const bytes = 40_000;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--expose-gc', '--import', 'tsx', 'test/support/trickled-answer.ts'],
      { env: { ...process.env, TRICKLED_BYTES: String(bytes) }, timeout: 60_000 },
    );
    const seen = JSON.parse(stdout.trim().split('\n').at(-1) as string) as { retained: number; subject: string };
    expect(seen.subject).toBe('u');
    // The bytes in a buffer grown by doubling (64 KiB at most here), and the noise of a heap: not 200 bytes a byte.
    expect(seen.retained).toBeLessThan(25 * bytes);
  }, 70_000);

  it('a slow-drip body that completes within the deadline is fine', async () => {
    const body = JSON.stringify(partooBody());
    provider.answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      let sent = 0;
      const timer = setInterval(() => {
        const piece = body.slice(sent, sent + 20);
        sent += piece.length;
        if (sent >= body.length) {
          clearInterval(timer);
          res.end(piece);
        } else res.write(piece);
      }, 5);
      res.on('close', () => clearInterval(timer));
    };
    expect((await request(gatedApp(gate).app).get('/me').query(CONN)).status).toBe(200);
  });

  it.each([
    ['text/html', 'text/html; charset=utf-8'],
    ['text/plain', 'text/plain'],
    ['no content type', undefined],
    ['application/jsonp', 'application/jsonp'],
    ['application/x-json-stream', 'application/x-json-stream'],
    ['application/x-json (no +)', 'application/x-json'],
    ['text/json (not application/)', 'text/json'],
  ])('valid JSON with the wrong content type: %s', async (_name, contentType) => {
    const answer =
      (body: string): Answer =>
      (_req, res) => {
        res.writeHead(200, contentType === undefined ? {} : { 'content-type': contentType });
        res.end(body);
      };
    provider.answer = answer(JSON.stringify(partooBody()));
    await expectUnavailable('connection');
    provider.answer = (req, res) =>
      answer(JSON.stringify(req.url?.includes('verify') ? verifyBody() : permissionsBody()))(req, res);
    await expectUnavailable('bearer');
  });

  it('JSON content types with parameters or a +json suffix are accepted', async () => {
    for (const contentType of ['application/json; charset=utf-8', 'Application/JSON', 'application/vnd.partoo+json']) {
      gate.clear();
      provider.answer = (_req, res) => reply(res, 200, JSON.stringify(partooBody()), contentType);
      expect((await request(gatedApp(gate).app).get('/me').query(CONN)).status).toBe(200);
    }
  });

  it('a gzip-compressed body (never asked for) is not JSON: 503', async () => {
    provider.answer = (_req, res) => {
      const body = gzipSync(JSON.stringify(partooBody()));
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-encoding': 'gzip',
        'content-length': body.length,
      });
      res.end(body);
    };
    await expectUnavailable('connection');
  });

  describe('redirects are not followed', () => {
    afterEach(() => {
      // The server a redirect points to never hears from the gate.
      expect(elsewhere.calls).toBe(0);
    });

    it.each([301, 302, 303, 307, 308])('%i to another server: 503', async (status) => {
      provider.answer = (req, res) => {
        res.writeHead(status, { location: `${elsewhere.url}${req.url ?? '/'}`, 'content-length': 0 });
        res.end();
      };
      await expectUnavailable('connection');
      await expectUnavailable('bearer');
    });

    it('a redirect with a JSON body that would pass: 503', async () => {
      provider.answer = (req, res) => {
        const body = JSON.stringify(req.url?.includes('check_token') ? partooBody() : verifyBody());
        res.writeHead(302, {
          location: `${elsewhere.url}${req.url ?? '/'}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        });
        res.end(body);
      };
      await expectUnavailable('connection');
      await expectUnavailable('bearer');
    });
  });

  it('expired and undated Partoo answers are decisions, not failures', async () => {
    provider.answer = (_req, res) =>
      reply(res, 200, JSON.stringify(partooBody({ expiration_date: new Date(Date.now() - 1000).toISOString() })));
    expect((await request(gatedApp(gate).app).get('/me').query(CONN)).status).toBe(401);
    gate.clear();
    provider.answer = (_req, res) => reply(res, 200, JSON.stringify(partooBody({ expiration_date: null })));
    const res = await request(gatedApp(gate).app).get('/me').query(CONN);
    expect(res.status).toBe(200);
    expect(res.body.expiresAt).toBeUndefined();
  });
});
