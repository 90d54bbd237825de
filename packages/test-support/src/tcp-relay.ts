// A loopback TCP relay that a test puts between a client and its server to
// break the network in chosen ways: cut it (everything dropped, new
// connections refused), silence it (two kinds of black hole), slow the
// server's answers down, reset connections, or refuse or hold new ones.
// Shared by the tests that need a misbehaving link (a2a's silent peers,
// agent's broken streams, interop's database partitions), so that each
// failure mode means the same thing everywhere.
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * How {@link TcpRelay.silence} silences a connection. In both, nothing is
 * relayed and neither side is told of the other's end (no FIN, no reset).
 *
 * - `'pause'`: the relay stops reading. What each side sends backs up in the
 *   kernel buffers until TCP's window closes: a server that hangs, or a
 *   network that drops packets. The relay does not see either side's end
 *   either. New connections are accepted and never read or answered, nor
 *   passed on (as with {@link TcpRelay.hold}).
 * - `'discard'`: the relay reads what each side sends and throws it away, so
 *   each side's writes keep going out (nothing pushes back) and the relay
 *   still sees each side's end: {@link TcpRelay.serverSide} tells when the
 *   server gave a silent connection up. New connections are passed on and
 *   silenced at once: the server sees them, and nothing else.
 */
/**
 * A loopback TCP port that was free a moment ago (the OS chose it), for a
 * program that cannot listen on port 0, or an address where nothing listens.
 */
export async function freePort(): Promise<number> {
  const probe = createServer();
  probe.unref();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/**
 * What `p` settled with within `ms`: its value, its rejection, or the string
 * `'still pending'`: how a test of a broken link tells a call that ended
 * from one that hangs, without leaving a rejection unhandled.
 */
export function settledWithin(p: Promise<unknown>, ms: number): Promise<unknown> {
  return Promise.race([
    p.then(
      (v) => v,
      (e: unknown) => e,
    ),
    new Promise<string>((resolve) => setTimeout(() => resolve('still pending'), ms)),
  ]);
}

export type Silence = 'pause' | 'discard';

/** What the relay does with a connection that arrives. */
type Incoming = 'relay' | 'refuse' | 'hold' | Silence;

/** A relayed connection: the client's side and the relay's own to the target. */
interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  /** How it was silenced, once it was: then it relays nothing more. */
  silenced: Silence | undefined;
  /** The target's answers held back by {@link TcpRelay.delay}, in order, each with when it is due. */
  readonly late: Array<{ due: number; chunk: Buffer }>;
  timer: NodeJS.Timeout | undefined;
  /** The target ended its side while answers were held back: end the client's once they are out. */
  ended: boolean;
}

/**
 * A TCP relay on 127.0.0.1 to a `target` port on 127.0.0.1, which a test
 * can break and heal. A live connection is relayed as a whole: each side's
 * end (FIN) is passed on, and when either side closes the other is closed.
 *
 * @example
 * const relay = new TcpRelay(Number(new URL(db.url).port));
 * const port = await relay.listen(); // point the client at `port`
 * relay.silence('pause'); // the database hangs
 * await relay.close(); // cut: everything dropped, new connections refused
 * await relay.listen(); // back, on the same port
 */
export class TcpRelay {
  /** The port on 127.0.0.1 that connections are relayed to; may be set after {@link listen}, before the first connection. */
  target: number;
  /**
   * How many connections {@link refuse} has reset since it was last zeroed;
   * a test may set it to 0 between cases.
   */
  refused = 0;

  readonly #pairs = new Set<Pair>();
  readonly #held = new Set<Socket>();
  readonly #waiters: Array<{ n: number; resolve: () => void }> = [];
  #server: Server | undefined;
  #port = 0;
  #incoming: Incoming = 'relay';
  #delayMs = 0;
  #accepted = 0;

  constructor(target = 0) {
    this.target = target;
  }

  /** The port the relay listens on (0 before the first {@link listen}; kept after {@link close}). */
  get port(): number {
    return this.#port;
  }

  /** How many connections have been relayed to the target in all (not those refused, held or silenced on arrival). */
  get accepted(): number {
    return this.#accepted;
  }

  /** How many connections are held unanswered ({@link hold}, or `silence('pause')`). */
  get held(): number {
    return this.#held.size;
  }

