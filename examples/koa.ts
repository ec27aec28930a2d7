/**
 * `npm run start:koa`: the Koa demo against in-process mock providers.
 * Prints curl lines to try; Ctrl+C stops it.
 */
import { runDemo } from './demo.js';
import { createExampleApp } from './koa-app.js';

await runDemo('Koa', (gate) => createExampleApp(gate).callback());
