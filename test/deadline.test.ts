/**
 * A verification's deadline as a unit, on fake timers: work still listening
 * when the gate ends a verification with a verdict is cancelled at the
 * deadline, and no timer outlives what it guards.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Deadline } from '../src/deadline.js';
import { ProviderFailure } from '../src/index.js';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('Deadline', () => {
  it('cancels listeners when the time is up, with a TimeoutError, and leaves no timer', () => {
    const deadline = new Deadline(1000);
    const listener = vi.fn();
    deadline.onCancel(listener);
    vi.advanceTimersByTime(999);
    expect(listener).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(listener).toHaveBeenCalledTimes(1);
    expect(deadline.aborted).toBe(true);
    expect(deadline.reason).toMatchObject({ name: 'TimeoutError' });
    expect(vi.getTimerCount()).toBe(0);
  });

  it('end(false) with nothing listening stops the timer at once', () => {
    const deadline = new Deadline(1000);
    const listener = vi.fn();
    deadline.onCancel(listener);
    deadline.offCancel(listener);
    deadline.end(false);
    expect(vi.getTimerCount()).toBe(0);
    expect(deadline.aborted).toBe(false);
  });

  it('end(false) keeps the timer for work still listening, and cancels it at the deadline', () => {
    const deadline = new Deadline(1000);
    const leftover = vi.fn();
    deadline.onCancel(leftover);
    vi.advanceTimersByTime(100);
    deadline.end(false);
    expect(leftover).not.toHaveBeenCalled();
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(899);
    expect(leftover).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(leftover).toHaveBeenCalledTimes(1);
    expect(deadline.reason).toMatchObject({ name: 'TimeoutError' });
    expect(vi.getTimerCount()).toBe(0);
  });

  it('after end(false), the timer stops as soon as the last listener leaves', () => {
    const deadline = new Deadline(1000);
    const first = vi.fn();
    const second = vi.fn();
    deadline.onCancel(first);
    deadline.onCancel(second);
    deadline.end(false);
    deadline.offCancel(first);
    expect(vi.getTimerCount()).toBe(1);
    deadline.offCancel(second);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(5000);
    expect(first).not.toHaveBeenCalled();
    expect(second).not.toHaveBeenCalled();
    expect(deadline.aborted).toBe(false);
  });

  it('end says whether work still listens; its onIdle then runs once, when the last listener leaves or at the deadline', () => {
    const idle = vi.fn();
    expect(new Deadline(1000).end(false, idle)).toBe(false);

    const cancelled = new Deadline(1000);
    const leftover = vi.fn();
    cancelled.onCancel(leftover);
    expect(cancelled.end(true, idle)).toBe(false);
    expect(leftover).toHaveBeenCalledTimes(1);
    expect(idle).not.toHaveBeenCalled();

    const left = new Deadline(1000);
    const first = vi.fn();
    const second = vi.fn();
    left.onCancel(first);
    left.onCancel(second);
    const whenLeft = vi.fn();
    expect(left.end(false, whenLeft)).toBe(true);
    left.offCancel(first);
    expect(whenLeft).not.toHaveBeenCalled();
    left.offCancel(second);
    expect(whenLeft).toHaveBeenCalledTimes(1);

    const expiring = new Deadline(1000);
    expiring.onCancel(vi.fn());
    const atDeadline = vi.fn();
    expect(expiring.end(false, atDeadline)).toBe(true);
    vi.advanceTimersByTime(999);
    expect(atDeadline).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(atDeadline).toHaveBeenCalledTimes(1);
    // Work that starts listening later, and ends, does not run it again.
    const late = vi.fn();
    expiring.onCancel(late);
    expiring.offCancel(late);
    expect(atDeadline).toHaveBeenCalledTimes(1);
  });

  it('work that starts listening after end(false) is still cancelled at the original deadline', () => {
    const deadline = new Deadline(1000);
    vi.advanceTimersByTime(400);
    deadline.end(false);
    expect(vi.getTimerCount()).toBe(0);
    const late = vi.fn();
    deadline.onCancel(late);
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(599);
    expect(late).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(late).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('end(true) cancels listeners at once, with an AbortError, and stops the timer', () => {
    const deadline = new Deadline(1000);
    const listener = vi.fn();
    deadline.onCancel(listener);
    deadline.end(true);
    expect(listener).toHaveBeenCalledTimes(1);
    expect(deadline.reason).toMatchObject({ name: 'AbortError' });
    expect(deadline.signal.aborted).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    // Already over: a new listener is never called (callers check `aborted` first).
    const after = vi.fn();
    deadline.onCancel(after);
    vi.advanceTimersByTime(5000);
    expect(after).not.toHaveBeenCalled();
  });

  it('race rejects with a timeout when the deadline passes first', async () => {
    const deadline = new Deadline(1000);
    const racing = deadline.race(new Promise<never>(() => {}));
    vi.advanceTimersByTime(1000);
    await expect(racing).rejects.toMatchObject({ name: 'ProviderFailure', kind: 'timeout' });
    deadline.end(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('race rejects with the failure a cancelled listener had already come to, not a timeout', async () => {
    const deadline = new Deadline(1000);
    const decided = new ProviderFailure('status', 'answered 429', { status: 429, retryAfter: 7 });
    deadline.onCancel(() => undefined);
    deadline.onCancel(() => decided);
    const racing = deadline.race(new Promise<never>(() => {}));
    vi.advanceTimersByTime(1000);
    await expect(racing).rejects.toBe(decided);
  });
});
