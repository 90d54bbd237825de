// A task database URL that is not a PostgreSQL URL is a mistake in the
// config: start() refuses it as such, before connecting, without printing it.
// It used to try 127.0.0.1:5432 and fail with the retryable
// AGENT_STORE_UNAVAILABLE (ECONNREFUSED), a database "away".
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentConfigError, SecureAgent } from '../src/index.js';
import { startWorld, testLogger, type World } from './helpers.js';

let world: World;
beforeAll(async () => {
  world = await startWorld();
});
afterAll(async () => {
  await world?.close();
});

describe('store.postgres with a URL that is not postgres://', () => {
  it.each(['mysql://weave:s3cret@127.0.0.1/weave', 'postgres://weave:s3cret@127.0.0.1:99999/weave'])(
    '%s: start() is AGENT_CONFIG_INVALID naming the variable, and nothing listens',
    async (url) => {
      const agent = new SecureAgent({
        config: {
          name: 'search',
          identity: { workloadApi: { socket: world.dev.address('search') } },
          authz: { policyFile: world.policyFile },
          store: { postgres: { urlEnv: 'TASK_DB' } },
        },
        env: { TASK_DB: url },
        logger: testLogger(),
      });
      const err = await agent.start().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AgentConfigError);
      expect((err as AgentConfigError).code).toBe('AGENT_CONFIG_INVALID');
      expect((err as Error).message).toContain('TASK_DB');
      expect((err as Error).message).not.toContain('s3cret');
      expect(() => agent.url).toThrow();
      await agent.stop();
    },
  );
});
