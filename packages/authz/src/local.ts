import { createHash } from 'node:crypto';
import { watch, type FSWatcher, type Stats } from 'node:fs';
import { open, readlink, realpath, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import { z } from 'zod';
import { timerMs } from '@weave/identity';
import { PinoAuditSink, type AuditSink } from './audit.js';
import { auditSubject, DecisionRecorder, normalizeCheck, type Verdict } from './decision.js';
import { AuthzConfigError, PolicyError } from './errors.js';
import { MatcherCache } from './matchers.js';
import { CompiledPolicy, compileText, validatePolicyWith } from './policy.js';
import { runNow, runSliced } from './slices.js';
import type { AuthzDecision, Direction, InboundCheck, OutboundCheck, PolicyEnforcer } from './types.js';

/** Options shared by every way of building a {@link LocalPolicyEnforcer}. */
export interface LocalPolicyOptions {
  /** Where decisions are recorded; default a {@link PinoAuditSink} on stdout. */
  readonly audit?: AuditSink;
  /** Operational log (reloads, rejected files); default `pino({ name: 'weave-authz' })`. */
  readonly logger?: Logger;
}

/** Outcome of one reload attempt of a file-backed policy. */
export type ReloadEvent =
  | {
      readonly ok: true;
      readonly policyId: string;
      readonly sha256: string;
      readonly changed: boolean;
      /**
       * Rules this reload compiled; the others are the policy in force's, reused
       * as they were (see README, "Hot reload"). 0 when nothing changed.
       */
      readonly rulesCompiled: number;
    }
  | { readonly ok: false; readonly error: PolicyError };

/** Options of {@link LocalPolicyEnforcer.fromFile}. */
export interface LocalPolicyFileOptions extends LocalPolicyOptions {
  /**
   * Reload when the file changes (default true): written in place, renamed
   * into place, or swapped by repointing a symlink on its way (a Kubernetes
   * ConfigMap volume), including an edit of a symlink's target in another
   * directory.
   */
  readonly watch?: boolean;
  /**
   * Quiet time after the last change event before reading the file (default
   * 50 ms): a whole number of ms from 0 to 2147483647. 0 reads it on the next
   * turn of the event loop (a half-written file is refused, keeping the
   * policy in force, and read again at the next change).
   */
  readonly debounceMs?: number;
  /** Called after each reload attempt, good or bad. */
  readonly onReload?: (event: ReloadEvent) => void;
}

// Checked when the enforcer is made, not at the first change: a NaN, negative
// or too long delay would make the reload timer fire at once, silently.
const fileOptionsSchema = z.object({ debounceMs: timerMs(0).optional() });

/**
 * The embedded default {@link PolicyEnforcer}: a default-deny policy document
 * (YAML or JSON, see README) evaluated in-process. Deny rules override allow
 * rules; the deciding rule is named in `reason`. Built from a file (hot
 * reloaded; a bad new file keeps the last good policy), a string or an object.
 */
export class LocalPolicyEnforcer implements PolicyEnforcer {
  private policy: CompiledPolicy;
  private readonly recorder: DecisionRecorder;
  private readonly logger: Logger;
  /** Watched directories, by real path: the file's own, then those its symlinks lead to. */
  private readonly watchers = new Map<string, DirWatch>();
  /** The file the last read found (undefined: none), to tell a swap from an unrelated event. */
  private loaded: FileIdentity | undefined;
  private probing = false;
  private reprobe = false;
  private debounce: NodeJS.Timeout | undefined;
  private sha256: string | undefined;
  private file: string | undefined;
  private fileOptions: LocalPolicyFileOptions | undefined;
  private reloading: Promise<ReloadEvent> | undefined;
  private closed = false;

  private constructor(policy: CompiledPolicy, options: LocalPolicyOptions) {
    this.policy = policy;
    this.logger = options.logger ?? pino({ name: 'weave-authz' });
    this.recorder = new DecisionRecorder(options.audit ?? new PinoAuditSink(this.logger), 'local');
  }

  /**
   * Builds an enforcer from a policy object.
   *
   * @throws {PolicyError} naming each invalid key.
   */
  static fromObject(doc: unknown, options: LocalPolicyOptions = {}): LocalPolicyEnforcer {
    const matchers = new MatcherCache();
    const policy = new CompiledPolicy(validatePolicyWith(doc, '<object>', matchers), undefined, matchers);
    return new LocalPolicyEnforcer(policy, options);
  }

  /**
   * Builds an enforcer from YAML or JSON text.
   *
   * @throws {PolicyError} naming the line, key and problem.
   */
  static fromString(
    text: string,
    options: LocalPolicyOptions & { source?: string } = {},
  ): LocalPolicyEnforcer {
    return new LocalPolicyEnforcer(runNow(compileText(text, options.source ?? '<string>')), options);
  }

  /**
   * Loads a policy file and, unless `watch: false`, reloads it when it changes.
   *
   * @throws {AuthzConfigError} (`LOCAL_POLICY_CONFIG_INVALID`) when `debounceMs` is not a whole number of ms from 0 to 2147483647.
   * @throws {PolicyError} when the file cannot be read (`POLICY_UNREADABLE`) or is invalid.
   */
  static async fromFile(path: string, options: LocalPolicyFileOptions = {}): Promise<LocalPolicyEnforcer> {
    const checked = fileOptionsSchema.safeParse({ debounceMs: options.debounceMs });
    if (!checked.success) {
      throw new AuthzConfigError(
        'LOCAL_POLICY_CONFIG_INVALID',
        `invalid LocalPolicyEnforcer.fromFile options: ${checked.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`,
      );
    }
    const file = resolve(path);
    const { text, sha256, identity } = await readPolicyFile(file);
    const enforcer = new LocalPolicyEnforcer(await runSliced(compileText(text, file)), options);
    enforcer.file = file;
    enforcer.sha256 = sha256;
    enforcer.loaded = identity;
    enforcer.fileOptions = options;
    if (options.watch ?? true) await enforcer.startWatching();
    return enforcer;
  }

  /** The `id` of the policy in force. */
  get policyId(): string {
    return this.policy.id;
  }

  /** Number of rules in the policy in force. */
  get ruleCount(): number {
    return this.policy.ruleCount;
  }

  checkInbound(check: InboundCheck): Promise<AuthzDecision> {
    return Promise.resolve(this.decide('inbound', check, false));
  }

  checkOutbound(check: OutboundCheck): Promise<AuthzDecision> {
    return Promise.resolve(this.decide('outbound', check, true));
  }

  /**
   * Re-reads the policy file now (also what the watcher does). A bad file
   * keeps the policy in force and is logged; the result says which happened.
   */
  reload(): Promise<ReloadEvent> {
    if (this.file === undefined) {
      return Promise.resolve({
        ok: false,
        error: new PolicyError(
          '<object>',
          [{ path: '', message: 'this enforcer was not loaded from a file' }],
          {
            code: 'POLICY_NOT_FILE_BACKED',
          },
        ),
      });
    }
    // Serialise reloads so an older read can never replace a newer policy.
    const run = (this.reloading ?? Promise.resolve()).then(() => this.reloadNow());
    this.reloading = run;
    return run;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = undefined;
    for (const { watcher } of this.watchers.values()) watcher.close();
    this.watchers.clear();
    await this.reloading;
  }

  private decide(
    direction: Direction,
    check: unknown,
    calleeRequired: boolean,
  ): AuthzDecision | Promise<AuthzDecision> {
    const start = process.hrtime.bigint();
    const policy = this.policy;
    const n = normalizeCheck(direction, check, calleeRequired);
    if ('invalid' in n) {
      return this.recorder.finish(start, direction, n, {
        allowed: false,
        reason: n.invalid,
        policyId: policy.id,
      });
    }
    let verdict: Verdict;
    try {
      const m = policy.decide(n.caller, n.callee, n.action);
      if (m.deny) {
        verdict = {
          allowed: false,
          reason: m.deny.reason,
          policyId: policy.id,
          ruleId: m.deny.id,
        };
      } else if (m.allow) {
        verdict = {
          allowed: true,
          reason: m.allow.reason,
          policyId: policy.id,
          ruleId: m.allow.id,
        };
      } else {
        verdict = { allowed: false, reason: 'no rule matched: default deny', policyId: policy.id };
      }
    } catch (err) {
      verdict = {
        allowed: false,
        reason: `policy evaluation failed: ${(err as Error).message}`,
        policyId: policy.id,
      };
    }
    return this.recorder.finish(start, direction, auditSubject(n), verdict);
  }

  private async startWatching(): Promise<void> {
    const file = this.file as string;
    const dir = dirname(file);
    // Watch the directory: editors and config management replace files by
    // rename, which a watch on the file itself would not survive.
    const key = (await realpath(dir).catch(() => undefined)) ?? dir;
    this.watchDir(key, dir, true).names.add(basename(file));
    await this.followLinks();
  }

  private watchDir(key: string, dir: string, primary: boolean): DirWatch {
    const entry: DirWatch = {
      primary,
      names: new Set(),
      watcher: watch(dir, { persistent: false }, (_event, changed) => {
        if (changed === null || entry.names.has(changed.toString())) this.schedule(true);
        // Another name: a symlink on the way may have been repointed (a ConfigMap
        // swaps `..data`), or it is an unrelated file; a stat tells which.
        else void this.probe();
      }),
    };
    entry.watcher.on('error', (err) => {
      if (primary) {
        this.logger.error(
          { err, file: this.file },
          'policy watcher failed; the policy in force stays, reloads stop',
        );
        return;
      }
      // Watched again at the next reload if the file still leads there.
      entry.watcher.close();
      if (this.watchers.get(key) === entry) this.watchers.delete(key);
      this.logger.warn({ err, file: this.file, dir }, 'policy watcher of a linked directory failed');
    });
    this.watchers.set(key, entry);
    return entry;
  }

  /**
   * Watches the directories the file's symlinks lead to, and stops watching
   * those they no longer do (a ConfigMap deletes the old version's directory).
   * Runs at start and after every reload, which are serialised.
   */
  private async followLinks(): Promise<void> {
    const file = this.file as string;
    const wanted = await linkedDirs(file);
    if (this.closed) return;
    for (const [key, entry] of this.watchers) {
      const names = wanted.get(key) ?? new Set<string>();
      wanted.delete(key);
      if (entry.primary) entry.names = new Set([basename(file), ...names]);
      else if (names.size > 0) entry.names = names;
      else {
        entry.watcher.close();
        this.watchers.delete(key);
      }
    }
    for (const [key, names] of wanted) {
      try {
        this.watchDir(key, key, false).names = names;
      } catch (err) {
        // Gone between the resolve and the watch: the next reload resolves again.
        this.logger.warn({ err, file, dir: key }, 'cannot watch a linked directory of the policy file');
      }
    }
  }

  /**
   * Schedules a reload if the file the path resolves to now is not the one
   * last read. Events coming while a probe runs are folded into one more.
   */
  private async probe(): Promise<void> {
    if (this.probing) {
      this.reprobe = true;
      return;
    }
    this.probing = true;
    try {
      do {
        this.reprobe = false;
        const now = await identify(this.file as string);
        if (this.closed) return;
        if (!sameFile(now, this.loaded)) this.schedule(false);
      } while (this.reprobe);
    } finally {
      this.probing = false;
    }
  }

  /**
   * Reloads after `debounceMs`. An event of the file itself restarts the wait;
   * a change found by a probe does not, so a busy unrelated file in the same
   * directory cannot hold a reload back.
   */
  private schedule(restart: boolean): void {
    if (this.closed) return;
    if (this.debounce) {
      if (!restart) return;
      clearTimeout(this.debounce);
    }
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.reload();
    }, this.fileOptions?.debounceMs ?? 50);
    this.debounce.unref();
  }

  /** The event of a reload that left the policy in force. */
  private unchanged(sha256: string): ReloadEvent {
    return { ok: true, policyId: this.policy.id, sha256, changed: false, rulesCompiled: 0 };
  }

  private async reloadNow(): Promise<ReloadEvent> {
    const file = this.file as string;
    // Closed while this reload waited for the one before: nothing to read.
    if (this.closed) return this.unchanged(this.sha256 as string);
    let event: ReloadEvent;
    try {
      const { text, sha256, identity } = await readPolicyFile(file).catch((err: unknown) => {
        this.loaded = undefined;
        throw err;
      });
      // Also when the file turns out bad: probes then wait for it to change again.
      this.loaded = identity;
      if (sha256 === this.sha256) {
        event = this.unchanged(sha256);
      } else {
        // Incremental: unchanged rules and matchers of the policy in force are reused. Nothing
        // of it is modified, so a file that fails here leaves it deciding as before.
        // Closed meanwhile: the compile stops at its next slice, and the policy stays as it was.
        const next = await runSliced(compileText(text, file, this.policy), () => this.closed);
        if (next === undefined || this.closed) return this.unchanged(sha256);
        this.policy = next;
        this.sha256 = sha256;
        const rulesCompiled = next.rulesCompiled;
        this.logger.info(
          { file, policyId: next.id, rules: next.ruleCount, rulesCompiled, sha256 },
          'policy reloaded',
        );
        event = { ok: true, policyId: next.id, sha256, changed: true, rulesCompiled };
      }
    } catch (err) {
      const error =
        err instanceof PolicyError
          ? err
          : new PolicyError(file, [{ path: '', message: (err as Error).message }], { cause: err });
      this.logger.error(
        { file, err: error, issues: error.issues, policyId: this.policy.id },
        'policy reload rejected; keeping the last good policy',
      );
      event = { ok: false, error };
    }
    // Before onReload, so that whoever it tells can rely on the new target being watched.
    if (this.watchers.size > 0) await this.followLinks();
    try {
      this.fileOptions?.onReload?.(event);
    } catch (err) {
      this.logger.error({ err }, 'onReload callback threw');
    }
    return event;
  }
}

