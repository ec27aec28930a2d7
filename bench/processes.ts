/** The suite's child processes: compiled, pinned to a core, talking over IPC. */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { compiled } from './compile.js';

/** Pins process `pid` (all its threads) to `core`; without Linux `taskset` it runs unpinned, and says so. */
export function pin(pid: number, core: string): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', core, String(pid)], { stdio: 'ignore' });
  } catch {
    console.warn('taskset failed: processes are not pinned, figures will be noisier');
  }
}

/**
 * Runs `bench/<file>`, compiled (see compile.ts), pinned to `core`, with an IPC channel; `niceness`
 * above 0 lowers its priority (on a shared core, the processes it competes with go first).
 */
export function startPinned(
  core: string,
  file: string,
  env: Record<string, string> = {},
  nodeFlags: readonly string[] = [],
  niceness = 0,
): ChildProcess {
  const pinned = ['taskset', '-c', core, process.execPath, ...nodeFlags, compiled(file)];
  const [command, ...args] = niceness > 0 ? ['nice', '-n', String(niceness), ...pinned] : pinned;
  return spawn(command as string, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

/** The child's next message of `type`; rejects on a `failed` message or when the child exits first. */
export function nextMessage<T extends { type: string }>(child: ChildProcess, type: T['type']): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: T) => {
      if (message.type === 'failed') finish(() => reject(new Error((message as { message?: string }).message)));
      else if (message.type === type) finish(() => resolve(message));
    };
    const onExit = (code: number | null) => finish(() => reject(new Error(`child exited (${code}) before '${type}'`)));
    const finish = (then: () => void) => {
      child.off('message', onMessage);
      child.off('exit', onExit);
      then();
    };
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

/** Ends the child (SIGTERM) and resolves once it has exited. */
export function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** Runs a program that reports once (`{ type: 'result', result }`, as memory.ts and micro.ts do) and returns it. */
export async function runChild<T>(core: string, file: string, nodeFlags: readonly string[] = []): Promise<T> {
  const child = startPinned(core, file, {}, nodeFlags);
  try {
    return (await nextMessage<{ type: 'result'; result: T }>(child, 'result')).result;
  } finally {
    await stop(child);
  }
}
