import { describe, expect, it } from 'vitest';
import { Scope, type ScopeDecision, defaultScopeRules, parseKubernetesKey, prefixEnd, startsWith } from '../src/scope.js';

describe('parseKubernetesKey', () => {
  it.each([
    ['pods/apps/web-0', { resource: 'pods', namespace: 'apps', name: 'web-0' }],
    ['namespaces/apps', { resource: 'namespaces', name: 'apps' }],
    ['clusterroles/admin', { resource: 'clusterroles', name: 'admin' }],
    ['minions/node-1', { resource: 'minions', name: 'node-1' }],
    ['services/specs/apps/api', { resource: 'services/specs', namespace: 'apps', name: 'api' }],
    ['services/endpoints/apps/api', { resource: 'services/endpoints', namespace: 'apps', name: 'api' }],
    ['example.com/widgets/apps/w', { resource: 'example.com/widgets', namespace: 'apps', name: 'w' }],
    ['apiextensions.k8s.io/customresourcedefinitions/widgets.example.com', { resource: 'apiextensions.k8s.io/customresourcedefinitions', name: 'widgets.example.com' }],
    ['ranges/serviceips', { resource: 'ranges', name: 'serviceips' }],
  ])('%s', (rest, expected) => {
    expect(parseKubernetesKey(Buffer.from(`/registry/${rest}`), '/registry/'.length)).toEqual(expected);
  });
  it('reads bytes as latin1 text, one character a byte', () => {
    const key = Buffer.concat([Buffer.from('/registry/pods/apps/'), Buffer.from([0xc3, 0x28])]);
    expect(parseKubernetesKey(key, '/registry/'.length)).toEqual({ resource: 'pods', namespace: 'apps', name: '\u00c3(' });
  });
  it.each(['pods', 'pods/a/b/c', 'pods//x', 'example.com/widgets'])('%s is not an object key', (rest) => {
    expect(parseKubernetesKey(Buffer.from(rest))).toBeUndefined();
  });
});

describe('Scope with the default rules', () => {
  const scope = new Scope(defaultScopeRules());
  const cases: [string, ScopeDecision][] = [
    ['/registry/pods/apps/web-0', 'in-scope'],
    ['/registry/pods/default/web-0', 'in-scope'],
    ['/registry/pods/kube-system/etcd-0', 'excluded-namespace'],
    ['/registry/leases/kube-node-lease/node-1', 'excluded-namespace'],
    ['/registry/configmaps/kube-public/cluster-info', 'excluded-namespace'],
    ['/registry/namespaces/kube-system', 'excluded-namespace'],
    ['/registry/namespaces/apps', 'in-scope'],
    ['/registry/services/specs/kube-system/kube-dns', 'excluded-namespace'],
    ['/registry/services/endpoints/kube-system/kube-dns', 'excluded-namespace'],
    ['/registry/services/specs/apps/api', 'in-scope'],
    ['/registry/example.com/widgets/kube-system/w', 'excluded-namespace'],
    ['/registry/example.com/widgets/apps/w', 'in-scope'],
    // Cluster-scoped objects are never excluded by namespace, whatever their name.
    ['/registry/clusterroles/kube-system', 'in-scope'],
    ['/registry/example.com/clusterwidgets/kube-system', 'in-scope'],
    ['/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com', 'in-scope'],
    ['/registry/masterleases/10.0.0.1', 'excluded-prefix'],
    ['/registry/peerserverleases/10.0.0.1', 'excluded-prefix'],
    ['compact_rev_key', 'outside-prefix'],
    ['/etcd-sync/checkpoint', 'outside-prefix'],
    ['/registry', 'outside-prefix'],
    ['/registryx/pods/a/b', 'outside-prefix'],
    // Odd layouts are copied, unless their namespace segment is an excluded one.
    ['/registry/odd/a/b/c', 'in-scope'],
    // Whatever follows an excluded namespace, the key stays excluded.
    ['/registry/pods/kube-system/', 'excluded-namespace'],
    ['/registry/pods/kube-system/../default/x', 'excluded-namespace'],
    ['/registry/pods/kube-system/a/b/c', 'excluded-namespace'],
    ['/registry/namespaces/kube-system/', 'excluded-namespace'],
    ['/registry/example.com/widgets/kube-system/', 'excluded-namespace'],
    ['/registry/services/specs/kube-system/', 'excluded-namespace'],
  ];
  it.each(cases)('%s → %s', (key, decision) => {
    expect(scope.decide(Buffer.from(key))).toBe(decision);
  });
  it('handles binary keys byte for byte', () => {
    const key = Buffer.concat([Buffer.from('/registry/pods/kube-system/'), Buffer.from([0xff, 0x00])]);
    expect(scope.decide(key)).toBe('excluded-namespace');
    expect(scope.decide(Buffer.concat([Buffer.from('/registry/pods/apps/'), Buffer.from([0xc3, 0x28])]))).toBe('in-scope');
  });
  it.each(['/registry', '/registry/'])('--key-prefix %s: the same scope, nothing outside /registry/', (prefix) => {
    const scope = new Scope({ ...defaultScopeRules(), keyPrefix: Buffer.from(prefix) });
    expect(scope.keyPrefix.toString()).toBe('/registry/');
    expect(scope.rangeEnd.toString()).toBe('/registry0');
    for (const key of ['/registry-other/x', '/registryfoo', '/registry', '/registry0']) expect(scope.decide(Buffer.from(key))).toBe('outside-prefix');
    expect(scope.decide(Buffer.from('/registry/pods/kube-system/x'))).toBe('excluded-namespace');
    expect(scope.decide(Buffer.from('/registry/namespaces/kube-public'))).toBe('excluded-namespace');
    expect(scope.decide(Buffer.from('/registry/pods/apps/x'))).toBe('in-scope');
  });
  it('custom rules: other prefix, no excluded namespaces', () => {
    const custom = new Scope({ keyPrefix: Buffer.from('/k8s/'), excludeNamespaces: new Set(), excludePrefixes: [Buffer.from('/k8s/events/')] });
    expect(custom.decide(Buffer.from('/k8s/pods/kube-system/x'))).toBe('in-scope');
    expect(custom.decide(Buffer.from('/k8s/events/apps/e'))).toBe('excluded-prefix');
    expect(custom.decide(Buffer.from('/registry/pods/apps/x'))).toBe('outside-prefix');
  });
});

