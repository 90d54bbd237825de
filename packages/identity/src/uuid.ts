import { randomFillSync } from 'node:crypto';

/** Ids drawn per refill of {@link randomBytes}. */
const IDS_PER_FILL = 4096;
/** 64 KiB of CSPRNG output, allocated by the first id (not by importing the package). */
let randomBytes: Buffer | undefined;
let nextId = IDS_PER_FILL;
/** The 36 characters of the id being made, read out as one string. */
let text: Buffer | undefined;
/** The ASCII codes of the hexadecimal digits. */
const HEX = Buffer.from('0123456789abcdef', 'latin1');

/**
 * A random (version 4) UUID from the CSPRNG, in the form `crypto.randomUUID()`
 * gives, for the ids made on every call (tasks, messages, artifacts, audit
 * records). Two differences, both for the hot path:
 * - the random bytes are refilled every 4 096 ids instead of every 128: the
 *   refill is a synchronous native job that costs more than what it serves;
 * - the id is one flat string, read out of a buffer the digits are written
 *   to. `crypto.randomUUID()` joins 20 pieces; the first use of that result
 *   as a Map key, or in `JSON.stringify`, copies it into one piece first.
 */
export function randomUuid(): string {
  const b = (randomBytes ??= Buffer.alloc(16 * IDS_PER_FILL));
  if (nextId === IDS_PER_FILL) {
    randomFillSync(b);
    nextId = 0;
  }
  const o = 16 * nextId++;
  const t = (text ??= Buffer.alloc(36));
  let j = 0;
  for (let i = 0; i < 16; i++) {
    let v = b[o + i] as number;
    // RFC 9562: version 4 in the high nibble of byte 6, variant 0b10 in the high bits of byte 8.
    if (i === 6) v = (v & 0x0f) | 0x40;
    else if (i === 8) v = (v & 0x3f) | 0x80;
    if (i === 4 || i === 6 || i === 8 || i === 10) t[j++] = 0x2d;
    t[j++] = HEX[v >> 4] as number;
    t[j++] = HEX[v & 0x0f] as number;
  }
  return t.toString('latin1', 0, 36);
}
