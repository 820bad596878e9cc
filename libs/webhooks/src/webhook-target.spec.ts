import { forbiddenAddress } from './address-policy';
import { resolveWebhookTarget, systemResolver, WebhookLookupFailed, WebhookTargetRefused, webhookUrlProblem, type Resolver } from './webhook-target';

const OFF = { allowPrivate: false };
const ON = { allowPrivate: true };

/** A resolver that must not be asked: IP literals and loopback names need no DNS. */
const noDns: Resolver = async (host) => {
  throw new Error(`unexpected lookup of ${host}`);
};

/** [url, what the message must say] — refused with private targets off. */
const hostile: Array<[string, RegExp]> = [
  // schemes and shapes
  ['file:///etc/passwd', /http\(s\) URL/],
  ['ftp://93.184.215.14/x', /http\(s\) URL/],
  ['gopher://127.0.0.1:6379/_FLUSHALL', /http\(s\) URL/],
  ['javascript:alert(1)', /http\(s\) URL/],
  ['data:text/plain,hello', /http\(s\) URL/],
  ['dict://127.0.0.1:11211/stat', /http\(s\) URL/],
  ['not a url', /http\(s\) URL/],
  ['http://', /http\(s\) URL/],
  ['http://127.0.0.1%2f/', /http\(s\) URL/],
  ['http://user:pass@93.184.215.14/hook', /credentials/],
  // loopback, every spelling the URL parser accepts
  ['http://127.0.0.1/hook', /loopback address \(127\.0\.0\.1\)/],
  ['https://127.0.0.1:8443/hook', /loopback/],
  ['http://127.0.0.1:6379/', /loopback/],
  ['http://127.255.255.254/', /loopback/],
  ['http://2130706433/', /loopback address \(127\.0\.0\.1\)/],
  ['http://0x7f000001/', /loopback address \(127\.0\.0\.1\)/],
  ['http://0x7F.1/', /loopback address \(127\.0\.0\.1\)/],
  ['http://0x7f.0x0.0x0.0x1/', /loopback address \(127\.0\.0\.1\)/],
  ['http://0177.0.0.1/', /loopback address \(127\.0\.0\.1\)/],
  ['http://0177.1/', /loopback address \(127\.0\.0\.1\)/],
  ['http://017700000001/', /loopback address \(127\.0\.0\.1\)/],
  ['http://127.1/', /loopback address \(127\.0\.0\.1\)/],
  ['http://127.0.1/', /loopback address \(127\.0\.0\.1\)/],
  ['http://127.000.000.001/', /loopback address \(127\.0\.0\.1\)/],
  ['http://127.0.0.1./', /loopback/],
  ['http://%31%32%37.0.0.1/', /loopback/],
  ['http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/', /loopback/],
  ['http://[::1]/', /loopback address \(::1\)/],
  ['http://[0:0:0:0:0:0:0:1]:8080/', /loopback/],
  ['http://[::ffff:127.0.0.1]/', /loopback address \(::ffff:7f00:1 embeds 127\.0\.0\.1\)/],
  ['http://[::ffff:7f00:1]/', /loopback/],
  ['http://[0:0:0:0:0:ffff:7f00:0001]/', /loopback/],
  ['http://[::127.0.0.1]/', /IPv4-compatible/],
  ['http://[::7f00:1]/', /IPv4-compatible/],
  ['http://[64:ff9b::127.0.0.1]/', /loopback.*embeds 127\.0\.0\.1/],
  ['http://[64:ff9b::7f00:1]/', /loopback/],
  ['http://[2002:7f00:1::]/', /loopback.*embeds 127\.0\.0\.1/],
  ['http://[fe80::1%25eth0]/', /http\(s\) URL/],
  ['http://[::1%25lo]/', /http\(s\) URL/],
  ['http://localhost/', /loopback name \(localhost\)/],
  ['http://LOCALHOST:3000/hook', /loopback name/],
  ['http://localhost./', /loopback name/],
  ['http://foo.localhost/', /loopback name \(foo\.localhost\)/],
  ['https://a.b.LocalHost./x', /loopback name/],
  // unspecified
  ['http://0.0.0.0/', /unspecified/],
  ['http://0/', /unspecified/],
  ['http://0.1.2.3/', /unspecified/],
  ['http://[::]/', /unspecified/],
  ['http://[::ffff:0.0.0.0]/', /unspecified/],
  // private and shared
  ['http://10.0.0.1/', /private address/],
  ['http://10.255.255.255/', /private/],
  ['http://167772161/', /private address \(10\.0\.0\.1\)/],
  ['http://012.1/', /private address \(10\.0\.0\.1\)/],
  ['http://172.16.0.1/', /private/],
  ['http://172.31.255.255/', /private/],
  ['http://192.168.1.1/', /private/],
  ['http://0xc0a80101/', /private address \(192\.168\.1\.1\)/],
  ['http://100.64.0.1/', /carrier-grade NAT/],
  ['http://100.127.255.255/', /carrier-grade NAT/],
  ['http://[::ffff:10.0.0.1]/', /private/],
  ['http://[::ffff:a00:1]/', /private/],
  ['http://[fc00::1]/', /unique-local/],
  ['http://[fd12:3456:789a::1]/', /unique-local/],
  // link-local and cloud metadata
  ['http://169.254.169.254/latest/meta-data/', /link-local.*169\.254\.169\.254/],
  ['http://2852039166/', /link-local.*169\.254\.169\.254/],
  ['http://0xa9fea9fe/', /link-local/],
  ['http://0251.0376.0251.0376/', /link-local/],
  ['http://169.254.0.1/', /link-local/],
  ['http://[::ffff:169.254.169.254]/', /link-local.*embeds 169\.254\.169\.254/],
  ['http://[64:ff9b::a9fe:a9fe]/', /link-local/],
  ['http://[2002:a9fe:a9fe::1]/', /link-local/],
  ['http://[fe80::1]/', /link-local/],
  ['http://[febf:ffff::1]/', /link-local/],
  ['http://[fd00:ec2::254]/', /unique-local/],
  // multicast, broadcast, reserved, documentation
  ['http://224.0.0.1/', /multicast/],
  ['http://239.255.255.250:1900/', /multicast/],
  ['http://255.255.255.255/', /broadcast/],
  ['http://240.0.0.1/', /reserved/],
  ['http://192.0.0.170/', /reserved/],
  ['http://198.18.0.1/', /benchmarking/],
  ['http://192.0.2.1/', /documentation/],
  ['http://[ff02::1]/', /multicast/],
  ['http://[ff05::1:3]/', /multicast/],
  ['http://[fec0::1]/', /site-local/],
  ['http://[2001:db8::1]/', /documentation/],
  ['http://[2001::1]/', /reserved/],
  ['http://[100::1]/', /discard/],
  ['http://[64:ff9b:1::a00:1]/', /NAT64/],
  ['http://[::ffff:0:7f00:1]/', /not a global unicast/],
  ['http://[5f00::1]/', /not a global unicast/],
];

