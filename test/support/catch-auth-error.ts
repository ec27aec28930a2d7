/** Gets the AuthError a call throws, failing the test when it throws anything else or nothing. */
import { expect } from 'vitest';
import { AuthError } from '../../src/index.js';

/** The AuthError `promise` rejects with. */
export async function rejectionOf(promise: Promise<unknown>): Promise<AuthError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(AuthError);
  return error as AuthError;
}

/** The AuthError `call` throws. */
export function thrownBy(call: () => unknown): AuthError {
  let error: unknown;
  try {
    call();
  } catch (caught) {
    error = caught;
  }
  expect(error).toBeInstanceOf(AuthError);
  return error as AuthError;
}
