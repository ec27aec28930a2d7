/**
 * A real redis-server per test file, on a free loopback port, with no
 * persistence (`--save '' --appendonly no`): started, killed, paused and
 * restarted on the same port as a test needs, and always stopped.
 *
 * `redisServerMissing` says whether tests that need Redis may skip: only
 * outside CI. With `CI=true` they run, and a missing redis-server fails them.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createServer, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const BINARY = 'redis-server';

/** Whether redis-server can run here. */
const installed = spawnSync(BINARY, ['--version'], { stdio: 'ignore' }).status === 0;

/** True when the Redis tests should be skipped: redis-server is missing and this is not CI. */
export const redisServerMissing = !installed && process.env.CI !== 'true';

/** A free TCP port on 127.0.0.1 (bound once, then released for redis-server to take). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** Whether a redis-server on `port` answers PING within `ms`. */
function pings(port: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      clearTimeout(timer);
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    let reply = '';
    socket.on('error', () => done(false));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
  });
}

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** Sends `signal` to the server (`SIGKILL` to crash it, `SIGSTOP`/`SIGCONT` to pause and resume it). */
  signal(signal: NodeJS.Signals): void;
  /** Kills the server (SIGKILL) and waits for it to be gone. */
  kill(): Promise<void>;
  /** Starts a fresh server on the same port (empty: no persistence) and waits for PING. */
  restart(): Promise<void>;
  /** Stops the server for good. */
  close(): Promise<void>;
}

/**
 * Starts redis-server on a free loopback port and waits until it answers PING
 * (at most 10 s). `extraArgs` are added to its command line.
 */
export async function startRedisServer(extraArgs: readonly string[] = []): Promise<RedisServer> {
  if (!installed) throw new Error(`${BINARY} is not installed: the Redis tests need it (CI=true never skips them)`);
  const port = await freePort();
  let child: ChildProcess | undefined;
  const killOnExit = () => child?.kill('SIGKILL');
  process.once('exit', killOnExit);
  const launch = async () => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extraArgs];
    child = spawn(BINARY, args, { stdio: 'ignore' });
    const started = performance.now();
    while (!(await pings(port, 200))) {
      if (child.exitCode !== null || performance.now() - started > 10_000) {
        throw new Error(`redis-server on port ${port} did not start`);
      }
      await sleep(20);
    }
  };
  const kill = async () => {
    const running = child;
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return;
    const gone = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGCONT');
    running.kill('SIGKILL');
    await gone;
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    signal: (signal) => child?.kill(signal),
    kill,
    restart: async () => {
      await kill();
      await launch();
    },
    close: async () => {
      await kill();
      process.off('exit', killOnExit);
    },
  };
}