describe('Scope.decide agrees with the rule written out on strings', () => {
  // decide() goes by byte spans; the reference decides on the parsed object's text.
  const excluded = new Set(['kube-system', 'a.b', 'specs']);
  const scope = new Scope({ keyPrefix: Buffer.from('/registry/'), excludeNamespaces: excluded, excludePrefixes: [] });
  // The rule in words: the segment after the resource (one segment, or two for `group.x/res`
  // and the two-segment built-ins) names a namespace whenever anything follows it; a Namespace
  // object's name whatever follows it.
  const reference = (key: Buffer): ScopeDecision => {
    if (!key.subarray(0, 10).equals(Buffer.from('/registry/'))) return 'outside-prefix';
    const segs = key.subarray(10).toString('latin1').split('/');
    if (segs[0] === '') return 'in-scope';
    if (segs[0] === 'namespaces') return segs[1] !== undefined && excluded.has(segs[1]) ? 'excluded-namespace' : 'in-scope';
    const r = segs[0]!.includes('.') || (segs[0] === 'services' && (segs[1] === 'specs' || segs[1] === 'endpoints')) ? 2 : 1;
    return segs.length > r + 1 && excluded.has(segs[r]!) ? 'excluded-namespace' : 'in-scope';
  };
  const words = ['', 'pods', 'namespaces', 'services', 'specs', 'endpoints', 'example.com', 'kube-system', 'a.b', 'x', '\xff'];
  const keys: string[] = [];
  const grow = (parts: string[]): void => {
    if (parts.length > 0) keys.push(`/registry/${parts.join('/')}`);
    if (parts.length < 5) for (const w of words) grow([...parts, w]);
  };
  grow([]);

  it(`agrees on all ${words.length ** 5 + words.length ** 4 + words.length ** 3 + words.length ** 2 + words.length} keys of up to 5 segments`, () => {
    const differ = keys.filter((k) => scope.decide(Buffer.from(k, 'latin1')) !== reference(Buffer.from(k, 'latin1')));
    expect(differ).toEqual([]);
    // The table exercises both outcomes, so agreement is not vacuous.
    const decisions = new Set(keys.map((k) => scope.decide(Buffer.from(k, 'latin1'))));
    expect([...decisions].sort()).toEqual(['excluded-namespace', 'in-scope']);
  });
});

describe('startsWith', () => {
  it.each([
    ['/registry/pods', '/registry/', true],
    ['/registry/', '/registry/', true],
    ['/registry', '/registry/', false],
    ['/registrx/pods', '/registry/', false],
    ['anything', '', true],
  ])('%s starts with %s: %s', (key, prefix, expected) => {
    expect(startsWith(Buffer.from(key), Buffer.from(prefix))).toBe(expected);
  });
});

describe('prefixEnd', () => {
  it.each([
    ['/registry/', '/registry0'],
    ['a', 'b'],
  ])('%s → %s', (prefix, end) => {
    expect(prefixEnd(Buffer.from(prefix)).toString()).toBe(end);
  });
  it('carries over 0xff bytes', () => {
    expect(prefixEnd(Buffer.from([0x61, 0xff]))).toEqual(Buffer.from([0x62]));
    expect(prefixEnd(Buffer.from([0xff, 0xff]))).toEqual(Buffer.from([0]));
  });
});
