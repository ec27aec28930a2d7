/** Reading `GET /timings` of test/support/redis-app.ts, for the multi-process test and the Redis benchmark. */

/** The slowest `/private` request (from its arrival to its answer) and the slowest upstream verification, ms. */
export interface AppTimings {
  readonly slowestRequest: number;
  readonly slowestVerification: number;
}

/** The slowest of the apps whose `/timings` routes are `urls`, each since it was last read. */
export async function slowestTimings(urls: readonly string[]): Promise<AppTimings> {
  const all = (await Promise.all(urls.map(async (url) => (await fetch(url)).json()))) as AppTimings[];
  return {
    slowestRequest: Math.max(...all.map((timing) => timing.slowestRequest)),
    slowestVerification: Math.max(...all.map((timing) => timing.slowestVerification)),
  };
}