/** Which file a path led to, and its version: any difference means another file or new content. */
interface FileIdentity {
  readonly real: string;
  readonly dev: number;
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

interface DirWatch {
  readonly watcher: FSWatcher;
  /** Names whose events reload at once (after the debounce) without a probe. */
  names: Set<string>;
  /** The file's own directory: its watcher failing stops reloads. */
  readonly primary: boolean;
}

const MAX_LINK_HOPS = 40;

const identityOf = (real: string, st: Stats): FileIdentity => ({
  real,
  dev: st.dev,
  ino: st.ino,
  size: st.size,
  mtimeMs: st.mtimeMs,
});

function sameFile(a: FileIdentity | undefined, b: FileIdentity | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.real === b.real && a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs
  );
}

/** The file `file` resolves to now; undefined when there is none. */
async function identify(file: string): Promise<FileIdentity | undefined> {
  try {
    const real = await realpath(file);
    return identityOf(real, await stat(real));
  } catch {
    return undefined;
  }
}

/**
 * The real directories holding each hop of `file`'s symlink chain and the
 * file it ends at, with the names there that lead to the policy.
 */
async function linkedDirs(file: string): Promise<Map<string, Set<string>>> {
  const paths: string[] = [];
  let path = file;
  for (let hop = 0; hop < MAX_LINK_HOPS; hop++) {
    let target: string;
    try {
      target = await readlink(path);
    } catch {
      break; // not a symlink, or gone
    }
    path = resolve(dirname(path), target);
    paths.push(path);
  }
  const real = await realpath(file).catch(() => undefined);
  if (real !== undefined) paths.push(real);
  const dirs = new Map<string, Set<string>>();
  for (const p of paths) {
    const dir = await realpath(dirname(p)).catch(() => undefined);
    if (dir === undefined) continue;
    const names = dirs.get(dir) ?? new Set<string>();
    names.add(basename(p));
    dirs.set(dir, names);
  }
  return dirs;
}

async function readPolicyFile(
  file: string,
): Promise<{ text: string; sha256: string; identity: FileIdentity | undefined }> {
  let buf: Buffer;
  let st: Stats;
  let handle: FileHandle | undefined;
  try {
    handle = await open(file, 'r');
    // The descriptor's stat: the identity of the very content read, even if
    // the path is swapped meanwhile (a later probe then sees the difference).
    st = await handle.stat();
    buf = await handle.readFile();
  } catch (err) {
    throw new PolicyError(
      file,
      [{ path: '', message: `cannot read policy file: ${(err as Error).message}` }],
      {
        cause: err,
        code: 'POLICY_UNREADABLE',
      },
    );
  } finally {
    await handle?.close().catch(() => undefined);
  }
  const real = await realpath(file).catch(() => undefined);
  return {
    text: buf.toString('utf8'),
    sha256: createHash('sha256').update(buf).digest('hex'),
    identity: real === undefined ? undefined : identityOf(real, st),
  };
}
