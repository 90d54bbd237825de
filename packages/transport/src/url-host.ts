/**
 * The host of a URL for a literal IP address, as a socket or `server.address()`
 * gives it: IPv4 as is, also one mapped into IPv6 (`::ffff:10.0.0.1` is
 * `10.0.0.1`, the address a peer dials); IPv6 in brackets, without a zone
 * (`%eth0`: a URL has no room for it). Anything else (a name) is returned as is.
 */
export function urlHost(address: string): string {
  if (!address.includes(':')) return address;
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)?.[1];
  if (mapped !== undefined) return mapped;
  return `[${address.replace(/%.*$/, '')}]`;
}
