// Entry point of the `weave` command (bin/weave.mjs runs it, compiled or through tsx).
import { run } from './cli.js';

process.exit(await run(process.argv.slice(2)));
