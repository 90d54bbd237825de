#!/usr/bin/env node
// Entry point of the published package (runs the compiled CLI). From a checkout, run the source instead:
//   node_modules/.bin/tsx --conditions=weave-source packages/identity/src/workload/cli.ts dev …
import { main } from '../dist/workload/cli.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(
      `weave-identity: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
