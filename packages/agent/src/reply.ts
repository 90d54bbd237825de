/**
 * What a capability may answer besides one JSON value: text, files, several
 * artifacts. A capability that returns a plain value still answers one data
 * artifact named `result`, as before; `callAgent` reads each shape back.
 */
import { randomUuid } from '@weave/identity';
import type { Artifact, ArtifactInput, Part, Task } from '@weave/a2a';

/** A file, as bytes or as a URL, with its media type and (optionally) a file name. */
export type FileContent =
  | { readonly bytes: Uint8Array; readonly mediaType: string; readonly filename?: string }
  | { readonly url: string; readonly mediaType: string; readonly filename?: string };

/** One part of an artifact: text (a string), a JSON value (`{ data }`), or a file. */
export type ReplyPart = string | { readonly data: unknown } | FileContent;

/** One artifact of a reply or a streamed chunk. */
export interface ReplyArtifact {
  /** Set to append later chunks to this artifact; made up when missing. */
  readonly artifactId?: string;
  readonly name?: string;
  readonly description?: string;
  readonly parts: readonly ReplyPart[];
}

/**
 * A capability's answer as A2A artifacts (build one with {@link reply}).
 * Returned from a handler, each artifact becomes one artifact of the task.
 */
export class CapabilityReply {
  /** The artifacts, in the order the caller gets them. */
  readonly artifacts: readonly ReplyArtifact[];

  constructor(artifacts: readonly ReplyArtifact[]) {
    this.artifacts = artifacts;
  }
}

/** Builders of a {@link CapabilityReply}. */
export const reply = {
  /** One text artifact; `callAgent` reads back the string. */
  text(text: string, name = 'result'): CapabilityReply {
    return new CapabilityReply([{ name, parts: [text] }]);
  },
  /** One JSON artifact (what returning the value does); `callAgent` reads back the value. */
  data(value: unknown, name = 'result'): CapabilityReply {
    return new CapabilityReply([{ name, parts: [{ data: value }] }]);
  },
  /** One file artifact; `callAgent` reads back a {@link FileResult}. */
  file(file: FileContent, name = 'result'): CapabilityReply {
    return new CapabilityReply([{ name, parts: [file] }]);
  },
  /** Several artifacts; `callAgent` reads back the payload of each, in order (an array). */
  artifacts(...artifacts: ReplyArtifact[]): CapabilityReply {
    return new CapabilityReply(artifacts);
  },
};

/** A file as `callAgent` reads it back. */
export interface FileResult {
  /** The bytes, when the file travelled inline. */
  readonly bytes?: Buffer;
  /** Where the file is, when it travelled as a URL. */
  readonly url?: string;
  readonly mediaType?: string;
  readonly filename?: string;
}

/** The A2A part of a {@link ReplyPart}. */
function toPart(p: ReplyPart): Part {
  if (typeof p === 'string') return { text: p };
  if ('data' in p) return { data: p.data === undefined ? null : p.data, mediaType: 'application/json' };
  const file: Part =
    'bytes' in p
      ? { raw: Buffer.from(p.bytes.buffer, p.bytes.byteOffset, p.bytes.byteLength).toString('base64') }
      : { url: p.url };
  file.mediaType = p.mediaType;
  if (p.filename !== undefined) file.filename = p.filename;
  return file;
}

/** The A2A artifact of a {@link ReplyArtifact}. */
export function toArtifact(a: ReplyArtifact): Artifact {
  const out: Artifact = { artifactId: a.artifactId ?? randomUuid(), parts: a.parts.map(toPart) };
  if (a.name !== undefined) out.name = a.name;
  if (a.description !== undefined) out.description = a.description;
  return out;
}

/**
 * The payload of an artifact's parts, as `callAgent` returns it: the last
 * data part's value, else the text (chunks joined), else the file(s) — one
 * {@link FileResult}, or an array of them.
 */
export function payloadOfParts(parts: readonly Part[]): { found: boolean; value: unknown } {
  for (let i = parts.length - 1; i >= 0; i--) {
    const p = parts[i] as Part;
    if (p.data !== undefined) return { found: true, value: p.data };
  }
  const texts = parts.filter((p) => typeof p.text === 'string').map((p) => p.text as string);
  if (texts.length > 0) return { found: true, value: texts.join('') };
  const files = parts.filter((p) => p.raw !== undefined || p.url !== undefined).map(fileOf);
  if (files.length === 0) return { found: false, value: undefined };
  return { found: true, value: files.length === 1 ? files[0] : files };
}

/**
 * The result of a completed task, as `callAgent` returns it: one artifact's
 * payload; with several artifacts (`reply.artifacts`) each one's, in order;
 * with none, the payload of the status message. `found` is false when
 * nothing carries a payload.
 */
export function payloadOfTask(task: Task): { found: boolean; value: unknown } {
  const arts = task.artifacts ?? [];
  if (arts.length === 1) {
    const p = payloadOfParts(arts[0]!.parts);
    if (p.found) return p;
  } else if (arts.length > 1) {
    const found = arts.map((a) => payloadOfParts(a.parts)).filter((p) => p.found);
    if (found.length > 0)
      return { found: true, value: found.length === 1 ? found[0]!.value : found.map((p) => p.value) };
  }
  if (task.status.message) return payloadOfParts(task.status.message.parts);
  return { found: false, value: undefined };
}

/** The text of some parts (chunks joined), or undefined when none is text. */
export function textOfParts(parts: readonly Part[] | undefined): string | undefined {
  if (!parts) return undefined;
  const texts = parts.filter((p) => typeof p.text === 'string').map((p) => p.text as string);
  return texts.length > 0 ? texts.join('') : undefined;
}

/**
 * A capability's input from the caller's message: the first data part's
 * value, else the text (parsed when it is a JSON object or array, so a
 * client that can only send text still reaches a typed handler).
 */
export function inputOfParts(parts: readonly Part[]): unknown {
  for (const p of parts) if (p.data !== undefined) return p.data;
  const text = textOfParts(parts) ?? '';
  const t = text.trimStart();
  if (t.startsWith('{') || t.startsWith('[')) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  }
  return text;
}

function fileOf(p: Part): FileResult {
  const out: { -readonly [K in keyof FileResult]: FileResult[K] } = {};
  if (p.raw !== undefined) out.bytes = Buffer.from(p.raw, 'base64');
  if (p.url !== undefined) out.url = p.url;
  if (p.mediaType !== undefined) out.mediaType = p.mediaType;
  if (p.filename !== undefined) out.filename = p.filename;
  return out;
}

/**
 * The artifacts a capability's result is published as: a `reply.*` result's
 * own, else one JSON artifact named `result` holding the value (`null` for
 * none). `OfflineTestAgent` checks these as the A2A server checks them when
 * they are published, so a result no binding can send fails there too.
 */
export function resultArtifacts(value: unknown): ArtifactInput[] {
  if (value instanceof CapabilityReply) return value.artifacts.map(toArtifact);
  return [
    { name: 'result', parts: [{ data: value === undefined ? null : value, mediaType: 'application/json' }] },
  ];
}