/** Public IP literals: allowed, no DNS needed. */
const allowed: Array<[string, string]> = [
  ['http://93.184.215.14/hook', '93.184.215.14'],
  ['https://93.184.215.14:8443/hook?x=1', '93.184.215.14'],
  ['http://1572394766/hook', '93.184.215.14'],
  ['http://8.8.8.8/', '8.8.8.8'],
  ['http://172.32.0.1/', '172.32.0.1'],
  ['http://100.128.0.1/', '100.128.0.1'],
  ['http://192.169.0.1/', '192.169.0.1'],
  ['http://[2606:2800::1]/hook', '2606:2800::1'],
  ['https://[2606:2800:220:1:248:1893:25c8:1946]/', '2606:2800:220:1:248:1893:25c8:1946'],
  ['http://[::ffff:93.184.215.14]/', '::ffff:5db8:d70e'],
  ['http://[2002:5db8:d70e::1]/', '2002:5db8:d70e::1'],
];

describe('resolveWebhookTarget refuses hostile targets (private targets off)', () => {
  it.each(hostile)('%s', async (url, message) => {
    const refused = resolveWebhookTarget(url, { ...OFF, resolve: noDns });
    await expect(refused).rejects.toBeInstanceOf(WebhookTargetRefused);
    await expect(refused).rejects.toThrow(message);
  });
});

describe('resolveWebhookTarget allows public targets', () => {
  it.each(allowed)('%s', async (url, address) => {
    const target = await resolveWebhookTarget(url, { ...OFF, resolve: noDns });
    expect(target.address).toBe(address);
    expect(target.url.href).toBe(new URL(url).href);
  });
});

