/** `tokengate/testing`: real mock provider HTTP servers and an in-process stub provider for tests. */

export type {
  IntrospectionTokenDef,
  MockIntrospection,
  MockIntrospectionOptions,
  MockMetadataDocument,
} from './mock-introspection.js';
export { mockIntrospection } from './mock-introspection.js';
export type { MockOnlineOrNot, MockOnlineOrNotOptions, OnlineOrNotTokenDef } from './mock-onlineornot.js';
export { mockOnlineOrNot } from './mock-onlineornot.js';
export type { MockPartoo, MockPartooOptions, PartooTokenEntry } from './mock-partoo.js';
export { mockPartoo } from './mock-partoo.js';
export type { MockFault, MockProvider } from './mock-server.js';
export type { StubProviderOptions, StubToken } from './stub-provider.js';
export { stubProvider } from './stub-provider.js';
