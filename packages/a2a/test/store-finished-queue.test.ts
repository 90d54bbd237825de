// The embedded store's queue of finished task ids (its eviction order) must
// not outgrow the tasks it keeps. Only eviction took ids out of it, and
// eviction runs when the store is full: an agent that stays below maxTasks
// (tasks expiring by TTL first) kept the id of every task it ever finished.
// Measured in a process of its own, after full collections.
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { expect, it } from 'vitest';

it('keeps its eviction queue to the tasks it holds when tasks expire before the store fills', async () => {
  const script = fileURLToPath(new URL('./fixtures/finished-queue.ts', import.meta.url));
  const tsx = createRequire(import.meta.url).resolve('tsx');
  const printed = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      ['--expose-gc', '--conditions=weave-source', '--import', pathToFileURL(tsx).href, script, '100000'],
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    );
  });
  const { size, heap } = JSON.parse(printed) as { size: number; heap: number[] };
  expect(size).toBe(0);
  // Before, the ids kept grew the heap by 14.5 MB over the last 75 000 tasks.
  const grown = (heap.at(-1) as number) - (heap[1] as number);
  expect(grown).toBeLessThan(1_000_000);
}, 60_000);
