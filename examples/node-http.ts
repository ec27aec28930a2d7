/**
 * `npx tsx examples/node-http.ts`: the plain `node:http` demo against
 * in-process mock providers. Prints curl lines to try; Ctrl+C stops it.
 */
import { runDemo } from './demo.js';
import { createExampleApp } from './node-http-app.js';

await runDemo('node:http', createExampleApp);
