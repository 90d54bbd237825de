// The one home of a scenario's servers: start them in turn, run the
// measurements, and stop every one that started, whatever happens.

/** Something a scenario started and must stop. */
export interface Closable {
  close(): Promise<unknown>;
}

/**
 * Starts each server of `start` in turn, runs `body` with them, then closes
 * every server that started, last started first — also when `body` throws or
 * a later start fails (before, a scenario whose second server failed to start
 * left the first one running). A close that fails does not keep the others
 * open: its error is thrown once all are closed, unless `body` threw first.
 */
export async function withServers<T extends Record<string, Closable>, R>(
  start: { [K in keyof T]: () => Promise<T[K]> },
  body: (servers: T) => Promise<R>,
): Promise<R> {
  const started: Closable[] = [];
  const servers = {} as T;
  let result: R;
  try {
    for (const key of Object.keys(start) as Array<keyof T>) {
      const s = await start[key]();
      started.push(s);
      servers[key] = s;
    }
    result = await body(servers);
  } catch (err) {
    await closeAll(started);
    throw err;
  }
  const closeError = await closeAll(started);
  if (closeError !== undefined) throw closeError;
  return result;
}

/** Closes `started` last first; resolves with the first close error, if any. */
async function closeAll(started: Closable[]): Promise<unknown> {
  let first: unknown;
  for (const s of [...started].reverse()) {
    try {
      await s.close();
    } catch (err) {
      first ??= err;
    }
  }
  return first;
}

/** Several closables (e.g. one per fan-out peer) as one, closed in order. */
export function allOf(items: readonly Closable[]): Closable {
  return {
    async close() {
      for (const c of items) await c.close();
    },
  };
}
