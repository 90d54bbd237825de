// A TCP relay between a test's stores and PostgreSQL that the test can cut
// (every connection dropped, new ones refused) or silence (connections kept
// open, nothing relayed): the two ways a database goes away.
import { createConnection, createServer, type Server, type Socket } from 'node:net';

/** A TCP relay to PostgreSQL that the test can cut (refuse and drop everything) and heal: a partition. */
export class Partition {
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;
  #silent = false;
  port = 0;

  constructor(private readonly target: number) {}

  async open(): Promise<void> {
    this.#silent = false;
    const server = createServer((c) => {
      if (this.#silent) {
        // Accepted and never answered: the database's side of a black hole.
        this.#sockets.add(c);
        c.on('close', () => this.#sockets.delete(c));
        c.on('error', () => undefined);
        c.pause();
        return;
      }
      const up = createConnection(this.target, '127.0.0.1');
      for (const s of [c, up]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => undefined);
      }
      c.pipe(up).pipe(c);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', () => resolve()));
    this.port = (server.address() as { port: number }).port;
    this.#server = server;
  }

  /**
   * Keeps every connection open and relays nothing more, either way: a
   * database that hangs, or a network that drops packets. No error, no close.
   */
  silence(): void {
    this.#silent = true;
    for (const sock of this.#sockets) {
      sock.unpipe();
      sock.pause();
    }
  }

  async cut(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    for (const sock of this.#sockets) sock.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
