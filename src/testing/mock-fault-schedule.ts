/**
 * Which requests get a mock's injected fault: `every` counts verifications,
 * not requests, and `endpoints` picks the requests of a verification that
 * get it (see {@link MockFault}).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { MockFault } from './mock-faults.js';

/** How a mock's requests make up verifications: one request to each of `endpoints` with the same `key`. */
export interface VerificationParts {
  readonly endpoints: readonly string[];
  readonly key: (req: IncomingMessage) => string;
}

/**
 * A verification with requests still to come, the fault decided for it (undefined: answered normally, also for one
 * begun before the fault now set), and when its first request came.
 */
interface OpenVerification {
  readonly fault: MockFault | undefined;
  readonly missing: Set<string>;
  readonly opened: number;
  /** Whether its first request has been answered (or its connection dropped). */
  answered: boolean;
}

/**
 * How long a verification's first request waits for the others, ms, beyond the time the mock takes to answer it. A
 * gate sends them at once, or one after the other on one socket; a request whose partner does not come by then (a
 * client's own lone call) stays a verification of its own, and is no partner for a later one.
 */
const PARTNER_WINDOW_MS = 1000;

/** Verifications waiting for their other requests, at most; past it the oldest is forgotten. */
const MAX_OPEN = 1024;

/** Whether `fault` hits requests to `endpoint`. */
const targets = (fault: MockFault, endpoint: string): boolean =>
  fault.endpoints === undefined || fault.endpoints.includes(endpoint);

export class FaultSchedule {
  readonly #parts: VerificationParts | undefined;
  #fault: MockFault | undefined;
  #verifications = 0;
  /** Open verifications by key, oldest first. */
  #open = new Map<string, OpenVerification[]>();
  #openCount = 0;
  /** The verification of each connection's latest request: a client with one socket sends the partner there next. */
  #lastOnSocket = new WeakMap<object, OpenVerification>();

  /** How long the mock takes to answer now, ms: a partner's wait is that beside {@link PARTNER_WINDOW_MS}. */
  readonly #answerTime: () => number;

  /** `parts` undefined: every request is a verification of its own. */
  constructor(parts: VerificationParts | undefined, answerTime: () => number = () => 0) {
    this.#parts = parts;
    this.#answerTime = answerTime;
  }

  get fault(): MockFault | undefined {
    return this.#fault;
  }

  /**
   * Sets the fault (checked by the caller) and starts counting afresh. The verifications begun before keep their
   * decision: a request that completes one (a gate's second call, still on its way) is neither counted nor faulted anew.
   */
  set fault(fault: MockFault | undefined) {
    this.#fault = fault;
    this.#verifications = 0;
  }

  /** The fault for one request to `endpoint` (undefined for a path or method not served), or undefined to answer normally. */
  faultFor(endpoint: string | undefined, req: IncomingMessage, res: ServerResponse): MockFault | undefined {
    // A path or method the mock does not serve is answered as without a fault (404 or 405), and not counted.
    if (endpoint === undefined) return undefined;
    const fault = this.#fault;
    const partOfOne = this.#parts?.endpoints.includes(endpoint) === true;
    // A request the fault leaves alone, and that is no part of a verification it may hit, is not counted.
    if (!partOfOne && (fault === undefined || !targets(fault, endpoint))) return undefined;
    // Verifications are followed without a fault too, so that a request completing one begun before it is known.
    const decided = this.#decide(endpoint, req, res, fault);
    return decided !== undefined && targets(decided, endpoint) ? decided : undefined;
  }

  /** The fault of the verification this request belongs to, decided by its first request; undefined for none. */
  #decide(
    endpoint: string,
    req: IncomingMessage,
    res: ServerResponse,
    fault: MockFault | undefined,
  ): MockFault | undefined {
    const parts = this.#parts;
    if (parts === undefined || !parts.endpoints.includes(endpoint)) return this.#next(fault);
    const key = parts.key(req);
    const queue = this.#open.get(key);
    const now = performance.now();
    const window = PARTNER_WINDOW_MS + this.#answerTime();
    while (queue !== undefined && queue.length > 0 && now - (queue[0] as OpenVerification).opened > window) {
      this.#close(key, queue, queue[0] as OpenVerification);
    }
    const joined = queue === undefined ? undefined : this.#partnerOf(queue, endpoint, req.socket);
    if (queue !== undefined && joined !== undefined) {
      this.#lastOnSocket.set(req.socket, joined);
      joined.missing.delete(endpoint);
      if (joined.missing.size === 0) this.#close(key, queue, joined);
      return joined.fault;
    }
    const decided = this.#next(fault);
    const missing = new Set(parts.endpoints.filter((name) => name !== endpoint));
    if (missing.size > 0) {
      const open: OpenVerification = { fault: decided, missing, opened: now, answered: false };
      res.once('close', () => {
        open.answered = true;
      });
      this.#lastOnSocket.set(req.socket, open);
      this.#remember(key, open);
    }
    return decided;
  }

  /**
   * The open verification of `queue` a request to `endpoint` on `socket` completes: the one whose request this socket
   * carried last (a client with one socket sends the partner once the first is answered); else the oldest whose first
   * request is still unanswered (sent beside it: a lone request answered before, a client's own call or one whose
   * partner was never sent, is none); else the newest (a partner that waited for a socket).
   */
  #partnerOf(queue: readonly OpenVerification[], endpoint: string, socket: object): OpenVerification | undefined {
    const last = this.#lastOnSocket.get(socket);
    if (last?.missing.has(endpoint) && queue.includes(last)) return last;
    return (
      queue.find((open) => !open.answered && open.missing.has(endpoint)) ??
      queue.findLast((open) => open.missing.has(endpoint))
    );
  }

  /** Counts a new verification under `fault`: the fault when it is this one's turn, else undefined (none counted without one). */
  #next(fault: MockFault | undefined): MockFault | undefined {
    if (fault === undefined) return undefined;
    this.#verifications += 1;
    return this.#verifications % (fault.every ?? 1) === 0 ? fault : undefined;
  }

  #remember(key: string, open: OpenVerification): void {
    const queue = this.#open.get(key);
    if (queue === undefined) this.#open.set(key, [open]);
    else queue.push(open);
    this.#openCount += 1;
    if (this.#openCount > MAX_OPEN) {
      const [oldestKey, oldestQueue] = this.#open.entries().next().value as [string, OpenVerification[]];
      this.#close(oldestKey, oldestQueue, oldestQueue[0] as OpenVerification);
    }
  }

  #close(key: string, queue: OpenVerification[], open: OpenVerification): void {
    queue.splice(queue.indexOf(open), 1);
    if (queue.length === 0) this.#open.delete(key);
    this.#openCount -= 1;
  }
}