  /** How many relayed connections the target (server) still holds open, silenced ones included. */
  get serverSide(): number {
    let n = 0;
    for (const p of this.#pairs) if (!p.upstream.destroyed) n++;
    return n;
  }

  /**
   * Listens on 127.0.0.1: on a free port the first time, and on the same port
   * again after {@link close}, so that clients pointed at it reconnect (a
   * partition healed). New connections are relayed. Resolves with the port.
   */
  async listen(): Promise<number> {
    if (this.#server) throw new Error('the relay is already listening');
    const server = createServer((c) => this.#accept(c));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
    this.#incoming = 'relay';
    return this.#port;
  }

  /**
   * Cuts the link: closes both sides of every connection (FIN, not reset),
   * the held ones included, and stops listening, so that new connections
   * are refused by the system until {@link listen} again. Also the teardown.
   */
  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const p of this.#pairs) {
      clearTimeout(p.timer);
      p.client.destroy();
      p.upstream.destroy();
    }
    this.#pairs.clear();
    for (const s of this.#held) s.destroy();
    this.#held.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Silences every open connection and the ones that arrive from now on: a
   * black hole, where nothing more is relayed either way and neither side is
   * told of the other's end. No error, no close: only the sides' own
   * timeouts and checks can end such a connection. See {@link Silence} for
   * what `how` changes (whether the relay still reads, and sees each end).
   * {@link heal} relays new connections again; the silenced ones stay silent.
   */
  silence(how: Silence): void {
    this.#incoming = how;
    for (const p of this.#pairs) this.#mute(p, how);
  }

  /**
   * Holds every answer of the target for `ms` from now on (0: none), each in
   * its turn, on every connection, while what is sent to it still arrives at
   * once: requests are served in time and their answers come late, as over a
   * congested or lossy link.
   */
  delay(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delay must be 0 or more ms, got ${ms}`);
    this.#delayMs = ms;
  }

  /**
   * Resets each new connection as it arrives (after the TCP handshake),
   * counting it in {@link refused}: a server that is there but will not
   * talk. {@link heal} ends it.
   */
  refuse(): void {
    this.#incoming = 'refuse';
  }

  /**
   * Accepts each new connection and never reads or answers it, nor passes it
   * on ({@link held} counts them): a server that hangs before its first
   * byte. {@link heal} ends it for new connections, {@link release} resets the held ones.
   */
  hold(): void {
    this.#incoming = 'hold';
  }

  /**
   * Relays new connections again, after {@link silence}, {@link refuse} or
   * {@link hold}. Connections already silenced or held stay so.
   */
  heal(): void {
    this.#incoming = 'relay';
  }

  /** Resets the held connections (see {@link hold}). */
  release(): void {
    for (const s of this.#held) s.resetAndDestroy();
    this.#held.clear();
  }

  /**
   * Ends relayed connections, both sides (not the held ones: {@link release}).
   * `reset`: with a reset (RST) rather than a close (FIN), as when a
   * middlebox or a crashed host breaks a connection mid-stream; whatever
   * was inside (a TLS session) dies with it. `silencedOnly`: only those
   * that {@link silence} made black holes.
   */
  drop(options: { reset?: boolean; silencedOnly?: boolean } = {}): void {
    for (const p of this.#pairs) {
      if (options.silencedOnly === true && p.silenced === undefined) continue;
      clearTimeout(p.timer);
      for (const s of [p.client, p.upstream]) {
        if (options.reset === true) s.resetAndDestroy();
        else s.destroy();
      }
      this.#pairs.delete(p);
    }
  }

  /** Resolves once `n` connections in all have been relayed (see {@link accepted}). */
  whenAccepted(n: number): Promise<void> {
    if (this.#accepted >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }

  #accept(client: Socket): void {
    // Errors (resets, mostly) end the socket, which is all the relay needs to know.
    client.on('error', () => undefined);
    const incoming = this.#incoming;
    if (incoming === 'refuse') {
      this.refused++;
      client.resetAndDestroy();
      return;
    }
    if (incoming === 'hold' || incoming === 'pause') {
      this.#held.add(client);
      client.on('close', () => this.#held.delete(client));
      client.pause();
      return;
    }
    if (incoming === 'relay') {
      this.#accepted++;
      for (const w of this.#waiters.splice(0)) {
        if (this.#accepted >= w.n) w.resolve();
        else this.#waiters.push(w);
      }
    }
    const upstream = connect(this.target, '127.0.0.1');
    upstream.on('error', () => undefined);
    const p: Pair = { client, upstream, silenced: undefined, late: [], timer: undefined, ended: false };
    this.#pairs.add(p);
    // A live pair closes as a whole; a silenced one tells neither side of the other's end.
    client.on('close', () => {
      if (p.silenced === undefined) upstream.destroy();
      if (upstream.destroyed) this.#pairs.delete(p);
    });
    upstream.on('close', () => {
      clearTimeout(p.timer);
      if (p.silenced === undefined) client.destroy();
      if (client.destroyed) this.#pairs.delete(p);
    });
    if (incoming === 'discard') {
      this.#mute(p, 'discard');
      return;
    }
    client.pipe(upstream);
    // The target's answers go through by hand rather than piped, so that
    // delay() can hold them back on connections already open.
    upstream.on('data', (chunk: Buffer) => {
      if (p.silenced !== undefined) return;
      if (this.#delayMs === 0 && p.late.length === 0) {
        this.#answer(p, chunk);
        return;
      }
      p.late.push({ due: Date.now() + this.#delayMs, chunk });
      p.timer ??= setTimeout(() => this.#drain(p), this.#delayMs);
    });
    upstream.on('end', () => {
      if (p.silenced !== undefined) return;
      if (p.late.length === 0) client.end();
      else p.ended = true;
    });
  }

  /** Writes the answers that are due, in order, and waits for the next one. */
  #drain(p: Pair): void {
    p.timer = undefined;
    if (p.silenced !== undefined) return;
    while (p.late.length > 0 && (p.late[0] as { due: number }).due <= Date.now()) {
      this.#answer(p, (p.late.shift() as { chunk: Buffer }).chunk);
    }
    if (p.late.length > 0) {
      p.timer = setTimeout(() => this.#drain(p), (p.late[0] as { due: number }).due - Date.now());
    } else if (p.ended) {
      p.client.end();
    }
  }

  /** Passes an answer on to the client, reading no more from the target while the client lags (as a pipe would). */
  #answer(p: Pair, chunk: Buffer): void {
    if (p.client.write(chunk) || p.upstream.isPaused()) return;
    p.upstream.pause();
    p.client.once('drain', () => {
      if (p.silenced === undefined) p.upstream.resume();
    });
  }

  #mute(p: Pair, how: Silence): void {
    if (p.silenced !== undefined) return;
    p.silenced = how;
    clearTimeout(p.timer);
    p.timer = undefined;
    p.late.length = 0;
    p.client.unpipe(p.upstream);
    for (const s of [p.client, p.upstream]) {
      if (how === 'pause') {
        s.pause();
      } else {
        // Read and thrown away: the socket keeps flowing, so its end is still seen.
        s.on('data', () => undefined);
        s.resume();
      }
    }
  }
}
