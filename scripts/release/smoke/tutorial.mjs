#!/usr/bin/env node
// Runs a README section written as steps — "Build an agent in five minutes"
// by default, or the section named by <heading> — as a stranger would: in an
// empty folder, with npm, against the packed tarballs. The steps come from the
// README itself, so the doc and the packages cannot drift apart.
//   node scripts/release/smoke/tutorial.mjs <tarball-dir> <empty-dir> [<heading>]
//
// What the section's fenced blocks mean (every block must be one of these, so
// nothing in the section goes unchecked):
//   ```<lang> file=NAME   written to NAME in the folder, verbatim.
//   ```sh                 each command runs (bash, in the folder) to its end; the `# ` lines
//                         right after it are what it must print, in order (whitespace runs
//                         match any whitespace, `…` matches anything). A trailing
//                         `(exit N)` is the exit code it must end with (default 0).
//   ```sh background      started and left running (another terminal, for the reader) once
//                         its `# ` lines have been printed; stopped with SIGINT (Ctrl-C) at
//                         the end, when all of its processes must end without an error.
// `export` lines carry over to later commands, as in a terminal.
//
// Two deliberate differences from a reader's run, both in this file:
// - `npm i @weave/…` installs the tarballs of those packages and of the @weave
//   packages they depend on (from the registry, npm would fetch those itself);
// - the agent listens on a port the OS picks (WEAVE_SERVER__PORT=0, the env override
//   the config documents; PORT=0 for a section whose code reads PORT), and later
//   commands use that port where the README says 8443.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { publishedPackages, root, tarballName } from '../packages.mjs';

export const TUTORIAL_HEADING = '## Build an agent in five minutes';
const README_PORT = '8443';
const STEP_TIMEOUT_MS = 180_000;

/** The fenced blocks of the section under `heading`, in order. */
export function tutorialBlocks(readme, heading = TUTORIAL_HEADING) {
  const start = readme.indexOf(`${heading}\n`);
  if (start < 0) throw new Error(`README has no "${heading}" section`);
  const next = readme.indexOf('\n## ', start + heading.length);
  const section = readme.slice(start, next < 0 ? undefined : next);
  const blocks = [];
  for (const m of section.matchAll(/^```(\S+)([^\n]*)\n([\s\S]*?)^```$/gm)) {
    const [, lang, info, body] = m;
    const attrs = info.trim().split(/\s+/).filter(Boolean);
    const file = attrs.find((a) => a.startsWith('file='))?.slice('file='.length);
    if (file) blocks.push({ kind: 'file', file, body });
    else if (lang === 'sh') blocks.push({ kind: 'sh', background: attrs.includes('background'), body });
    else throw new Error(`tutorial: a \`\`\`${lang} block with neither file= nor commands:\n${body}`);
  }
  if (blocks.length === 0) throw new Error('tutorial: the section has no blocks');
  return blocks;
}

