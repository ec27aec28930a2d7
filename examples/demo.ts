/**
 * What the Express, Koa, Fastify and node:http demos share: mock providers started in process
 * with sample tokens, the gate over them, the requests worth trying (with
 * the status each should get), and the server start/stop around an app.
 *
 * The sample tokens are fake and only known to the in-process mocks, so
 * printing them is fine. In a real app, the gate would point at the real
 * providers and no token would ever be printed.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
// In an app: from 'tokengate' and 'tokengate/testing'.
import { createGate, type Gate, onlineOrNot, partoo } from '../src/index.js';
import { mockOnlineOrNot, mockPartoo } from '../src/testing/index.js';

export const READ = 'uptime_checks (read)';
export const WRITE = 'uptime_checks (write)';

/** Fake tokens the mock providers know. */
export const SAMPLE = {
  /** OnlineOrNot token with `uptime_checks (read)`. */
  readToken: 'demo-read-token',
  /** OnlineOrNot token with read and write. */
  writeToken: 'demo-write-token',
  /** OnlineOrNot token whose status is `disabled`. */
  disabledToken: 'demo-disabled-token',
  /** Partoo connection token, still valid. */
  connection: { userId: 'demo-user', token: 'demo-connection-token' },
  /** Partoo connection token already used. */
  usedConnection: { userId: 'demo-user', token: 'demo-used-connection-token' },
  /** The server's own Partoo API key (the mock's). */
  partooApiKey: 'demo-partoo-api-key',
} as const;

/** The mock providers and a gate over them. */
export interface DemoProviders {
  readonly gate: Gate;
  readonly onlineOrNotUrl: string;
  readonly partooUrl: string;
  /** Closes the gate, then the mocks. */
  close(): Promise<void>;
}

/** Starts the OnlineOrNot and Partoo mocks on 127.0.0.1 and builds the gate the demo apps use. */
export async function startDemoProviders(): Promise<DemoProviders> {
  const oon = await mockOnlineOrNot({
    tokens: {
      [SAMPLE.readToken]: { id: 'tok_reader', permissions: [READ] },
      [SAMPLE.writeToken]: { id: 'tok_writer', permissions: [READ, WRITE] },
      [SAMPLE.disabledToken]: { id: 'tok_disabled', permissions: [READ, WRITE], status: 'disabled' },
    },
  });
  const partooMock = await mockPartoo({
    apiKey: SAMPLE.partooApiKey,
    tokens: [SAMPLE.connection, { ...SAMPLE.usedConnection, status: 'consumed' }],
  });
  const gate = createGate({
    providers: [
      onlineOrNot({ baseUrl: oon.url }),
      // Connection tokens carry no permissions of their own; this app lets them read.
      partoo({ apiKey: SAMPLE.partooApiKey, baseUrl: partooMock.url, permissions: [READ] }),
    ],
  });
  return {
    gate,
    onlineOrNotUrl: oon.url,
    partooUrl: partooMock.url,
    async close() {
      await gate.close();
      await Promise.all([oon.close(), partooMock.close()]);
    },
  };
}

/** One request worth trying against a demo app, and the status it should get. */
export interface DemoCase {
  readonly title: string;
  readonly method: 'GET' | 'POST';
  /** Path and query. */
  readonly path: string;
  readonly authorization?: string;
  readonly status: number;
}

const bearer = (token: string) => `Bearer ${token}`;
const connectionQuery = ({ userId, token }: { readonly userId: string; readonly token: string }) =>
  new URLSearchParams({ user_id: userId, token }).toString();

