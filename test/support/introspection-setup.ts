/**
 * What the introspection tests share: the client, a mock with a gate in front
 * of it, and the AuthErrors a client sees.
 */
import { expect } from 'vitest';
import { createGate, type GateOptions, type IntrospectionClientSecretOptions, introspection } from '../../src/index.js';
import {
  type IntrospectionTokenDef,
  type MockIntrospectionOptions,
  mockIntrospection,
} from '../../src/testing/index.js';
import { rejectionOf } from './catch-auth-error.js';

interface Closable {
  close(): Promise<void>;
}

export const CLIENT_ID = 'orders-api';
export const CLIENT_SECRET = 'orders-api-secret-0123456789';
export const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
/** Whole seconds since the epoch, `seconds` from now. */
export const inSeconds = (seconds: number) => Math.floor(Date.now() / 1000) + seconds;
/** A token's answer written as the JSON a (possibly broken) server sends. */
export const raw = (json: string): IntrospectionTokenDef => JSON.parse(json);

/** `setup(mock options, provider options, gate options)`: a mock and a gate on its endpoint, closed after the test. */
export function introspectionSetup(closeLater: <T extends Closable>(thing: T) => T) {
  return async (
    mockOptions: Partial<MockIntrospectionOptions> = {},
    providerOptions: Partial<IntrospectionClientSecretOptions> = {},
    gateOptions: Partial<GateOptions> = {},
  ) => {
    const mock = closeLater(
      await mockIntrospection({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, ...mockOptions }),
    );
    const provider = introspection({
      endpoint: mock.endpoint,
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      ...providerOptions,
    });
    const gate = closeLater(createGate({ providers: [provider], retry: false, ...gateOptions }));
    return { mock, gate };
  };
}

export async function expectInvalidToken(promise: Promise<unknown>, description: string) {
  const error = await rejectionOf(promise);
  expect(error.status).toBe(401);
  expect(error.code).toBe('invalid_token');
  expect(error.headers['WWW-Authenticate']).toBe(
    `Bearer realm="api", error="invalid_token", error_description="${description}"`,
  );
}

export async function expectUnavailable(promise: Promise<unknown>) {
  const error = await rejectionOf(promise);
  expect(error.status).toBe(503);
  expect(error.code).toBe('provider_unavailable');
  return error;
}

export async function expectMisconfigured(promise: Promise<unknown>) {
  const error = await rejectionOf(promise);
  expect(error.status).toBe(500);
  expect(error.code).toBe('provider_misconfigured');
  expect(error.expose).toBe(false);
  expect(error.headers).toEqual({});
  expect(error.message).not.toContain(CLIENT_SECRET);
  return error;
}
