/**
 * Sends a hand-written HTTP/1.1 request over a plain TCP socket, for bytes
 * that Node's HTTP client refuses to send (control characters, raw UTF-8,
 * repeated headers exactly as written).
 */
import { connect } from 'node:net';

export interface RawResponse {
  readonly status: number;
  /** Header names lower-cased; repeated headers keep every value. */
  readonly headers: Readonly<Record<string, string[]>>;
  readonly body: string;
}

/**
 * Writes `GET <path>` with the given header lines (each `Name: value`, no
 * CRLF) plus `Host` and `Connection: close`, and reads the whole answer.
 */
export function rawGet(port: number, path: string, headerLines: ReadonlyArray<string | Buffer>): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    socket.setTimeout(5000, () => socket.destroy(new Error('raw request timed out')));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // The server may close while we still write (e.g. 431 for huge headers): parse what came back.
      if (chunks.length > 0 && (error.code === 'ECONNRESET' || error.code === 'EPIPE')) return;
      reject(error);
    });
    socket.on('close', () => {
      try {
        resolve(parse(Buffer.concat(chunks).toString('latin1')));
      } catch (error) {
        reject(error);
      }
    });
    const head = [
      Buffer.from(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n`, 'latin1'),
      ...headerLines.flatMap((line) => [typeof line === 'string' ? Buffer.from(line, 'latin1') : line, CRLF]),
      CRLF,
    ];
    // Not end(): a half-closed socket makes Node drop answers that take a moment (an upstream call).
    socket.write(Buffer.concat(head));
  });
}

const CRLF = Buffer.from('\r\n', 'latin1');

function parse(text: string): RawResponse {
  const end = text.indexOf('\r\n\r\n');
  if (end === -1) throw new Error(`no complete HTTP answer: ${JSON.stringify(text.slice(0, 200))}`);
  const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1]);
  if (!Number.isInteger(status)) throw new Error(`bad status line ${JSON.stringify(statusLine)}`);
  const headers: Record<string, string[]> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).trim().toLowerCase();
    (headers[name] ??= []).push(line.slice(colon + 1).trim());
  }
  return { status, headers, body: text.slice(end + 4) };
}
