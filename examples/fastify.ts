/**
 * `npm run start:fastify`: the Fastify demo against in-process mock providers.
 * Prints curl lines to try; Ctrl+C stops it.
 */
import { runDemo } from './demo.js';
import { createExampleApp } from './fastify-app.js';

await runDemo('Fastify', (gate) => createExampleApp(gate).listener);
