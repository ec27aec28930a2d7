/**
 * `npm start`: the Express demo against in-process mock providers. Prints
 * curl lines to try; Ctrl+C stops it.
 */
import { runDemo } from './demo.js';
import { createExampleApp } from './express-app.js';

await runDemo('Express', createExampleApp);
