// A TCP relay between a test's stores and PostgreSQL that the test can cut
// (every connection dropped, new ones refused), silence (connections kept
// open, nothing relayed) or slow down (the database's answers held back).
import { createConnection, createServer, type Server, type Socket } from 'node:net';

/** A TCP relay to PostgreSQL that the test can cut (refuse and drop everything) and heal: a partition. */
export class Partition {
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;
  #silent = false;
  #delayMs = 0;
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
      c.pipe(up);
      // The database's answers, each held for the current delay (in order).
      const late: Array<{ due: number; chunk: Buffer }> = [];
      let timer: NodeJS.Timeout | undefined;
      const drain = (): void => {
        timer = undefined;
        while (late.length > 0 && (late[0] as { due: number }).due <= Date.now()) {
          c.write((late.shift() as { chunk: Buffer }).chunk);
        }
        if (late.length > 0) timer = setTimeout(drain, (late[0] as { due: number }).due - Date.now());
      };
      up.on('data', (chunk: Buffer) => {
        if (this.#delayMs === 0 && late.length === 0) {
          c.write(chunk);
          return;
        }
        late.push({ due: Date.now() + this.#delayMs, chunk });
        timer ??= setTimeout(drain, this.#delayMs);
      });
      up.on('close', () => clearTimeout(timer));
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

  /**
   * Holds every answer of the database for `ms` from now on (0: none), while
   * what is sent to it still arrives at once: statements run in time and
   * their answers come late, as over a congested or lossy link.
   */
  delay(ms: number): void {
    this.#delayMs = ms;
  }

  async cut(): Promise<void> {
    const s = this.#server;
    this.#server = undefined;
    for (const sock of this.#sockets) sock.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
