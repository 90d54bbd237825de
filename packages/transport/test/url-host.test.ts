import { describe, expect, it } from 'vitest';
import { urlHost } from '../src/index.js';

describe('urlHost', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::FFFF:192.168.1.2', '192.168.1.2'],
    ['::1', '[::1]'],
    ['::', '[::]'],
    ['fe80::1%eth0', '[fe80::1]'],
    ['2001:db8::ffff:1.2.3.4', '[2001:db8::ffff:1.2.3.4]'],
    ['agent.example', 'agent.example'],
  ])('%s → %s, a host new URL() takes', (address, host) => {
    expect(urlHost(address)).toBe(host);
    expect(URL.canParse(`https://${urlHost(address)}:8443/`)).toBe(true);
  });
});
