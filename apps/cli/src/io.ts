/** Where a command writes: injectable so the CLI can run in-process. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export const stdio: Io = {
  out: (t) => void process.stdout.write(`${t}\n`),
  err: (t) => void process.stderr.write(`${t}\n`),
};

/**
 * Controls a terminal acts on rather than shows: C0 (but `\t`, and `\n` when
 * lines are meant), DEL, C1 (`\x9b` is CSI to some terminals) and the bidi
 * embeddings, overrides, isolates and marks that reorder what is shown.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROLS = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
// eslint-disable-next-line no-control-regex -- as above
const CONTROLS_KEEP_NEWLINE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * `text` safe to print on a terminal: every control character as its visible
 * `\uXXXX` escape (ESC → `\u001b`, U+202E → `\u202e`), so a string a peer, a
 * Workload API or a file chose cannot move the cursor, rewrite or hide lines
 * already printed, set the title, make links or reorder the text around it.
 * JSON's own escape form: JSON text stays valid JSON with the same value.
 * `\n` stays a line break with `lines: true` (a multi-line result), else it
 * is escaped too (one field on one line). `--json` output goes through it
 * too, with `lines`: `JSON.stringify` escapes C0 controls but not C1 or bidi ones.
 */
export function printable(text: string, options: { lines?: boolean } = {}): string {
  return text.replace(
    options.lines ? CONTROLS_KEEP_NEWLINE : CONTROLS,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
