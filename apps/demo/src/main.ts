// `npm run demo` (from the repository root, through scripts/demo.mjs) runs this file.
import { parseArgs } from 'node:util';
import { runDemo } from './demo.js';

const USAGE = `usage: npm run demo [-- --keep-running] [--verbose]

Starts the dev Workload API server and three Weave agents (orchestrator, search,
summarizer) on 127.0.0.1, runs the orchestrator's task and prints a transcript.
  --keep-running  keep the agents up afterwards and show how to explore them with the weave CLI
  --verbose       agent logs (info and up) on stderr`;

let values: { 'keep-running'?: boolean; verbose?: boolean; help?: boolean };
try {
  ({ values } = parseArgs({
    options: {
      'keep-running': { type: 'boolean' },
      verbose: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  }));
} catch (e) {
  process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const code = await runDemo({
  out: (l) => void process.stdout.write(`${l}\n`),
  err: (l) => void process.stderr.write(`${l}\n`),
  keepRunning: values['keep-running'] === true,
  verbose: values.verbose === true,
});
process.exit(code);
