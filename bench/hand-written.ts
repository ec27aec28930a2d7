/** The hand-written provider lookup of the cold path's and the peers' baselines (bench/server.ts, bench/cold-parts.ts). */
import { Pool } from 'undici';
import { PROVIDER_POOL_SIZE } from './lib.js';

export interface HandUser {
  readonly id: string;
  readonly permissions: readonly string[];
}

/**
 * What people write by hand: both OnlineOrNot endpoints through a keep-alive undici pool of the gate's
 * size, `body.json()`, no cache, no deadline, size cap or schema. Resolves undefined for a rejected token.
 */
export function handWrittenLookup(providerUrl: string): (token: string) => Promise<HandUser | undefined> {
  const pool = new Pool(providerUrl, { connections: PROVIDER_POOL_SIZE, keepAliveTimeout: 10_000 });
  return async (token) => {
    const headers = { accept: 'application/json', authorization: `Bearer ${token}` };
    const [verify, permissions] = await Promise.all([
      pool.request({ method: 'GET', path: '/v1/tokens/verify', headers }),
      pool.request({ method: 'GET', path: '/v1/tokens/permissions', headers }),
    ]);
    const [verifyBody, permissionsBody] = (await Promise.all([verify.body.json(), permissions.body.json()])) as [
      { result?: { id?: string; status?: string } },
      { result?: { permissions?: string[] } },
    ];
    if (verify.statusCode !== 200 || permissions.statusCode !== 200) return undefined;
    if (verifyBody.result?.status !== 'active' || typeof verifyBody.result.id !== 'string') return undefined;
    return { id: verifyBody.result.id, permissions: permissionsBody.result?.permissions ?? [] };
  };
}
