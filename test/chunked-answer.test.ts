/**
 * An answer read in many chunks of uneven sizes (each written after the event loop turned, without a Content-Length):
 * the gate reads exactly its bytes, a character split between two chunks included, up to a body of exactly
 * `maxBodyBytes`; one byte more is a 503. Answers come from a tiny server whose every write the test makes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGate, introspection } from '../src/index.js';
import { type AnswerServer, startAnswerServer } from './support/answer-server.js';

const CAP = 3000;
/** Chunk sizes that cross the reader's growth steps (1 KiB, then doubling) at, before and after them. */
const SIZES = [1, 1, 1021, 1, 1, 1023, 2, 1, 7, 500];

let server: AnswerServer;
beforeAll(async () => {
  server = await startAnswerServer();
});
afterAll(() => server.close());

/** An introspection answer of exactly `bytes` bytes whose subject is multibyte text, padded with spaces. */
const HEAD = Buffer.from('{"active":true,"sub":"ü€😀-ü€😀","pad":"');
const TAIL = Buffer.from('"}');
function answerOf(bytes: number): Buffer {
  return Buffer.concat([HEAD, Buffer.alloc(bytes - HEAD.length - TAIL.length, ' '), TAIL]);
}

/** Writes `body` in chunks of {@link SIZES} in turn, each after the event loop turned. */
function trickle(body: Buffer): void {
  server.answer = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    let sent = 0;
    let turn = 0;
    const next = () => {
      if (sent >= body.length) {
        res.end();
        return;
      }
      const size = SIZES[turn++ % SIZES.length] as number;
      res.write(body.subarray(sent, sent + size));
      sent += size;
      setImmediate(next);
    };
    next();
  };
}

describe('an answer read in many chunks', () => {
  const gate = () =>
    createGate({
      providers: [
        introspection({
          endpoint: `${server.url}/introspect`,
          clientId: 'c',
          clientSecret: 's',
          maxBodyBytes: CAP,
          connections: 1,
        }),
      ],
      retry: false,
      breaker: false,
    });

  it.each([HEAD.length + TAIL.length, 1023, 1024, 1025, 2047, 2048, 2049, CAP - 1, CAP])(
    'is read whole at %i bytes',
    async (bytes) => {
      const answer = answerOf(bytes);
      trickle(answer);
      const g = gate();
      try {
        const auth = await g.authenticate({ headers: { authorization: 'Bearer chunked' } });
        expect(auth.subject).toBe('ü€😀-ü€😀');
        expect(auth.details).toMatchObject({ pad: ' '.repeat(answer.length - HEAD.length - TAIL.length) });
      } finally {
        await g.close();
      }
    },
  );

  it('past the cap by one byte is a 503', async () => {
    trickle(answerOf(CAP + 1));
    const g = gate();
    try {
      await expect(g.authenticate({ headers: { authorization: 'Bearer chunked' } })).rejects.toMatchObject({
        status: 503,
      });
    } finally {
      await g.close();
    }
  });
});
