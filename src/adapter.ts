/**
 * The seam for framework adapters: everything an adapter needs, from the
 * public exports alone. `tokengate/express`, `tokengate/koa` and
 * `tokengate/fastify` are built on it, and so can be an adapter for Hono or
 * your own server.
 *
 * An adapter translates, nothing more:
 * 1. at mount, `authenticator(gate, options, name)` checks its arguments and
 *    returns the request handler;
 * 2. per request, it hands over a plain request (headers, query, the
 *    connection; `new NodeRequest(req, parsed)` reads a Node request that
 *    the framework wraps), and a `holder`: the framework object it stores the result
 *    on (`req` in Express, `ctx` in Koa, `request` in Fastify). It gets the
 *    context itself when it is at hand, else a promise;
 * 3. its guards call `authorize(auth, guard, holder)`, which knows the realm
 *    of an anonymous request's 401 without anything stored on the request.
 *
 * @example
 * const authenticate = authenticator(gate, { optional: false }, 'my-adapter');
 * const auth = authenticate({ headers, rawHeaders, query, connection: socket }, request);
 * // auth: AuthContext | undefined, or a promise of one: store it, then go on.
 */
import { z } from 'zod';
import { type AuthContext, isAuthContext } from './context.js';
import { credentialsRequired } from './errors.js';
import { isOwnGate } from './gate.js';
import { enforce, type Guard } from './guards.js';
import { checkOptions, optionsObject, shown } from './options.js';
import type { AuthenticateOptions, CredentialRequest, Gate } from './types.js';

/**
 * What {@link authenticator} returns: authenticates one request for the framework object `holder`. Answers the
 * context itself when it is at hand (a cached credential; `undefined` for none under `optional`), else a native
 * `Promise` of it: tell the two apart with `instanceof Promise`. A request refused without asking the provider (no
 * credential, a malformed one, credentials in two places, a credential whose rejection is cached) throws its
 * `AuthError` synchronously, before any promise, as a closed gate throws its `Error` and a `req` without `headers` its
 * `TypeError`: an adapter whose framework expects a rejected promise catches it.
 */
export type Authenticate = (
  req: CredentialRequest,
  holder: object,
) => AuthContext | undefined | Promise<AuthContext | undefined>;

/**
 * Realms of requests let through anonymously (`optional: true`), by holder: only those need the gate's realm later.
 * One map for every copy of this package in the process (its ESM and CommonJS builds), as for `AuthError`: an app may
 * take `authenticate` from one and `requires` from the other.
 */
const ANONYMOUS = Symbol.for('tokengate.anonymousRealms@2');
const registry = globalThis as { [ANONYMOUS]?: unknown };
if (!(registry[ANONYMOUS] instanceof WeakMap)) registry[ANONYMOUS] = new WeakMap<object, string>();
const anonymous = registry[ANONYMOUS] as WeakMap<object, string>;

const AdapterOptionsSchema = optionsObject(
  { optional: z.boolean({ error: (issue) => `expected true or false, got ${shown(issue.input)}` }).optional() },
  'an options object ({ optional })',
);

/**
 * Checks `gate` and `options` at mount and returns the per-request handler.
 * `adapter` names the adapter in error messages (`tokengate/express`).
 *
 * @throws TypeError when `gate` is not a gate (for example when the factory
 *   itself was mounted as middleware and is called with a request), or an
 *   option is wrong.
 */
export function authenticator(gate: Gate, options: AuthenticateOptions | undefined, adapter: string): Authenticate {
  if (!isGate(gate)) {
    throw new TypeError(
      looksLikeRequest(gate)
        ? `${adapter}: authenticate was mounted without being called: mount authenticate(gate), not authenticate`
        : `${adapter}: authenticate(gate) expects a gate from createGate(), got ${shown(gate)}`,
    );
  }
  checkOptions(AdapterOptionsSchema, options ?? {}, `${adapter}: authenticate options`);
  const authenticateOptions = { optional: options?.optional === true };
  if (!isOwnGate(gate)) return foreignGateAuthenticator(gate, authenticateOptions);
  if (!authenticateOptions.optional) return (req) => gate.authenticateNow(req, authenticateOptions);
  const realm = gate.realm;
  return (req, holder) => {
    const auth = gate.authenticateNow(req, authenticateOptions);
    if (auth === undefined) anonymous.set(holder, realm);
    else if (auth instanceof Promise) {
      return auth.then((verified) => {
        if (verified === undefined) anonymous.set(holder, realm);
        return verified;
      });
    }
    return auth;
  };
}

/**
 * The handler for a gate this copy of the package did not make (another copy's, a wrapper of one): each answer is
 * checked, as the adapters tell an answer from one to wait for by `instanceof Promise`. A thenable or another realm's
 * promise is waited for; what is not a context (nor `undefined`, under `optional`), then or at once, is a
 * `TypeError`: never a request let through.
 */
function foreignGateAuthenticator(gate: Gate, options: { readonly optional: boolean }): Authenticate {
  const { optional } = options;
  const realm = gate.realm;
  const checked = (answer: unknown, holder: object): AuthContext | undefined => {
    if (isAuthContext(answer)) return answer;
    if (answer === undefined && optional) {
      anonymous.set(holder, realm);
      return undefined;
    }
    throw new TypeError(
      `tokengate: gate.authenticateNow answered ${shown(answer)}, not an AuthContext${optional ? ' or undefined' : ''}`,
    );
  };
  return (req, holder) => {
    const auth: unknown = gate.authenticateNow(req, options);
    if (isAuthContext(auth) || (auth === undefined && optional)) return checked(auth, holder);
    return Promise.resolve(auth).then((settled) => checked(settled, holder));
  };
}

/**
 * Runs `guard` for the request held by `holder`, whose `authenticate` result
 * is `auth`. Call it on every request, cached or not. `holder` must be the
 * very object given to the {@link Authenticate} handler for this request:
 * an anonymous request (`optional: true`) gets its 401 through it, and
 * another object (`ctx.req` where the handler had `ctx`) gives the `Error`
 * of a guard mounted before `authenticate`.
 *
 * @throws AuthError 403 `insufficient_scope` when the guard does not pass,
 *   401 `credentials_required` for a request let through anonymously; an
 *   `Error` (500) when no `authenticate` ran before the guard, or when `auth` is
 *   something other than a context (another library set the same property).
 */
export function authorize(auth: unknown, guard: Guard, holder: object): void {
  if (isAuthContext(auth)) {
    enforce(guard, auth, auth.origin.realm);
    return;
  }
  const guardName = guard.mode === 'any' ? 'requiresAny' : 'requires';
  if (auth !== undefined) {
    throw new Error(
      `tokengate: ${guardName}() found ${shown(auth)} where authenticate(gate) puts its AuthContext: mount authenticate(gate) before ${guardName}(), and nothing between them that sets the same property (another auth library)`,
    );
  }
  const realm = anonymous.get(holder);
  if (realm !== undefined) throw credentialsRequired(realm);
  throw new Error(`tokengate: mount authenticate(gate) before ${guardName}()`);
}

/** Whether `value` can serve as a gate (duck-typed, so that a gate from another copy of the package works too). */
export function isGate(value: unknown): value is Gate {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Gate).realm === 'string' &&
    typeof (value as Gate).authenticateNow === 'function'
  );
}

/** A framework request or context passed where a gate was expected: the factory was mounted uncalled. */
function looksLikeRequest(value: unknown): boolean {
  return typeof value === 'object' && value !== null && ('headers' in value || 'req' in value);
}
