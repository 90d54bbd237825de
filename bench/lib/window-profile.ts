// The one home of the profiles a measured window can write (`--cpu-prof`,
// `--heap-prof`), for the harness process (the servers) and every load
// generator alike: started at `window start`, written at `window end`, so
// start-up and warm-up are left out.
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';

/** Where a window's profiles go; either may be unset. */
export interface ProfileDirs {
  /** V8 CPU profile (`.cpuprofile`). */
  cpuProfDir?: string;
  /**
   * V8 sampling heap profile of every allocation in the window, kept or
   * collected since (`.heapprofile`): bytes allocated per site. Unlike CPU
   * time, this does not move with the machine's load.
   */
  heapProfDir?: string;
  /**
   * The heap profile keeps only what outlived a young-generation collection
   * (promoted to the old generation, or live at the window's end): the sites
   * whose objects live long enough to cost a copy and a full collection.
   */
  heapProfPromoted?: boolean;
}

/**
 * Mean bytes between two allocation samples. With about 40 KB allocated per
 * call, a window of thousands of calls gives thousands of samples per
 * process, at little cost to the figures measured beside it.
 */
const HEAP_SAMPLING_INTERVAL = 16 * 1024;

let session: Session | undefined;

async function connected(): Promise<Session> {
  if (!session) {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('HeapProfiler.enable');
  }
  return session;
}

/** Starts the profiles `dirs` asks for (none: nothing happens). */
export async function startWindowProfiles(dirs: ProfileDirs): Promise<void> {
  if (!dirs.cpuProfDir && !dirs.heapProfDir) return;
  const s = await connected();
  if (dirs.cpuProfDir) await s.post('Profiler.start');
  if (dirs.heapProfDir) {
    await s.post('HeapProfiler.startSampling', {
      samplingInterval: HEAP_SAMPLING_INTERVAL,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: !dirs.heapProfPromoted,
    });
  }
}

/** Stops them and writes each as `<name>.cpuprofile` / `<name>.heapprofile` in its folder. */
export async function writeWindowProfiles(dirs: ProfileDirs, name: string): Promise<void> {
  if (!dirs.cpuProfDir && !dirs.heapProfDir) return;
  const s = await connected();
  if (dirs.cpuProfDir) {
    const { profile } = await s.post('Profiler.stop');
    await writeFile(`${dirs.cpuProfDir}/${name}.cpuprofile`, JSON.stringify(profile));
  }
  if (dirs.heapProfDir) {
    const { profile } = await s.post('HeapProfiler.stopSampling');
    await writeFile(`${dirs.heapProfDir}/${name}.heapprofile`, JSON.stringify(profile));
  }
}