describe('host names are judged by every address they resolve to', () => {
  const answering = (...addresses: string[]): Resolver => async () => addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));

  it.each([
    [['127.0.0.1'], /host hooks\.example\.com resolves to a loopback address \(127\.0\.0\.1\)/],
    [['93.184.215.14', '10.1.2.3'], /resolves to a private address \(10\.1\.2\.3\)/],
    [['2606:2800::1', '::1'], /resolves to a loopback address \(::1\)/],
    [['::ffff:169.254.169.254'], /resolves to a link-local address/],
    [['0.0.0.0'], /resolves to an unspecified/],
    [['fd00::5'], /resolves to a unique-local/],
  ])('%j is refused', async (addresses, message) => {
    await expect(resolveWebhookTarget('https://hooks.example.com/x', { ...OFF, resolve: answering(...addresses) })).rejects.toThrow(message);
  });

  it('keeps the first address of a public answer, to connect to it', async () => {
    const target = await resolveWebhookTarget('https://Hooks.Example.com./x', { ...OFF, resolve: answering('2606:2800::1', '93.184.215.14') });
    expect(target).toMatchObject({ hostname: 'hooks.example.com', address: '2606:2800::1', family: 6 });
  });

  it('an unknown name fails the lookup (a retryable failure), not the policy', async () => {
    await expect(resolveWebhookTarget('http://no-such-host.invalid/x', OFF)).rejects.toBeInstanceOf(WebhookLookupFailed);
    await expect(systemResolver(2000)('no-such-host.invalid')).rejects.toThrow(/did not resolve/);
  });
});

describe('webhookUrlProblem (the create-time check)', () => {
  it('names the field and says why', async () => {
    expect(await webhookUrlProblem('http://169.254.169.254/', OFF)).toEqual({
      field: 'webhook_url',
      message: 'webhook_url points at a link-local address (cloud metadata lives there) (169.254.169.254); webhooks go only to public addresses',
    });
    expect(await webhookUrlProblem('http://[::1]/', OFF)).toMatchObject({ field: 'webhook_url', message: expect.stringMatching(/^webhook_url points at a loopback/) });
    expect(await webhookUrlProblem(42, OFF)).toMatchObject({ field: 'webhook_url', message: 'webhook_url must be an http(s) URL' });
    expect(await webhookUrlProblem('file:///x', OFF, 'items.webhook_url')).toMatchObject({ field: 'items.webhook_url' });
  });

  it('accepts a public target, and a name that does not resolve now (delivery checks again)', async () => {
    expect(await webhookUrlProblem('http://[2606:2800::1]/hook', OFF)).toBeNull();
    const unresolved: Resolver = async (host) => {
      throw new WebhookLookupFailed(`host ${host} did not resolve`);
    };
    expect(await webhookUrlProblem('https://hooks.example.com/x', { ...OFF, resolve: unresolved })).toBeNull();
  });
});

describe('WEBHOOK_ALLOW_PRIVATE', () => {
  it.each(['http://127.0.0.1:8080/hook', 'http://2130706433/', 'http://[::1]/', 'http://10.0.0.1/', 'http://192.168.1.1/', 'http://100.64.0.1/', 'http://[fd00::1]/', 'http://[::ffff:127.0.0.1]/'])(
    'allows the on-premises target %s',
    async (url) => {
      expect(await webhookUrlProblem(url, { ...ON, resolve: noDns })).toBeNull();
    },
  );

  it('allows a loopback name, resolved like any other', async () => {
    const target = await resolveWebhookTarget('http://localhost:8080/hook', { ...ON, resolve: async () => [{ address: '127.0.0.1', family: 4 }] });
    expect(target.address).toBe('127.0.0.1');
  });

  it.each(['http://169.254.169.254/', 'http://[::ffff:169.254.169.254]/', 'http://[fe80::1]/', 'http://0.0.0.0/', 'http://[::]/', 'http://224.0.0.1/', 'http://255.255.255.255/', 'file:///etc/passwd'])(
    'still refuses %s',
    async (url) => {
      await expect(resolveWebhookTarget(url, { ...ON, resolve: noDns })).rejects.toBeInstanceOf(WebhookTargetRefused);
    },
  );
});

describe('forbiddenAddress', () => {
  it('reads the forms a resolver returns (dotted IPv4 in IPv6, zone ids)', () => {
    expect(forbiddenAddress('::ffff:127.0.0.1')).toMatchObject({ kind: 'private' });
    expect(forbiddenAddress('fe80::1%eth0')).toMatchObject({ kind: 'never' });
    expect(forbiddenAddress('not-an-ip')).toMatchObject({ kind: 'never' });
    expect(forbiddenAddress('93.184.215.14')).toBeNull();
    expect(forbiddenAddress('2606:2800::1')).toBeNull();
  });
});
