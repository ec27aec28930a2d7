/**
 * tokengate: authenticate requests against remote token providers and gate
 * routes by permission. Framework-free core; see `tokengate/express` and
 * `tokengate/koa` for middleware, `tokengate/testing` for test doubles.
 */
export { createGate } from './gate.js';
export type { Gate, GateOptions, GateStats, AuthenticateOptions } from './gate.js';
export { AuthContext } from './context.js';
export { AuthError, formatScope } from './errors.js';
export type { AuthErrorCode } from './errors.js';
export { requires, requiresAny } from './guards.js';
export type { Guard } from './guards.js';
export { onlineOrNot } from './providers/onlineornot.js';
export type { OnlineOrNotOptions, OnlineOrNotDetails } from './providers/onlineornot.js';
export { partoo } from './providers/partoo.js';
export type { PartooOptions, PartooDetails, ConnectionTokenStatus } from './providers/partoo.js';
export { extractBearer } from './credentials/bearer.js';
export type { BearerCredential } from './credentials/bearer.js';
export { extractConnection } from './credentials/connection.js';
export type { ConnectionCredential, ConnectionQueryNames } from './credentials/connection.js';
export { ProviderFailure } from './types.js';
export type {
  Credential,
  CredentialRequest,
  HeaderValue,
  Principal,
  Provider,
  ProviderFailureKind,
  Verdict,
} from './types.js';
export type { CacheOptions } from './cache.js';
export type { RetryOptions, BreakerOptions } from './resilience.js';
export type { HttpOptions } from './http.js';
export type { GateEvent, EventListener, BreakerState } from './events.js';
