import type { TaskStore } from '@weave/a2a';

/** What {@link storeProxy} does besides forwarding the store's members. */
export interface StoreProxyOptions {
  /**
   * The store is lent (the user's): `close()` is hidden from the A2A
   * server, which calls it when it closes, also after a failed start; the
   * store's owner closes it.
   */
  readonly lent?: boolean;
  /**
   * Given each method's result (a promise for the async ones), returns what
   * the caller gets instead: how the store's health learns whether it answered.
   */
  readonly observe?: ((result: unknown) => unknown) | undefined;
}

/**
 * `store` as the A2A server sees it: the one place the agent forwards
 * TaskStore members. Returned as is when neither option applies (the
 * embedded store), so that its fast path stays intact. Each method is wrapped
 * once per key, not per call: the store is on the path of every call.
 */
export function storeProxy(store: TaskStore, options: StoreProxyOptions): TaskStore {
  // Nothing to hold back when the store has no close().
  const hideClose = options.lent === true && typeof store.close === 'function';
  const observe = options.observe;
  if (!hideClose && observe === undefined) return store;
  const wrapped = new Map<PropertyKey, { of: unknown; fn: unknown }>();
  return new Proxy(store, {
    get(target, key) {
      if (hideClose && key === 'close') return undefined;
      const value: unknown = Reflect.get(target, key, target);
      if (typeof value !== 'function') return value;
      let w = wrapped.get(key);
      // Rewrapped only when the member itself changed.
      if (w?.of !== value) {
        const fn = value as (...args: unknown[]) => unknown;
        // Called on the store itself, not the proxy: its methods may use private fields.
        w = {
          of: value,
          fn:
            observe === undefined ? fn.bind(target) : (...args: unknown[]) => observe(fn.apply(target, args)),
        };
        wrapped.set(key, w);
      }
      return w.fn;
    },
  });
}
