/**
 * The demo app on plain `node:http`, calling the gate directly: the same
 * routes as the Express and Koa apps. Built from a gate, so the same app runs
 * against real providers, the demo's mocks, or a stub in tests.
 */
import type { RequestListener, ServerResponse } from 'node:http';
// In an app: from 'tokengate'.
import { AuthError, type Gate, requires } from '../src/index.js';
import { READ, WRITE } from './demo.js';

const canRead = requires(READ);
const canWrite = requires(WRITE);

/**
 * The query of a request target (`/checks?user_id=…&token=…`) as the gate
 * reads it: a name given once maps to its value, a repeated name to the array
 * of its values, so that `?token=a&token=b` is refused with a 400.
 * (`Object.fromEntries(searchParams)` would keep the last value alone and
 * hide the repeat.) No prototype: a parameter named `__proto__` is a
 * parameter like any other. Never throws, whatever the target.
 */
export function queryOf(target: string): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = Object.create(null);
  const queryAt = target.indexOf('?');
  if (queryAt === -1) return query;
  for (const [name, value] of new URLSearchParams(target.slice(queryAt + 1))) {
    const seen = query[name];
    if (seen === undefined) query[name] = value;
    else if (typeof seen === 'string') query[name] = [seen, value];
    else seen.push(value);
  }
  return query;
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const json = JSON.stringify(body);
  res
    .writeHead(status, {
      ...headers,
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(json),
    })
    .end(json);
}

/** tokengate's errors as JSON with their status and headers; anything else is logged and answered 500. */
function sendError(res: ServerResponse, error: unknown): void {
  if (!(error instanceof AuthError)) {
    console.error(error);
    sendJson(res, 500, { error: 'server_error', error_description: 'Internal Server Error' });
    return;
  }
  // `expose` is false only for server-side misconfiguration: keep its message in the logs.
  if (!error.expose) console.error(error);
  const description = error.expose ? error.message : 'Internal Server Error';
  sendJson(res, error.status, { error: error.code, error_description: description }, error.headers);
}

export function createExampleApp(gate: Gate): RequestListener {
  return async (req, res) => {
    const target = req.url ?? '/';
    const queryAt = target.indexOf('?');
    const path = queryAt === -1 ? target : target.slice(0, queryAt);
    // rawHeaders: Node keeps only the first of repeated Authorization headers in `headers`; the gate answers 400.
    // connection: the socket tells clients apart for admission and carries the keep-alive memo.
    const credentials = {
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      query: queryOf(target),
      connection: req.socket,
    };
    try {
      switch (`${req.method} ${path}`) {
        // Anyone; a valid token adds a name, a bad one is still refused.
        case 'GET /public': {
          const auth = await gate.authenticate(credentials, { optional: true });
          sendJson(res, 200, { hello: auth?.subject ?? 'anonymous' });
          return;
        }
        // Any valid credential, whatever its permissions.
        case 'GET /me':
          sendJson(res, 200, await gate.authenticate(credentials));
          return;
        case 'GET /checks': {
          const auth = await gate.authenticate(credentials);
          gate.authorize(auth, canRead);
          sendJson(res, 200, { owner: auth.subject, checks: [{ id: 1, url: 'https://example.com', status: 'up' }] });
          return;
        }
        case 'POST /checks': {
          const auth = await gate.authenticate(credentials);
          gate.authorize(auth, canWrite);
          sendJson(res, 201, { created: { id: 2, owner: auth.subject } });
          return;
        }
        default:
          sendJson(res, 404, { error: 'not_found', error_description: 'No such route' });
      }
    } catch (error) {
      sendError(res, error);
    }
  };
}