/** A shell block as commands, each with the output lines it must print and its exit code. */
export function commands(body) {
  const out = [];
  const lines = body.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    if (line.trim() === '') continue;
    if (line.startsWith('#')) {
      if (out.length === 0) continue; // a note above the first command
      let expect = line.replace(/^#\s?/, '');
      const exit = /\s*\(exit (\d+)\)$/.exec(expect);
      const cmd = out[out.length - 1];
      if (exit) {
        cmd.exit = Number(exit[1]);
        expect = expect.slice(0, exit.index);
      }
      if (expect.trim() !== '') cmd.expect.push(expect.trim());
      continue;
    }
    while (line.endsWith('\\') && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i].trim()}`;
    out.push({ command: line.trim(), expect: [], exit: 0 });
  }
  return out;
}

function escape(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Matches the expected lines in order against `output`; returns the README port's stand-in or throws. */
function check(expect, output, state) {
  let rest = output;
  for (const line of expect) {
    const pattern = line
      .split('…')
      .map((part) =>
        part
          .split(/\s+/)
          .map(escape)
          .join('\\s+')
          .replaceAll(`127\\.0\\.0\\.1:${README_PORT}`, `127\\.0\\.0\\.1:${state.port ?? '(\\d+)'}`),
      )
      .join('[\\s\\S]*?');
    const m = new RegExp(pattern).exec(rest);
    if (!m) return `expected, in order: ${JSON.stringify(line)}`;
    if (m[1] && !state.port) state.port = m[1];
    rest = rest.slice(m.index + m[0].length);
  }
  return undefined;
}

/** `npm i @weave/x …` → the tarballs of @weave/x and the @weave packages it depends on. */
function withTarballs(command, tarballs) {
  const words = command.split(/\s+/);
  if (words[0] !== 'npm' || !['i', 'install'].includes(words[1])) return command;
  const pkgs = new Map(publishedPackages().map((p) => [p.name, p]));
  const wanted = new Set();
  const add = (name) => {
    const p = pkgs.get(name);
    if (!p) throw new Error(`tutorial: ${name} is not a package of this repository`);
    if (wanted.has(name)) return;
    wanted.add(name);
    const deps = JSON.parse(readFileSync(join(p.dir, 'package.json'), 'utf8')).dependencies ?? {};
    for (const d of Object.keys(deps)) if (d.startsWith('@weave/')) add(d);
  };
  const rest = words.filter((w) => {
    if (!w.startsWith('@weave/')) return true;
    add(w);
    return false;
  });
  return [...rest, ...[...wanted].map((n) => join(tarballs, tarballName(pkgs.get(n))))].join(' ');
}

function start(command, dir, background) {
  const child = spawn('bash', ['-c', command], {
    cwd: dir,
    env: { ...process.env, WEAVE_SERVER__PORT: '0', PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: background, // its own process group, so SIGINT reaches npx and what it runs, like Ctrl-C
  });
  const run = { child, output: '', code: undefined };
  for (const s of [child.stdout, child.stderr]) s.setEncoding('utf8').on('data', (d) => (run.output += d));
  run.exited = new Promise((resolve) =>
    child.once('close', (code, signal) => resolve((run.code = code ?? signal))),
  );
  return run;
}

function groupAlive(pid) {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(pred, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return true;
    await sleep(100);
  }
  return pred();
}

function fail(message, run) {
  throw new Error(`${message}${run ? `\n--- its output ---\n${run.output}--- end ---` : ''}`);
}

/** Runs the README section under `heading` in `dir` (empty) with the packages from `tarballs`. */
export async function runTutorial(
  tarballs,
  dir,
  heading = TUTORIAL_HEADING,
  readmePath = join(root, 'README.md'),
) {
  const state = { port: undefined, exports: [] };
  const background = [];
  try {
    for (const block of tutorialBlocks(readFileSync(readmePath, 'utf8'), heading)) {
      if (block.kind === 'file') {
        writeFileSync(join(dir, block.file), block.body);
        console.log(`tutorial: wrote ${block.file}`);
        continue;
      }
      for (const step of commands(block.body)) {
        if (/^export \w+=/.test(step.command)) {
          state.exports.push(step.command);
          continue;
        }
        let command = withTarballs(step.command, tarballs);
        if (state.port) command = command.replaceAll(`127.0.0.1:${README_PORT}`, `127.0.0.1:${state.port}`);
        console.log(`tutorial: $ ${step.command}${block.background ? '   (left running)' : ''}`);
        const run = start([...state.exports, command].join('\n'), dir, block.background);
        if (block.background) {
          background.push(run);
          let problem;
          const ready = await until(
            () => (problem = check(step.expect, run.output, state)) === undefined || run.code !== undefined,
            STEP_TIMEOUT_MS,
          );
          if (run.code !== undefined)
            fail(`tutorial: "${step.command}" exited (${run.code}) instead of running on`, run);
          if (!ready || problem) fail(`tutorial: "${step.command}": ${problem}`, run);
        } else {
          const ended = await Promise.race([run.exited, sleep(STEP_TIMEOUT_MS, undefined, { ref: false })]);
          if (ended === undefined) {
            run.child.kill('SIGKILL');
            fail(`tutorial: "${step.command}" did not finish in ${STEP_TIMEOUT_MS / 1000} s`, run);
          }
          if (run.code !== step.exit)
            fail(`tutorial: "${step.command}" exited ${run.code}, want ${step.exit}`, run);
          const problem = check(step.expect, run.output, state);
          if (problem) fail(`tutorial: "${step.command}": ${problem}`, run);
        }
      }
    }
    // Ctrl-C in each terminal, the last one started first: every process of it must be gone
    // (npx reports the signal as its own end, as in a terminal), and none may have crashed.
    for (const run of background.reverse()) {
      process.kill(-run.child.pid, 'SIGINT');
      const stopped = await until(() => run.code !== undefined && !groupAlive(run.child.pid), 30_000);
      if (!stopped || ![0, 'SIGINT'].includes(run.code) || /Error|ERR!/.test(run.output)) {
        fail(`tutorial: a background command did not stop cleanly on SIGINT (${run.code})`, run);
      }
    }
    console.log('tutorial: ok');
  } finally {
    for (const run of background) {
      if (run.code === undefined) {
        try {
          process.kill(-run.child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [tarballs, dir, heading] = process.argv.slice(2);
  if (!tarballs || !dir) {
    console.error('usage: node scripts/release/smoke/tutorial.mjs <tarball-dir> <empty-dir> [<heading>]');
    process.exit(2);
  }
  runTutorial(resolve(tarballs), resolve(dir), heading || undefined).catch((err) => {
    console.error(err.message);
    process.exit(1);
  });
}
