import { describe, expect, it } from 'vitest';
import { TransportConfigError, parseTransportConfig } from '../src/index.js';

describe('TransportConfig', () => {
  it('defaults to TLS 1.3, HTTP/1.1 and verifying peers', () => {
    const c = parseTransportConfig({});
    expect(c.minTlsVersion).toBe('TLSv1.3');
    expect(c.verifyPeer).toBe(true);
    expect(c.httpVersion).toBe('http1.1');
    expect(c.connectTimeoutMs).toBeGreaterThan(0);
    expect(c.requestTimeoutMs).toBeGreaterThan(0);
    expect(c.idleTimeoutMs).toBeGreaterThan(0);
  });

  it('accepts TLS 1.2 as a floor', () => {
    expect(parseTransportConfig({ minTlsVersion: 'TLSv1.2' }).minTlsVersion).toBe('TLSv1.2');
  });

  it.each(['TLSv1', 'TLSv1.1', 'SSLv3'])('refuses a TLS floor of %s', (v) => {
    const err = catchErr(() => parseTransportConfig({ minTlsVersion: v as 'TLSv1.2' }));
    expect(err).toBeInstanceOf(TransportConfigError);
    expect((err as TransportConfigError).code).toBe('INVALID_TRANSPORT_CONFIG');
    expect((err as TransportConfigError).message).toMatch(/below TLSv1\.2/);
  });

  it('refuses verifyPeer: false', () => {
    const err = catchErr(() => parseTransportConfig({ verifyPeer: false as unknown as true }));
    expect(err).toBeInstanceOf(TransportConfigError);
    expect((err as TransportConfigError).issues.join()).toMatch(/verifyPeer cannot be disabled/);
  });

  it('refuses unknown keys, negative timeouts and bad HTTP versions, listing every issue', () => {
    const err = catchErr(() =>
      parseTransportConfig({
        connectTimeoutMs: -1,
        httpVersion: 'http3',
        rejectUnauthorized: false,
      } as never),
    ) as TransportConfigError;
    expect(err).toBeInstanceOf(TransportConfigError);
    expect(err.issues.length).toBeGreaterThanOrEqual(3);
    expect(err.issues.join('\n')).toMatch(/connectTimeoutMs/);
    expect(err.issues.join('\n')).toMatch(/httpVersion/);
    expect(err.issues.join('\n')).toMatch(/rejectUnauthorized/);
  });

  it('refuses a retry cap below its first delay', () => {
    expect(() => parseTransportConfig({ retry: { minDelayMs: 100, maxDelayMs: 10 } })).toThrow(
      TransportConfigError,
    );
  });
});

function catchErr(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}
