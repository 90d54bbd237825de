// Pins the committed proto to the published SPIFFE Workload API: no package,
// the service's methods and streaming kinds, and every message field's name,
// number and type (a wrong number would silently garble the wire).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadSync } from '@grpc/proto-loader';
import { describe, expect, it } from 'vitest';

const PROTO = fileURLToPath(new URL('../proto/workload.proto', import.meta.url));
const pkg = loadSync(PROTO, { keepCase: true });

interface FieldDescriptor {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName: string;
}
interface MessageDescriptor {
  field: FieldDescriptor[];
  nestedType: (MessageDescriptor & { name: string; options?: { mapEntry?: boolean } | null })[];
}

const SCALAR: Record<string, string> = { TYPE_STRING: 'string', TYPE_BYTES: 'bytes' };

/** Renders a message's fields as `name = number : type`, in proto syntax. */
function fields(message: string): string[] {
  const def = pkg[message] as unknown as { type: MessageDescriptor } | undefined;
  if (!def) throw new Error(`message ${message} is missing`);
  const d = def.type;
  return d.field.map((f) => {
    let type = SCALAR[f.type] ?? f.typeName;
    const entry = d.nestedType.find((n) => n.name === f.typeName && n.options?.mapEntry);
    if (entry) {
      const [k, v] = entry.field;
      type = `map<${SCALAR[k!.type]}, ${SCALAR[v!.type]}>`;
    } else if (f.label === 'LABEL_REPEATED') {
      type = `repeated ${type}`;
    }
    return `${f.name} = ${f.number} : ${type}`;
  });
}

describe('workload.proto', () => {
  it('has no package line (method paths must be /SpiffeWorkloadAPI/<Method>)', () => {
    const text = readFileSync(PROTO, 'utf8');
    expect(text).not.toMatch(/^\s*package\s/m);
    expect(text).toMatch(/^syntax = "proto3";$/m);
  });

  it('defines the SpiffeWorkloadAPI service with the published methods', () => {
    const service = pkg['SpiffeWorkloadAPI'] as unknown as Record<
      string,
      {
        path: string;
        requestStream: boolean;
        responseStream: boolean;
        requestType: { type: { name: string } };
        responseType: { type: { name: string } };
      }
    >;
    const shape = Object.fromEntries(
      Object.entries(service).map(([name, m]) => [
        name,
        `${m.path} ${m.requestType.type.name} -> ${m.responseStream ? 'stream ' : ''}${m.responseType.type.name}${m.requestStream ? ' (client stream!)' : ''}`,
      ]),
    );
    expect(shape).toEqual({
      FetchX509SVID: '/SpiffeWorkloadAPI/FetchX509SVID X509SVIDRequest -> stream X509SVIDResponse',
      FetchX509Bundles:
        '/SpiffeWorkloadAPI/FetchX509Bundles X509BundlesRequest -> stream X509BundlesResponse',
      FetchJWTSVID: '/SpiffeWorkloadAPI/FetchJWTSVID JWTSVIDRequest -> JWTSVIDResponse',
      FetchJWTBundles: '/SpiffeWorkloadAPI/FetchJWTBundles JWTBundlesRequest -> stream JWTBundlesResponse',
      ValidateJWTSVID: '/SpiffeWorkloadAPI/ValidateJWTSVID ValidateJWTSVIDRequest -> ValidateJWTSVIDResponse',
      FetchWITSVID: '/SpiffeWorkloadAPI/FetchWITSVID WITSVIDRequest -> stream WITSVIDResponse',
      FetchWITBundles: '/SpiffeWorkloadAPI/FetchWITBundles WITBundlesRequest -> stream WITBundlesResponse',
    });
  });

  it.each([
    ['X509SVIDRequest', []],
    [
      'X509SVIDResponse',
      [
        'svids = 1 : repeated X509SVID',
        'crl = 2 : repeated bytes',
        'federated_bundles = 3 : map<string, bytes>',
      ],
    ],
    [
      'X509SVID',
      [
        'spiffe_id = 1 : string',
        'x509_svid = 2 : bytes',
        'x509_svid_key = 3 : bytes',
        'bundle = 4 : bytes',
        'hint = 5 : string',
      ],
    ],
    ['X509BundlesRequest', []],
    ['X509BundlesResponse', ['crl = 1 : repeated bytes', 'bundles = 2 : map<string, bytes>']],
    ['JWTSVIDRequest', ['audience = 1 : repeated string', 'spiffe_id = 2 : string']],
    ['JWTSVIDResponse', ['svids = 1 : repeated JWTSVID']],
    ['JWTSVID', ['spiffe_id = 1 : string', 'svid = 2 : string', 'hint = 3 : string']],
    ['JWTBundlesRequest', []],
    ['JWTBundlesResponse', ['bundles = 1 : map<string, bytes>']],
    ['ValidateJWTSVIDRequest', ['audience = 1 : string', 'svid = 2 : string']],
    ['ValidateJWTSVIDResponse', ['spiffe_id = 1 : string', 'claims = 2 : google.protobuf.Struct']],
    ['WITSVIDRequest', ['spiffe_id = 1 : string']],
    ['WITSVIDResponse', ['svids = 1 : repeated WITSVID']],
    [
      'WITSVID',
      ['spiffe_id = 1 : string', 'wit_svid = 2 : string', 'wit_svid_key = 3 : string', 'hint = 4 : string'],
    ],
    ['WITBundlesRequest', []],
    ['WITBundlesResponse', ['bundles = 1 : map<string, string>']],
  ])('%s has the published fields', (message, expected) => {
    expect(fields(message)).toEqual(expected);
  });
});
