/**
 * What the Express, Koa and Fastify adapter suites share: the tokens and
 * permissions they use, the secrets no response may show, and the two mock
 * providers that know those tokens.
 */
import { type MockOnlineOrNot, type MockPartoo, mockOnlineOrNot, mockPartoo } from '../../src/testing/index.js';

export const READ = 'uptime_checks (read)';
export const WRITE = 'uptime_checks (write)';
export const PARTOO_KEY = 'partoo-server-key-must-not-leak';
export const TOKENS = {
  read: 'read-token-5b1e0f',
  write: 'write-token-9c4d2a',
  disabled: 'disabled-token-77aa01',
  unknown: 'unknown-token-3f3f3f',
};
export const CONNECTION = { userId: 'user-1', token: 'conn-valid-0a9b8c' };
export const CONSUMED = { userId: 'user-2', token: 'conn-consumed-d4e5f6' };
/** Every secret in play: none may show up in a response. */
export const SECRETS = [...Object.values(TOKENS), CONNECTION.token, CONSUMED.token, PARTOO_KEY];
/** What the route handlers answer; a failed authentication must never reach them. */
export const ROUTE_MARK = 'route-was-reached';

export const bearer = (token: string) => `Bearer ${token}`;
export const connectionQuery = ({ userId, token }: { userId: string; token: string }) =>
  `user_id=${encodeURIComponent(userId)}&token=${encodeURIComponent(token)}`;

/** The OnlineOrNot and Partoo mocks, knowing the tokens above. */
export async function startMocks(): Promise<{ oon: MockOnlineOrNot; partooMock: MockPartoo }> {
  const oon = await mockOnlineOrNot({
    tokens: {
      [TOKENS.read]: { id: 'tok_read', permissions: [READ] },
      [TOKENS.write]: { id: 'tok_write', permissions: [READ, WRITE] },
      [TOKENS.disabled]: { id: 'tok_disabled', permissions: [READ], status: 'disabled' },
    },
  });
  const partooMock = await mockPartoo({
    apiKey: PARTOO_KEY,
    tokens: [CONNECTION, { ...CONSUMED, status: 'consumed' }],
  });
  return { oon, partooMock };
}