export const DEMO_CASES: readonly DemoCase[] = [
  { title: 'public route, anonymous', method: 'GET', path: '/public', status: 200 },
  {
    title: 'public route, with a token',
    method: 'GET',
    path: '/public',
    authorization: bearer(SAMPLE.readToken),
    status: 200,
  },
  { title: 'who am I', method: 'GET', path: '/me', authorization: bearer(SAMPLE.readToken), status: 200 },
  {
    title: 'read token lists checks',
    method: 'GET',
    path: '/checks',
    authorization: bearer(SAMPLE.readToken),
    status: 200,
  },
  { title: 'no token: challenge', method: 'GET', path: '/checks', status: 401 },
  {
    title: 'read token may not create checks',
    method: 'POST',
    path: '/checks',
    authorization: bearer(SAMPLE.readToken),
    status: 403,
  },
  {
    title: 'write token creates a check',
    method: 'POST',
    path: '/checks',
    authorization: bearer(SAMPLE.writeToken),
    status: 201,
  },
  { title: 'disabled token', method: 'GET', path: '/checks', authorization: bearer(SAMPLE.disabledToken), status: 401 },
  { title: 'unknown token', method: 'GET', path: '/checks', authorization: bearer('no-such-token'), status: 401 },
  {
    title: 'malformed Bearer header',
    method: 'GET',
    path: '/checks',
    authorization: 'Bearer not a token',
    status: 400,
  },
  {
    title: 'Partoo connection token lists checks',
    method: 'GET',
    path: `/checks?${connectionQuery(SAMPLE.connection)}`,
    status: 200,
  },
  {
    title: 'Partoo connection token may not create checks',
    method: 'POST',
    path: `/checks?${connectionQuery(SAMPLE.connection)}`,
    status: 403,
  },
  {
    title: 'used Partoo connection token',
    method: 'GET',
    path: `/checks?${connectionQuery(SAMPLE.usedConnection)}`,
    status: 401,
  },
  {
    title: 'connection token given twice',
    method: 'GET',
    path: `/checks?${connectionQuery(SAMPLE.connection)}&${new URLSearchParams({ token: SAMPLE.connection.token })}`,
    status: 400,
  },
];

/** A ready-to-paste curl command for `demoCase` against `baseUrl`. */
export function curlLine(baseUrl: string, demoCase: DemoCase): string {
  const parts = ['curl -i'];
  if (demoCase.method !== 'GET') parts.push(`-X ${demoCase.method}`);
  if (demoCase.authorization !== undefined) parts.push(`-H '${`Authorization: ${demoCase.authorization}`}'`);
  parts.push(`'${baseUrl}${demoCase.path}'`);
  return parts.join(' ');
}

/** Listens on 127.0.0.1:`port`, or on a free port when that one is taken. */
async function listenWithFallback(server: Server, port: number): Promise<number> {
  const attempt = (p: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  try {
    await attempt(port);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    console.log(`Port ${port} is busy; using a free port instead.`);
    await attempt(0);
  }
  return (server.address() as AddressInfo).port;
}

/**
 * Runs a demo: starts the mocks, builds the app with `createApp`, listens
 * (PORT or 3000), prints the curl lines, and shuts everything down on
 * SIGINT/SIGTERM.
 */
export async function runDemo(framework: string, createApp: (gate: Gate) => RequestListener): Promise<void> {
  const providers = await startDemoProviders();
  const server = createServer(createApp(providers.gate));
  const port = await listenWithFallback(server, Number(process.env.PORT ?? 3000));
  const baseUrl = `http://127.0.0.1:${port}`;

  console.log(`tokengate ${framework} demo listening on ${baseUrl}`);
  console.log(`Mock providers: OnlineOrNot ${providers.onlineOrNotUrl}, Partoo ${providers.partooUrl}`);
  console.log('\nTry these (expected status first; the tokens are fake samples):\n');
  for (const demoCase of DEMO_CASES) {
    console.log(`# ${demoCase.status}  ${demoCase.title}`);
    console.log(curlLine(baseUrl, demoCase));
  }
  console.log('\nCtrl+C to stop.');

  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: shutting down`);
    // Idle keep-alive sockets would hold server.close() open.
    server.closeIdleConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await providers.close();
    // Nothing is left on the event loop now, so the process ends by itself.
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
