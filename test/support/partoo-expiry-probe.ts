/**
 * Run as a child process under a chosen `TZ`: verifies one Partoo connection
 * token, whose mock answers the `expiration_date` given as the first
 * argument, through a real gate, and prints what the gate made of it as JSON:
 * `expiresAtMs` (epoch ms), and `localOffsetMinutes`, the process's own UTC
 * offset on that date (to show the time zone really was in effect).
 */
import { createGate, partoo } from '../../src/index.js';
import { mockPartoo } from '../../src/testing/index.js';

const expirationDate = process.argv[2] ?? '';
const mock = await mockPartoo({ apiKey: 'probe-key', tokens: [{ userId: 'u', token: 't', expirationDate }] });
const gate = createGate({ providers: [partoo({ apiKey: 'probe-key', baseUrl: mock.url })], retry: false });
try {
  const auth = await gate.authenticate({ headers: {}, query: { user_id: 'u', token: 't' } });
  const expiresAtMs = auth.expiresAt?.getTime();
  const localOffsetMinutes = expiresAtMs === undefined ? undefined : new Date(expiresAtMs).getTimezoneOffset();
  process.stdout.write(JSON.stringify({ expiresAtMs, localOffsetMinutes }));
} finally {
  await gate.close();
  await mock.close();
}
