/**
 * Counts the timers created while it watches that are still pending and
 * keep the process alive: what a component left behind, unlike
 * `process.getActiveResourcesInfo()`, whose count also moves with timers of
 * the test runner that come and go meanwhile.
 */
import { createHook } from 'node:async_hooks';

/** A Node timer (`setTimeout`, `setInterval`) as async_hooks hands it over. */
interface NodeTimer {
  /** Set by Node when the timer fired for the last time or was cleared. */
  readonly _destroyed?: boolean;
  hasRef?(): boolean;
}

export interface TimerWatch {
  /** Timers created since `watchTimers()` that are neither done nor unref'd. */
  pending(): number;
  /** Stops watching. */
  stop(): void;
}

export function watchTimers(): TimerWatch {
  const timers = new Set<NodeTimer>();
  const hook = createHook({
    init(_id, type, _trigger, resource) {
      if (type === 'Timeout') timers.add(resource as NodeTimer);
    },
  });
  hook.enable();
  return {
    pending() {
      let count = 0;
      for (const timer of timers) {
        if (timer._destroyed === true) timers.delete(timer);
        else if (timer.hasRef?.() !== false) count++;
      }
      return count;
    },
    stop() {
      hook.disable();
    },
  };
}
