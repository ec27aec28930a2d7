/**
 * Scenario 2, peers on the same route and load, one after the other: tokengate's cached path against
 * passport-http-bearer (both provider calls on every request) and express-oauth2-jwt-bearer (an RS256
 * JWT verified locally). Goal: tokengate faster than both.
 */
import { formatInt, median } from '../lib.js';
import { clean, type Outcome, ratio, rps, variantSummary } from '../report.js';
import { type Bench, interleave } from '../runs.js';
import { hotLoad } from './hot.js';

/** `jwt`: a token the `express-jwt` variant accepts, signed by the suite's JWKS server. */
export async function runPeers(bench: Bench & { readonly jwt: string }): Promise<Outcome> {
  const runs = await interleave(
    bench,
    '2. Peers on the same route: tokengate (cached) vs passport-http-bearer (provider call per request) vs express-oauth2-jwt-bearer (local RS256)',
    ['express-gate', 'express-passport', 'express-jwt'],
    // The JWT variant gets the signed JWT, the others the opaque token.
    (variant) => (variant === 'express-jwt' ? { ...hotLoad, authorization: `Bearer ${bench.jwt}` } : hotLoad),
  );
  const ours = runs['express-gate'];
  const passport = runs['express-passport'];
  const jwt = runs['express-jwt'];
  const vsPassport = ratio(ours, passport);
  const vsJwt = ratio(ours, jwt);
  const ok = clean(ours, passport, jwt);
  const requestsPerSecond = (of: typeof ours) => formatInt(median(rps(of)));
  return {
    results: {
      peers: {
        tokengate: variantSummary(ours),
        passportHttpBearer: variantSummary(passport),
        expressOauth2JwtBearer: variantSummary(jwt),
        ratioVsPassport: vsPassport,
        ratioVsJwt: vsJwt,
        clean: ok,
      },
    },
    rows: [
      {
        scenario: '2a. Peer: passport-http-bearer',
        measure: 'req/s tokengate / passport',
        result: `${vsPassport.median} (${requestsPerSecond(ours)} / ${requestsPerSecond(passport)} req/s)`,
        goal: '> 1',
        met: ok && vsPassport.median > 1,
      },
      {
        scenario: '2b. Peer: express-oauth2-jwt-bearer',
        measure: 'req/s tokengate / jwt-bearer',
        result: `${vsJwt.median} (${requestsPerSecond(ours)} / ${requestsPerSecond(jwt)} req/s)`,
        goal: '> 1',
        met: ok && vsJwt.median > 1,
      },
    ],
  };
}
