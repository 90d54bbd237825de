// The policy file's watcher follows symlinks: a Kubernetes ConfigMap volume
// swaps the file by repointing `..data`, and a link may lead to a file in
// another directory. Unrelated files next to the policy cause no reload.
import type * as nodeFs from 'node:fs';
import { mkdir, mkdtemp, realpath, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LocalPolicyEnforcer, type ReloadEvent } from '../src/index.js';
import { CALLER, policyText } from './helpers/policy-text.js';
import { CollectingSink, memoryLogger } from './helpers/sinks.js';

/** Every watcher the enforcer opens, whether it was closed, and the names its events carried. */
const watched = vi.hoisted(() => ({
  all: [] as { dir: string; closed: boolean; names: string[] }[],
  /** Called after an event was handed to the enforcer's listener. */
  onEvent: undefined as (() => void) | undefined,
}));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof nodeFs>();
  const watch = (dir: string, options: { persistent?: boolean }, listener: nodeFs.WatchListener<string>) => {
    const entry = { dir, closed: false, names: [] as string[] };
    const watcher: nodeFs.FSWatcher = fs.watch(dir, options, (event, name) => {
      entry.names.push(name ?? '');
      listener(event, name);
      watched.onEvent?.();
    });
    const close = watcher.close.bind(watcher);
    watcher.close = () => {
      entry.closed = true;
      close();
    };
    watched.all.push(entry);
    return watcher;
  };
  return { ...fs, watch, default: { ...fs, watch } };
});

