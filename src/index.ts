/**
 * tokengate: authenticate requests against remote token providers and gate
 * routes by permission. Framework-free core; see `tokengate/express`,
 * `tokengate/koa` and `tokengate/fastify` for middleware and hooks,
 * `tokengate/redis` for a cache shared by several instances,
 * `tokengate/testing` for test doubles, and
 * `authenticator` / `authorize` for writing an adapter of your own.
 */

export type { Authenticate } from './adapter.js';
export { authenticator, authorize, isGate } from './adapter.js';
export { AuthContext } from './context.js';
export type { BearerCredential } from './credentials/bearer.js';
export { extractBearer } from './credentials/bearer.js';
export type { ConnectionCredential, ConnectionQueryNames } from './credentials/connection.js';
export { extractConnection, findConnection } from './credentials/connection.js';
export {
  type HeaderCredential,
  type HeaderExtractor,
  type HeaderExtractorOptions,
  headerExtractor,
} from './credentials/header.js';
export type { AuthErrorCode } from './errors.js';
export { AuthError, formatScope, invalidRequest } from './errors.js';
export type {
  BreakerState,
  CacheResult,
  EventListener,
  GateEvent,
  SharedFailureReason,
  SharedOperation,
} from './events.js';
export { createGate } from './gate.js';
export type { AdmissionOptions, GateOptions } from './gate-options.js';
export type { Guard } from './guards.js';
export { requires, requiresAny } from './guards.js';
export type { HttpOptions } from './http.js';
export { ProviderFailure, type ProviderFailureKind, type ProviderFailureOptions } from './provider-failure.js';
export type {
  IntrospectionAccessToken,
  IntrospectionAccessTokenOptions,
  IntrospectionClientAuth,
  IntrospectionClientSecretOptions,
  IntrospectionCommonOptions,
  IntrospectionDetails,
  IntrospectionOptions,
} from './providers/introspection.js';
export { introspection } from './providers/introspection.js';
export type { OnlineOrNotDetails, OnlineOrNotOptions } from './providers/onlineornot.js';
export { onlineOrNot } from './providers/onlineornot.js';
export type { ConnectionTokenStatus, PartooDetails, PartooOptions } from './providers/partoo.js';
export { partoo } from './providers/partoo.js';
export { secretDigest } from './providers/secret-digest.js';
export { type FrameworkRequest, type NodeIncoming, NodeRequest } from './request.js';
export type { BreakerOptions, RetryOptions } from './resilience.js';
export type { SharedClaim, SharedFailureCode, SharedLease, SharedTier, SharedVerdict } from './shared-tier.js';
export type { CacheOptions } from './store.js';
export type { BreakerTrace, CacheTrace, VerifyTrace } from './tracing.js';
export { CHANNELS } from './tracing.js';
export type {
  AdmissionLoad,
  AuthenticateOptions,
  Credential,
  CredentialRequest,
  Gate,
  GateRequest,
  GateStats,
  HeaderValue,
  PartialCredential,
  Principal,
  Provider,
  Verdict,
} from './types.js';
