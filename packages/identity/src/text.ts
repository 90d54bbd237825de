/**
 * `text` whole up to `max` UTF-16 code units, else cut there and marked
 * with its length (`…abc… (100000 characters)`): how every Weave package
 * repeats a string someone else chose (a caller's task id in an error, a
 * peer's message, a policy field in an audit record) without letting its
 * size through. A cut never splits a surrogate pair, so the result is as
 * well-formed as `text` and stays so in UTF-8 (logs, gRPC trailers).
 *
 * @param max - most code units kept (a whole number ≥ 1).
 */
export function cutText(text: string, max: number): string {
  if (text.length <= max) return text;
  // A high surrogate as the last unit kept would be left without its pair.
  const end = isHighSurrogate(text.charCodeAt(max - 1)) ? max - 1 : max;
  return `${text.slice(0, end)}… (${text.length} characters)`;
}

function isHighSurrogate(unit: number): boolean {
  return unit >= 0xd800 && unit <= 0xdbff;
}
