/**
 * A lean HTTP/1.1 keep-alive client for the flood clients: hand-written GET requests on plain
 * sockets bound to one local address, answers read by their `Content-Length` (the flood server
 * always sends one). It spends a fraction of what a general client spends per request, so that
 * the load core, shared with the mock provider and the other clients, keeps up with the server.
 */
import { connect, type Socket } from 'node:net';

const REQUEST_TIMEOUT_MS = 15_000;

/** What a flood client reads of an answer. */
export interface RawAnswer {
  readonly status: number;
  readonly retryAfter: string | undefined;
  readonly body: string;
}

/** One keep-alive connection, one request at a time; reconnects when the server has closed it. */
export class RawConnection {
  readonly #host: string;
  readonly #port: number;
  readonly #localAddress: string;
  #socket: Socket | undefined;
  #buffered = '';
  /** Sockets opened so far. */
  connects = 0;
  #waiting: { resolve: (answer: RawAnswer) => void; reject: (error: Error) => void } | undefined;

  constructor(origin: string, localAddress: string) {
    const url = new URL(origin);
    this.#host = url.hostname;
    this.#port = Number(url.port);
    this.#localAddress = localAddress;
  }

  /** `GET path` (with `Authorization` when given); one retry on a fresh socket when a kept one was closed meanwhile. */
  async get(path: string, authorization?: string): Promise<RawAnswer> {
    const credentials = authorization === undefined ? '' : `Authorization: ${authorization}\r\n`;
    const request = `GET ${path} HTTP/1.1\r\nHost: ${this.#host}:${this.#port}\r\n${credentials}\r\n`;
    const reused = this.#socket !== undefined;
    try {
      return await this.#send(request);
    } catch (error) {
      if (!reused || (error as { code?: string }).code !== 'CLOSED_BEFORE_ANSWER') throw error;
      return this.#send(request);
    }
  }

  close(): void {
    this.#socket?.destroy();
    this.#socket = undefined;
  }

  async #send(request: string): Promise<RawAnswer> {
    const socket = this.#socket ?? (await this.#connect());
    return new Promise<RawAnswer>((resolve, reject) => {
      this.#waiting = { resolve, reject };
      this.#buffered = '';
      socket.write(request);
    });
  }

  #connect(): Promise<Socket> {
    this.connects++;
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.#host, port: this.#port, localAddress: this.#localAddress, noDelay: true });
      socket.setEncoding('latin1');
      // No answer (or an idle keep-alive socket) for this long ends the socket: every request is bounded in time.
      socket.setTimeout(REQUEST_TIMEOUT_MS, () => socket.destroy());
      socket.once('connect', () => {
        socket.off('error', reject);
        this.#socket = socket;
        resolve(socket);
      });
      socket.once('error', reject);
      socket.on('data', (chunk: string) => this.#read(chunk));
      socket.on('error', () => {});
      socket.on('close', () => {
        if (this.#socket === socket) this.#socket = undefined;
        const waiting = this.#waiting;
        this.#waiting = undefined;
        waiting?.reject(
          Object.assign(new Error('connection closed before the answer'), { code: 'CLOSED_BEFORE_ANSWER' }),
        );
      });
    });
  }

  #read(chunk: string): void {
    this.#buffered += chunk;
    const headerEnd = this.#buffered.indexOf('\r\n\r\n');
    if (headerEnd === -1) return;
    const head = this.#buffered.slice(0, headerEnd);
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.#buffered.length < headerEnd + 4 + length) return;
    const waiting = this.#waiting;
    this.#waiting = undefined;
    const body = this.#buffered.slice(headerEnd + 4, headerEnd + 4 + length);
    this.#buffered = '';
    waiting?.resolve({
      status: Number(head.slice(9, 12)),
      retryAfter: /\r\nretry-after: *([^\r]*)/i.exec(head)?.[1],
      body,
    });
  }
}

/**
 * `connections` raw connections from `localAddress`, lent one request at a time, in turn (so that
 * none sits idle long enough for the server's keep-alive timeout).
 */
export class RawPool {
  readonly #free: RawConnection[] = [];
  readonly #queue: Array<(connection: RawConnection) => void> = [];
  readonly #all: RawConnection[] = [];

  constructor(origin: string, localAddress: string, connections: number) {
    for (let i = 0; i < connections; i++) this.#all.push(new RawConnection(origin, localAddress));
    this.#free.push(...this.#all);
  }

  /**
   * Opens every connection and sends `path` once on each, without credentials: by the time it
   * resolves, the server has accepted every connection and set it up, which a measured run must
   * not pay for (a server busy with a flood takes seconds over hundreds of new connections).
   */
  async open(path: string): Promise<void> {
    await Promise.all(this.#all.map((connection) => connection.get(path)));
  }

  async get(path: string, authorization: string): Promise<RawAnswer> {
    const connection = this.#free.shift() ?? (await new Promise<RawConnection>((resolve) => this.#queue.push(resolve)));
    try {
      return await connection.get(path, authorization);
    } finally {
      const next = this.#queue.shift();
      if (next === undefined) this.#free.push(connection);
      else next(connection);
    }
  }

  /** Sockets opened after {@link open}: reconnections after the server closed one. */
  get reconnects(): number {
    return this.#all.reduce((sum, connection) => sum + connection.connects, 0) - this.#all.length;
  }

  close(): void {
    for (const connection of this.#all) connection.close();
  }
}
