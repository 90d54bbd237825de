// The tutorial agent (README: "Build an agent in five minutes").
// Run: SPIFFE_ENDPOINT_SOCKET=unix://… node_modules/.bin/tsx --conditions=weave-source apps/demo/tutorial/hello.ts
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { SecureAgent } from '@weave/agent';

const agent = await SecureAgent.fromConfigFile(fileURLToPath(new URL('hello.yaml', import.meta.url)));

agent.capability(
  'greet',
  { description: 'Say hello', input: z.object({ name: z.string().min(1) }) },
  ({ name }, ctx) => ({ greeting: `Hello, ${name}!`, yourSpiffeId: ctx.caller.toString() }),
);
agent.capability('forget', { description: 'Nobody may call this', input: z.object({}) }, () => ({
  forgotten: true,
}));

const { id, url } = await agent.start();
console.log(`${id.toString()} serving A2A over mTLS on ${url}`);

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void agent.stop().then(() => process.exit(0)));
}
