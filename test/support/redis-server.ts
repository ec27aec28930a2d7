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

/**
 * The process id of the redis-server on `port` (from `INFO server`), or undefined when nothing there answers as one
 * within `ms`: a port freed by {@link freePort} may be taken by something else before redis-server binds it.
 */
function serverPid(port: number, ms: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (pid: number | undefined) => {
      socket.destroy();
      clearTimeout(timer);
      resolve(pid);
    };
    const timer = setTimeout(() => done(undefined), ms);
    let reply = '';
    socket.on('error', () => done(undefined));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      // A bulk string: `$<length>\r\n<text>\r\n`; an error (`-LOADING ...`) or anything else is no answer yet.
      const header = /^\$(\d+)\r\n/.exec(reply);
      if (header === null) {
        if (reply.includes('\r\n')) done(undefined);
        return;
      }
      if (reply.length < header[0].length + Number(header[1])) return;
      const pid = /^process_id:(\d+)\r?$/m.exec(reply)?.[1];
      done(pid === undefined ? undefined : Number(pid));
    });
    socket.connect(port, '127.0.0.1', () => socket.write('INFO server\r\n'));
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
  let port = await freePort();
  let child: ChildProcess | undefined;
  const killOnExit = () => child?.kill('SIGKILL');
  process.once('exit', killOnExit);
  /** Starts redis-server on `port`; false when it could not take the port (something took it since it was freed). */
  const launch = async (): Promise<boolean> => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extraArgs];
    const started = spawn(BINARY, args, { stdio: 'ignore' });
    child = started;
    const since = performance.now();
    // Answered by this very process: another test file's redis-server may listen on a port freed for this one.
    while ((await serverPid(port, 200)) !== started.pid) {
      if (started.exitCode !== null) return false;
      if (performance.now() - since > 10_000) {
        started.kill('SIGKILL');
        throw new Error(`redis-server on port ${port} did not start`);
      }
      await sleep(20);
    }
    return true;
  };
  for (let attempt = 1; !(await launch()); attempt++) {
    if (attempt === 5) {
      throw new Error(
        `redis-server exited at start on ${attempt} free ports (the last ${port}): taken, or its arguments refused`,
      );
    }
    port = await freePort();
  }
  const kill = async () => {
    const running = child;
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return;
    const gone = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGCONT');
    running.kill('SIGKILL');
    await gone;
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    signal: (signal) => child?.kill(signal),
    kill,
    restart: async () => {
      await kill();
      if (!(await launch())) throw new Error(`redis-server could not take port ${port} again`);
    },
    close: async () => {
      await kill();
      process.off('exit', killOnExit);
    },
  };
}