describe('LocalPolicyEnforcer.fromFile through symlinks', () => {
  let dir: string;
  let enforcer: LocalPolicyEnforcer | undefined;

  beforeEach(async () => {
    // Real, so that it reads as the watcher names the directories it follows.
    dir = await realpath(await mkdtemp(join(tmpdir(), 'weave-authz-links-')));
    watched.all.length = 0;
    watched.onEvent = undefined;
  });
  afterEach(async () => {
    await enforcer?.close();
    enforcer = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function load(file: string, debounceMs = 20) {
    const events: ReloadEvent[] = [];
    let wake: (() => void) | undefined;
    const log = memoryLogger();
    enforcer = await LocalPolicyEnforcer.fromFile(file, {
      audit: new CollectingSink(),
      logger: log.logger,
      debounceMs,
      onReload: (ev) => {
        events.push(ev);
        wake?.();
      },
    });
    /** Resolves with the first reload event (past or future) that satisfies `pred`. */
    const reloaded = (pred: (ev: ReloadEvent) => boolean) =>
      new Promise<ReloadEvent>((resolve) => {
        const check = () => {
          const hit = events.find(pred);
          if (hit) resolve(hit);
          else wake = check;
        };
        check();
      });
    return { e: enforcer, events, reloaded, log };
  }

  const allows = async (e: LocalPolicyEnforcer, action: string) =>
    (await e.checkInbound({ caller: CALLER, action })).allowed;

  /** A ConfigMap volume as the kubelet lays it out, holding `policy.yaml` at version `v`. */
  async function writeVersion(v: string, text: string) {
    await mkdir(join(dir, `..2026_12_05_${v}`));
    await writeFile(join(dir, `..2026_12_05_${v}`, 'policy.yaml'), text);
  }

  /** The kubelet's update: new version dir, `..data_tmp` renamed over `..data`, old dir removed. */
  async function configMapUpdate(from: string, to: string, text: string) {
    await writeVersion(to, text);
    await symlink(`..2026_12_05_${to}`, join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    await rm(join(dir, `..2026_12_05_${from}`), { recursive: true });
  }

  async function configMapVolume() {
    await writeVersion('v1', policyText('v1', 'search'));
    await symlink('..2026_12_05_v1', join(dir, '..data'));
    await symlink('..data/policy.yaml', join(dir, 'policy.yaml'));
    return join(dir, 'policy.yaml');
  }

  it('reloads a ConfigMap-mounted file when the kubelet swaps ..data, again after the old version is gone', async () => {
    const { e, events, reloaded, log } = await load(await configMapVolume());
    expect(await allows(e, 'search')).toBe(true);
    expect(await allows(e, 'write')).toBe(false);

    await configMapUpdate('v1', 'v2', policyText('v2', 'write'));
    expect(await reloaded((ev) => ev.ok && ev.policyId === 'v2')).toMatchObject({ changed: true });
    expect(e.policyId).toBe('v2');
    expect(await allows(e, 'write')).toBe(true);
    expect(await allows(e, 'search')).toBe(false);

    // The directory watched for v1 is gone; the next update is seen all the same.
    await configMapUpdate('v2', 'v3', policyText('v3', 'delete'));
    await reloaded((ev) => ev.ok && ev.policyId === 'v3');
    expect(await allows(e, 'delete')).toBe(true);
    expect(await allows(e, 'write')).toBe(false);
    expect(events.filter((ev) => !ev.ok)).toEqual([]);
    expect(log.lines().filter((l) => (l.level as number) >= 40)).toEqual([]);
    // Only the volume's directory and the version in force are watched.
    expect(watched.all.filter((w) => !w.closed).map((w) => w.dir)).toEqual([
      dir,
      join(dir, '..2026_12_05_v3'),
    ]);
  });

  it('reloads when the target of a symlink in another directory is edited in place, and follows a repointed link', async () => {
    await mkdir(join(dir, 'etc'));
    await mkdir(join(dir, 'real'));
    await mkdir(join(dir, 'next'));
    await writeFile(join(dir, 'real', 'policy.yaml'), policyText('v1', 'search'));
    await symlink(join(dir, 'real', 'policy.yaml'), join(dir, 'etc', 'policy.yaml'));
    const { e, reloaded } = await load(join(dir, 'etc', 'policy.yaml'));

    // Nothing changes in etc/: only a watch on real/ can see this.
    await writeFile(join(dir, 'real', 'policy.yaml'), policyText('v2', 'write'));
    expect(await reloaded((ev) => ev.ok && ev.policyId === 'v2')).toMatchObject({ changed: true });
    expect(await allows(e, 'write')).toBe(true);
    expect(await allows(e, 'search')).toBe(false);

    // The link repointed (renamed into place) to a file in a third directory...
    await writeFile(join(dir, 'next', 'policy.yaml'), policyText('v3', 'read'));
    await symlink(join(dir, 'next', 'policy.yaml'), join(dir, 'etc', '.policy.yaml.tmp'));
    await rename(join(dir, 'etc', '.policy.yaml.tmp'), join(dir, 'etc', 'policy.yaml'));
    await reloaded((ev) => ev.ok && ev.policyId === 'v3');
    // ...whose in-place edits are followed from then on.
    await writeFile(join(dir, 'next', 'policy.yaml'), policyText('v4', 'delete'));
    await reloaded((ev) => ev.ok && ev.policyId === 'v4');
    expect(await allows(e, 'delete')).toBe(true);
    expect(watched.all.filter((w) => !w.closed).map((w) => w.dir)).toEqual([
      join(dir, 'etc'),
      join(dir, 'next'),
    ]);

    await e.close();
    expect(watched.all.length).toBeGreaterThan(2);
    expect(watched.all.filter((w) => !w.closed)).toEqual([]);
  });

  it('does not reload for changes to unrelated files next to the policy or its target', async () => {
    const file = await configMapVolume();
    const { e, events, reloaded } = await load(file);
    const version = join(dir, '..2026_12_05_v1');
    const expected = ['notes.txt', 'other.yaml.tmp', 'other.yaml', 'extra.yaml'];
    const delivered = () => watched.all.flatMap((w) => w.names);
    const allDelivered = new Promise<void>((resolve) => {
      watched.onEvent = () => {
        if (expected.every((n) => delivered().includes(n))) resolve();
      };
    });

    await writeFile(join(dir, 'notes.txt'), 'one');
    await writeFile(join(dir, 'notes.txt'), 'two');
    await writeFile(join(dir, 'other.yaml.tmp'), policyText('other', 'write'));
    await rename(join(dir, 'other.yaml.tmp'), join(dir, 'other.yaml'));
    await writeFile(join(version, 'extra.yaml'), policyText('extra', 'write'));
    await allDelivered;
    // No event to await for "nothing happened": a reload would start debounceMs (20 ms)
    // after an event and report within a few ms more; 250 ms leaves ten times that.
    await new Promise((r) => setTimeout(r, 250));
    expect(events).toEqual([]);
    expect(e.policyId).toBe('v1');

    // The watcher is still live: the next real change is the first reload.
    await configMapUpdate('v1', 'v2', policyText('v2', 'write'));
    await reloaded((ev) => ev.ok && ev.policyId === 'v2');
    expect(events[0]).toMatchObject({ ok: true, policyId: 'v2', changed: true });
  });

  it('keeps the policy in force when the symlink leads nowhere, and reloads when it leads somewhere again', async () => {
    const file = await configMapVolume();
    const { e, reloaded } = await load(file);
    await rm(join(dir, '..data'));
    const gone = await reloaded((ev) => !ev.ok);
    expect(gone).toMatchObject({ ok: false, error: { code: 'POLICY_UNREADABLE' } });
    expect(await allows(e, 'search')).toBe(true);

    await writeVersion('v2', policyText('v2', 'write'));
    await symlink('..2026_12_05_v2', join(dir, '..data'));
    await reloaded((ev) => ev.ok && ev.policyId === 'v2');
    expect(await allows(e, 'write')).toBe(true);
  });
});
