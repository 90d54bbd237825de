/**
 * The OPA sidecar of docs/kubernetes/agent.yaml, run with the real opa binary
 * on the layout the kubelet gives ConfigMap volumes: the files live in a
 * timestamped `..<date>` directory, `..data` is a symlink to it, and every
 * visible entry is a symlink through `..data`. An update writes a new
 * timestamped directory and swaps `..data` atomically.
 *
 * The container's own args are read from the manifest (only the listen
 * addresses are moved to free loopback ports), so a change to the manifest
 * that breaks loading fails here.
 */
import { readFileSync } from 'node:fs';
import { mkdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { request } from 'undici';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { afterAll, describe, expect, it } from 'vitest';
import {
  freePort,
  removeDir,
  repoRoot,
  requireComponent,
  startService,
  tempDirFor,
  waitUntil,
} from '../infra.js';
import { opaHealthy, weaveRego } from '../opa.js';

const opaBin = requireComponent('opa');

const manifestPath = join(repoRoot, 'docs/kubernetes/agent.yaml');
const docs = parseAllDocuments(readFileSync(manifestPath, 'utf8')).map(
  (d) => d.toJS() as Record<string, unknown>,
);

const configMapSchema = z.object({
  kind: z.literal('ConfigMap'),
  metadata: z.object({ name: z.string() }),
  data: z.record(z.string(), z.string()),
});
const volumeSchema = z.object({
  name: z.string(),
  configMap: z
    .object({ name: z.string(), items: z.array(z.object({ key: z.string(), path: z.string() })).optional() })
    .optional(),
});
const deploymentSchema = z.object({
  kind: z.literal('Deployment'),
  spec: z.object({
    template: z.object({
      spec: z.object({
        containers: z.array(
          z.object({
            name: z.string(),
            image: z.string(),
            args: z.array(z.string()).default([]),
            volumeMounts: z.array(z.object({ name: z.string(), mountPath: z.string() })).default([]),
          }),
        ),
        volumes: z.array(volumeSchema),
      }),
    }),
  }),
});

const deployment = deploymentSchema.parse(docs.find((d) => d.kind === 'Deployment'));
const opaContainer = deployment.spec.template.spec.containers.find((c) => c.name === 'opa')!;
const configMaps = docs.filter((d) => d.kind === 'ConfigMap').map((d) => configMapSchema.parse(d));

/** ConfigMap contents per volume; `weave-rego` is created from weave.rego (see the manifest's header). */
function volumeFiles(volume: z.infer<typeof volumeSchema>): Record<string, string> {
  const cmName = volume.configMap!.name;
  const data =
    cmName === 'weave-rego'
      ? { 'weave.rego': readFileSync(weaveRego, 'utf8') }
      : configMaps.find((c) => c.metadata.name === cmName)!.data;
  const items = volume.configMap!.items ?? Object.keys(data).map((key) => ({ key, path: key }));
  return Object.fromEntries(items.map((i) => [i.path, data[i.key]!]));
}

let generation = 0;
/** Writes `files` the way the kubelet does (AtomicWriter): a new `..<ts>` dir, then `..data` swapped to it. */
async function writeConfigMapVolume(mount: string, files: Record<string, string>): Promise<void> {
  const ts = `..2026_12_01_00_00_${String(generation++).padStart(2, '0')}.${process.pid}`;
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(mount, ts, path)), { recursive: true });
    await writeFile(join(mount, ts, path), content);
  }
  const tmpLink = join(mount, '..data_tmp');
  await symlink(ts, tmpLink);
  const old = await readlink(join(mount, '..data')).catch(() => undefined);
  await rename(tmpLink, join(mount, '..data'));
  for (const top of new Set(Object.keys(files).map((p) => p.split('/')[0]!))) {
    await symlink(join('..data', top), join(mount, top)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
  if (old) await rm(join(mount, old), { recursive: true, force: true });
}

describe.skipIf(!opaBin)('the Kubernetes example’s OPA sidecar on ConfigMap volumes', () => {
  let root: string | undefined;
  let stop: (() => Promise<void>) | undefined;
  afterAll(async () => {
    await stop?.();
    if (root) await removeDir(root);
  });

  it('uses the OPA version setup.sh installs', () => {
    const v = readFileSync(join(repoRoot, 'scripts/infra/opa.sh'), 'utf8').match(
      /^OPA_VERSION=v(\S+)$/m,
    )?.[1];
    expect(opaContainer.image).toBe(`openpolicyagent/opa:${v}`);
  });

  it('loads the Rego and the policy document from the mounts, answers decisions, and follows an update', async () => {
    root = await tempDirFor('weave-k8s-opa-');
    const mounts: Record<string, string> = {};
    for (const vm of opaContainer.volumeMounts) {
      const volume = deployment.spec.template.spec.volumes.find((v) => v.name === vm.name)!;
      const local = join(root, vm.mountPath.replaceAll('/', '_'));
      await mkdir(local);
      await writeConfigMapVolume(local, volumeFiles(volume));
      mounts[vm.mountPath] = local;
    }
    const port = await freePort();
    const diag = await freePort();
    const args = opaContainer.args.map((a) => {
      if (a.startsWith('--addr=')) return `--addr=127.0.0.1:${port}`;
      if (a.startsWith('--diagnostic-addr=')) return `--diagnostic-addr=127.0.0.1:${diag}`;
      return mounts[a] ?? a;
    });
    expect(args.filter((a) => Object.values(mounts).includes(a))).toHaveLength(2);
    const svc = await startService({
      name: 'opa (k8s layout)',
      command: opaBin!.opa,
      args,
      ready: opaHealthy(`http://127.0.0.1:${diag}`),
    });
    stop = () => svc.stop();
    const decide = async (caller: string, callee: string, action: string) => {
      const res = await request(`http://127.0.0.1:${port}/v1/data/weave/authz/decision`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          input: { caller: { spiffe_id: caller }, callee: { spiffe_id: callee }, action },
        }),
      });
      return (await res.body.json()) as {
        result?: { allow: boolean; rule_id?: string };
        decision_id?: string;
      };
    };
    // What OPA loaded: one copy of the Rego, the policy at data.weave.policy,
    // nothing from the kubelet's `..data` / `..<timestamp>` entries (loaded as
    // well, they duplicate every module and document, and during an update an
    // old and a new copy conflict).
    const loaded = async () => {
      const get = async (path: string) => {
        const res = await request(`http://127.0.0.1:${port}${path}`);
        return (await res.body.json()) as { result: unknown };
      };
      const policies = (await get('/v1/policies')).result as Array<{ id: string }>;
      const data = (await get('/v1/data')).result as Record<string, unknown>;
      return { modules: policies.map((p) => p.id).sort(), dataKeys: Object.keys(data).sort() };
    };
    const first = await loaded();
    expect(first.modules).toHaveLength(1);
    expect(first.modules[0]).toMatch(/\/weave\.rego$/);
    expect(first.modules[0]).not.toContain('/..');
    expect(first.dataKeys).toEqual(['weave']);
    const orch = 'spiffe://example.org/ns/agents/sa/orchestrator';
    const search = 'spiffe://example.org/ns/agents/sa/search';
    const allowed = await decide(orch, search, 'search');
    expect(allowed.result).toMatchObject({ allow: true, rule_id: 'orchestrator-may-search' });
    expect(allowed.decision_id).toBeTruthy();
    expect((await decide(orch, search, 'delete')).result).toMatchObject({ allow: false });

    // `kubectl apply` of a changed policy: the kubelet swaps ..data; --watch reloads.
    const policyMount = Object.entries(mounts).find(([m]) => m.includes('data'))![1];
    const volume = deployment.spec.template.spec.volumes.find((v) => v.name === 'weave-policy')!;
    const updated = Object.fromEntries(
      Object.entries(volumeFiles(volume)).map(([p, c]) => [
        p,
        c.replace("actions: ['search']", "actions: ['search', 'delete']"),
      ]),
    );
    expect(JSON.stringify(updated)).toContain("'delete'");
    await writeConfigMapVolume(policyMount, updated);
    await waitUntil(
      'OPA to reload the updated ConfigMap',
      async () => (await decide(orch, search, 'delete')).result?.allow === true,
      {
        timeoutMs: 20_000,
        intervalMs: 200,
      },
    );
    expect(await loaded()).toEqual(first);
    expect(svc.log()).not.toMatch(/error/i);
  });
});
