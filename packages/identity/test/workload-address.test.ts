import { describe, expect, it } from 'vitest';
import {
  SPIFFE_ENDPOINT_SOCKET,
  WorkloadApiAddressError,
  parseWorkloadApiAddress,
  resolveWorkloadApiAddress,
} from '@weave/identity';

describe('Workload API address', () => {
  it('accepts unix:///abs/path and passes it to grpc-js unchanged', () => {
    const a = parseWorkloadApiAddress('unix:///tmp/spire-agent/public/api.sock');
    expect(a).toMatchObject({
      network: 'unix',
      path: '/tmp/spire-agent/public/api.sock',
      grpcTarget: 'unix:///tmp/spire-agent/public/api.sock',
    });
  });

  it('translates tcp://IP:PORT to a grpc-js ipv4:/ipv6: target (grpc-js has no tcp scheme)', () => {
    expect(parseWorkloadApiAddress('tcp://127.0.0.1:8081')).toMatchObject({
      network: 'tcp',
      host: '127.0.0.1',
      port: 8081,
      grpcTarget: 'ipv4:127.0.0.1:8081',
    });
    expect(parseWorkloadApiAddress('tcp://[::1]:9000')).toMatchObject({
      network: 'tcp',
      host: '::1',
      port: 9000,
      grpcTarget: 'ipv6:[::1]:9000',
    });
  });

  const malformed: [string, RegExp][] = [
    ['', /empty/],
    ['/tmp/api.sock', /scheme/],
    ['api.sock', /scheme/],
    ['http://127.0.0.1:80', /scheme "http" is not supported/],
    ['UNIX:///tmp/a.sock', /scheme "UNIX" is not supported/],
    ['unix:/tmp/a.sock', /must start with "unix:\/\/"/],
    ['unix:tmp/a.sock', /opaque/],
    ['unix://', /absolute path/],
    ['unix://host/tmp/a.sock', /empty host and an absolute path/],
    ['unix://relative.sock', /empty host/],
    ['unix:///', /socket file/],
    ['unix:///tmp/dir/', /socket file/],
    ['unix:///tmp/a.sock?x=1', /query/],
    ['unix:///tmp/a.sock#frag', /fragment/],
    ['unix:///tmp/a%20b.sock', /percent/],
    [`unix:///${'a'.repeat(120)}.sock`, /longer than 107 bytes/],
    ['unix:///tmp/a .sock', /whitespace/],
    ['tcp://', /must include a host/],
    ['tcp://127.0.0.1', /must include a port/],
    ['tcp://127.0.0.1:', /numeric port/],
    ['tcp://127.0.0.1:http', /numeric port/],
    ['tcp://127.0.0.1:0', /between 1 and 65535/],
    ['tcp://127.0.0.1:70000', /between 1 and 65535/],
    ['tcp://localhost:8081', /must be an IP:port/],
    ['tcp://example.org:8081', /must be an IP:port/],
    ['tcp://[::1]', /must include a port/],
    ['tcp://[::1:8081', /unterminated/],
    ['tcp://[nope]:8081', /must be an IP:port/],
    ['tcp://user@127.0.0.1:8081', /user info/],
    ['tcp://127.0.0.1:8081/path', /path/],
    ['tcp://127.0.0.1:8081/', /path/],
    ['tcp://127.0.0.1:8081?q=1', /query/],
    ['tcp://127.0.0.1:8081#f', /fragment/],
    ['tcp:127.0.0.1:8081', /must start with "tcp:\/\/"/],
  ];
  it.each(malformed)('rejects %j with a clear WorkloadApiAddressError', (input, reason) => {
    let caught: unknown;
    try {
      parseWorkloadApiAddress(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(WorkloadApiAddressError);
    const err = caught as WorkloadApiAddressError;
    expect(err.code).toBe('INVALID_WORKLOAD_API_ADDRESS');
    expect(err.message).toMatch(reason);
    expect(err.message).toContain('invalid Workload API address');
  });

  it('prefers the option over SPIFFE_ENDPOINT_SOCKET and falls back to it', () => {
    const env = { [SPIFFE_ENDPOINT_SOCKET]: 'unix:///run/env.sock' };
    expect(resolveWorkloadApiAddress('unix:///run/opt.sock', env).uri).toBe('unix:///run/opt.sock');
    expect(resolveWorkloadApiAddress(undefined, env).uri).toBe('unix:///run/env.sock');
  });

  it('rejects a malformed SPIFFE_ENDPOINT_SOCKET and a missing address', () => {
    expect(() =>
      resolveWorkloadApiAddress(undefined, { [SPIFFE_ENDPOINT_SOCKET]: 'tcp://localhost:1' }),
    ).toThrow(WorkloadApiAddressError);
    expect(() => resolveWorkloadApiAddress(undefined, {})).toThrow(/SPIFFE_ENDPOINT_SOCKET/);
  });
});
