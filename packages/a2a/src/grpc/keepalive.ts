// HTTP/2 keepalive for both ends of the gRPC binding: a quiet task's stream
// carries nothing, so only pings tell a live peer from a vanished one.

/**
 * grpc-js channel or server options that ping the peer every `ms` and drop
 * the connection (failing its calls) when a ping goes unanswered for `ms`, at
 * most 20 s (gRPC's default ping timeout). Nothing for 0. A client pings only
 * while a call is open (grpc-js's default).
 */
export function keepaliveOptions(ms: number): Record<string, number> {
  if (ms <= 0) return {};
  return { 'grpc.keepalive_time_ms': ms, 'grpc.keepalive_timeout_ms': Math.min(ms, 20_000) };
}
