import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseEncryptionConfig } from '../src/encryption/config.js';
import { providersFor, verifyValue } from '../src/encryption/decrypt.js';
import { mergeConfigs, mergedYaml } from '../src/encryption/merge.js';
import type { EtcdServer } from './helpers/etcd.js';
import { usePair } from './helpers/pair.js';
import { configYaml, encryptValue } from './helpers/encrypt.js';
import { runCli, snapshot } from './helpers/sync.js';
import { waitFor } from './helpers/wait.js';

const pod = readFileSync('test/fixtures/k8s-objects/storage-pod.bin');
const k16 = randomBytes(16);
const k24 = randomBytes(24);
const k32 = randomBytes(32);
const other32 = randomBytes(32);
const secretKey = '/registry/secrets/apps/db';
const providersOf = (yaml: string) => parseEncryptionConfig(yaml, 'test.yaml').resources[0]!.providers;

describe('decrypting as kube-apiserver reads', () => {
  it.each([
    ['aescbc', k16],
    ['aescbc', k24],
    ['aescbc', k32],
    ['aesgcm', k16],
    ['aesgcm', k32],
    ['secretbox', k32],
  ] as const)('%s with a %s-byte key: readable', (cipher, key) => {
    const providers = providersOf(configYaml([{ type: cipher, keys: [['key1', key]] }]));
    const value = encryptValue(cipher, 'key1', key, pod, secretKey);
    expect(verifyValue(Buffer.from(secretKey), value, providers)).toEqual({ status: 'readable', provider: cipher, keyName: 'key1' });
  });
  it.each(['aescbc', 'aesgcm', 'secretbox'] as const)('%s: a wrong key under the right name is unreadable', (cipher) => {
    const providers = providersOf(configYaml([{ type: cipher, keys: [['key1', other32]] }]));
    const value = encryptValue(cipher, 'key1', k32, pod, secretKey);
    expect(verifyValue(Buffer.from(secretKey), value, providers)).toEqual({ status: 'unreadable', provider: cipher, keyName: 'key1' });
  });
  it('tries every key of that name in order, across providers of the type', () => {
    const providers = providersOf(configYaml([{ type: 'aescbc', keys: [['key1', other32]] }, { type: 'aescbc', keys: [['key1', k32]] }]));
    const value = encryptValue('aescbc', 'key1', k32, pod, secretKey);
    expect(verifyValue(Buffer.from(secretKey), value, providers).status).toBe('readable');
  });
  it('aesgcm binds the etcd key: the same bytes under another key are unreadable', () => {
    const providers = providersOf(configYaml([{ type: 'aesgcm', keys: [['key1', k32]] }]));
    const value = encryptValue('aesgcm', 'key1', k32, pod, secretKey);
    expect(verifyValue(Buffer.from('/registry/secrets/apps/other'), value, providers).status).toBe('unreadable');
  });
  it('a key name no provider has, and kms values', () => {
    const providers = providersOf(configYaml([{ type: 'aescbc', keys: [['key1', k32]] }, { type: 'kms', name: 'vault' }]));
    expect(verifyValue(Buffer.from(secretKey), encryptValue('aescbc', 'key9', k32, pod, secretKey), providers)).toEqual({ status: 'unknown-key', provider: 'aescbc', keyName: 'key9' });
    expect(verifyValue(Buffer.from(secretKey), encryptValue('secretbox', 'key1', k32, pod, secretKey), providers)).toEqual({ status: 'unknown-key', provider: 'secretbox', keyName: 'key1' });
    for (const v of ['v1', 'v2']) {
      expect(verifyValue(Buffer.from(secretKey), Buffer.concat([Buffer.from(`k8s:enc:kms:${v}:vault:`), randomBytes(40)]), providers)).toEqual({ status: 'kms', provider: 'kms', keyName: 'vault' });
    }
  });
  it('a plaintext that is not a stored object is not readable (aescbc garbage with a valid pad)', () => {
    const providers = providersOf(configYaml([{ type: 'aescbc', keys: [['key1', k32]] }]));
    const value = encryptValue('aescbc', 'key1', k32, Buffer.from('not a kubernetes object'), secretKey);
    expect(verifyValue(Buffer.from(secretKey), value, providers).status).toBe('unreadable');
    const json = encryptValue('aescbc', 'key1', k32, Buffer.from('{"kind":"Widget"}'), secretKey);
    expect(verifyValue(Buffer.from(secretKey), json, providers).status).toBe('readable');
    const cbor = encryptValue('aescbc', 'key1', k32, Buffer.from([0xd9, 0xd9, 0xf7, 0xa0]), secretKey);
    expect(verifyValue(Buffer.from(secretKey), cbor, providers).status).toBe('readable');
  });
});

describe("the resource's own providers", () => {
  // Two entries with different secrets under the same key name: only the resource's entry may read.
  const yaml = [
    'apiVersion: apiserver.config.k8s.io/v1',
    'kind: EncryptionConfiguration',
    'resources:',
    '  - resources: [secrets]',
    `    providers: [{aescbc: {keys: [{name: key1, secret: ${k32.toString('base64')}}]}}]`,
    '  - resources: [configmaps, widgets.example.com]',
    `    providers: [{aescbc: {keys: [{name: key1, secret: ${other32.toString('base64')}}]}}]`,
    '  - resources: ["*.*"]',
    `    providers: [{aescbc: {keys: [{name: key1, secret: ${k16.toString('base64')}}]}}]`,
  ].join('\n');
  const config = parseEncryptionConfig(yaml, 'multi.yaml');
  const prefix = Buffer.from('/registry/');
  it.each([
    ['/registry/secrets/apps/s', k32, 'readable'],
    ['/registry/secrets/apps/s', other32, 'unreadable'],
    ['/registry/configmaps/apps/c', other32, 'readable'],
    ['/registry/configmaps/apps/c', k32, 'unreadable'],
    ['/registry/example.com/widgets/apps/w', other32, 'readable'],
    ['/registry/example.com/gadgets/apps/g', k16, 'readable'],
    ['/registry/example.com/gadgets/apps/g', other32, 'unreadable'],
  ] as const)('%s encrypted with the %#th key: %s', (key, secret, status) => {
    const value = encryptValue('aescbc', 'key1', secret, pod, key);
    expect(verifyValue(Buffer.from(key), value, providersFor(config, Buffer.from(key), prefix)).status).toBe(status);
  });
});

describe('configuration validation', () => {
  const bad: [string, string][] = [
    [configYaml([{ type: 'aescbc', keys: [['key1', k32]] }]).replace('aescbc:', 'aesctr:'), "test.yaml: resources[0].providers[0]: unknown provider 'aesctr'"],
    [configYaml([{ type: 'aescbc', keys: [['key1', k32]] }]).replace(/secret: .*/, 'secret: not*base64'), 'test.yaml: resources[0].providers[0].aescbc.keys[0].secret: not valid base64'],
    [configYaml([{ type: 'aescbc', keys: [['key1', randomBytes(20)]] }]), 'test.yaml: resources[0].providers[0].aescbc.keys[0].secret: aescbc keys must be 16, 24, 32 bytes, this one is 20'],
    [configYaml([{ type: 'secretbox', keys: [['key1', k16]] }]), 'test.yaml: resources[0].providers[0].secretbox.keys[0].secret: secretbox keys must be 32 bytes, this one is 16'],
    [configYaml([{ type: 'aescbc', keys: [['key1', k32], ['key1', other32]] }]), "test.yaml: resources[0].providers[0].aescbc.keys[1].name: 'key1' is used twice (also test.yaml: resources[0].providers[0].aescbc.keys[0])"],
    [configYaml([{ type: 'kms', name: 'vault' }, { type: 'kms', name: 'vault' }]), "test.yaml: resources[0].providers[1].kms.name: 'vault' clashes with test.yaml: resources[0].providers[0]"],
    ['apiVersion: v1\nkind: ConfigMap\n', 'test.yaml: expected kind EncryptionConfiguration (apiserver.config.k8s.io/v1) or EncryptionConfig (v1), got ConfigMap (v1)'],
  ];
  it.each(bad)('rejects: %#', (yaml, message) => {
    expect(() => parseEncryptionConfig(yaml, 'test.yaml')).toThrow(message);
  });
  it('loads the legacy kind', () => {
    const config = parseEncryptionConfig(configYaml([{ type: 'secretbox', keys: [['key1', k32]] }, { type: 'identity' }], 'legacy'), 'old.yaml');
    expect(config.kind).toBe('EncryptionConfig');
    expect(config.resources[0]!.providers.map((p) => p.type)).toEqual(['secretbox', 'identity']);
  });
});

describe('merge', () => {
  const primaryYaml = configYaml([{ type: 'aescbc', keys: [['key1', k32]] }, { type: 'kms', name: 'vault' }, { type: 'identity' }]);
  it("keeps the primary's key first, renames a taken name, skips an identical secret, keeps identity and kms in order", () => {
    const standbyYaml = configYaml([{ type: 'aescbc', keys: [['key1', other32], ['shared', k32]] }, { type: 'secretbox', keys: [['sb', k32]] }, { type: 'identity' }]);
    const result = mergeConfigs(parseEncryptionConfig(primaryYaml, 'p.yaml'), parseEncryptionConfig(standbyYaml, 's.yaml'));
    expect(result.renames).toEqual([{ resources: ['secrets'], type: 'aescbc', from: 'key1', to: 'key2' }]);
    expect(mergedYaml(result, 'p.yaml', 's.yaml')).toBe(
      [
        '# Merged by etcd-sync encryption merge: p.yaml (primary, encrypts) + s.yaml (standby).',
        '# Copy this file to every control-plane node of both clusters, then restart kube-apiserver.',
        '# Renamed standby key: secrets aescbc key1 -> key2',
        'apiVersion: apiserver.config.k8s.io/v1',
        'kind: EncryptionConfiguration',
        'resources:',
        '  - resources:',
        '      - secrets',
        '    providers:',
        '      - aescbc:',
        '          keys:',
        '            - name: key1',
        `              secret: ${k32.toString('base64')}`,
        '            - name: key2',
        `              secret: ${other32.toString('base64')}`,
        '      - kms:',
        '          name: vault',
        '          endpoint: unix:///var/run/kms.sock',
        '          apiVersion: v2',
        '      - identity: {}',
        '      - secretbox:',
        '          keys:',
        '            - name: sb',
        `              secret: ${k32.toString('base64')}`,
        '',
      ].join('\n'),
    );
    // The merged file is itself valid, and merging it again with the standby changes nothing.
    const again = mergeConfigs(parseEncryptionConfig(mergedYaml(result, 'p', 's'), 'm.yaml'), parseEncryptionConfig(standbyYaml, 's.yaml'));
    expect(again.renames).toEqual([]);
    expect(mergedYaml(again, 'p', 's')).toBe(mergedYaml(result, 'p', 's').replace('# Renamed standby key: secrets aescbc key1 -> key2', '# No standby key was renamed.'));
  });
  it('kms providers of the same name with other settings clash', () => {
    const standbyYaml = configYaml([{ type: 'kms', name: 'vault' }]).replace('unix:///var/run/kms.sock', 'unix:///other.sock');
    expect(() => mergeConfigs(parseEncryptionConfig(primaryYaml, 'p.yaml'), parseEncryptionConfig(standbyYaml, 's.yaml'))).toThrow(
      "kms provider 'vault' for secrets has different settings in the primary and the standby file",
    );
  });
});

describe('encryption commands against real etcd', () => {
  let primary: EtcdServer;
  let standby: EtcdServer;
  let p: Etcd3;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'etcd-sync-enc-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string): string => {
    const f = path.join(dir, name);
    writeFileSync(f, text);
    return f;
  };
  const pair = usePair();
  beforeAll(() => ({ primary, standby, p } = pair));

  const run = async (args: string[]) => {
    const cli = runCli(args);
    const { code } = await cli.exited;
    return { code, stdout: cli.stdout(), output: cli.output() };
  };

  it('verify: readable, unreadable, unknown key name, kms and plain values; exit 1, then 0 on a readable subset', async () => {
    const config = file('verify.yaml', configYaml([{ type: 'aesgcm', keys: [['key1', k32]] }, { type: 'aescbc', keys: [['key1', k32]] }, { type: 'secretbox', keys: [['key1', k32]] }, { type: 'kms', name: 'vault' }]));
    const put = (key: string, value: Buffer | string) => p.put(key).value(value).exec();
    await put('/registry/secrets/good/gcm', encryptValue('aesgcm', 'key1', k32, pod, '/registry/secrets/good/gcm'));
    await put('/registry/secrets/good/cbc', encryptValue('aescbc', 'key1', k32, pod, '/registry/secrets/good/cbc'));
    await put('/registry/secrets/good/box', encryptValue('secretbox', 'key1', k32, pod, '/registry/secrets/good/box'));
    await put('/registry/secrets/bad/wrong-key', encryptValue('aescbc', 'key1', other32, pod, '/registry/secrets/bad/wrong-key'));
    await put('/registry/secrets/bad/unknown', encryptValue('aescbc', 'standby-key', k32, pod, '/registry/secrets/bad/unknown'));
    await put('/registry/secrets/kms/a', Buffer.concat([Buffer.from('k8s:enc:kms:v2:vault:'), randomBytes(32)]));
    await put('/registry/configmaps/plain/cm', pod);
    const r = await run(['encryption', 'verify', '--config', config, '--endpoints', primary.endpoint, '--output', 'json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toEqual({
      allReadable: false,
      scanned: 7,
      counts: { encrypted: 6, readable: 3, unreadable: 1, unknownKey: 1, notVerifiable: 1 },
      byKeyName: {
        'aesgcm/key1': { readable: 1, unreadable: 0, unknownKey: 0, notVerifiable: 0 },
        'aescbc/key1': { readable: 1, unreadable: 1, unknownKey: 0, notVerifiable: 0 },
        'secretbox/key1': { readable: 1, unreadable: 0, unknownKey: 0, notVerifiable: 0 },
        'aescbc/standby-key': { readable: 0, unreadable: 0, unknownKey: 1, notVerifiable: 0 },
        'kms/vault': { readable: 0, unreadable: 0, unknownKey: 0, notVerifiable: 1 },
      },
      byResource: { secrets: { readable: 3, unreadable: 1, unknownKey: 1, notVerifiable: 1 } },
      unreadable: ['/registry/secrets/bad/wrong-key'],
      unknownKey: ['/registry/secrets/bad/unknown'],
    });
    const text = await run(['encryption', 'verify', '--config', config, '--endpoints', primary.endpoint]);
    expect(text.code).toBe(1);
    expect(text.stdout).toContain('etcd-sync encryption verify: UNREADABLE VALUES (6 encrypted of 7 values)');
    expect(text.stdout).toContain('  /registry/secrets/bad/wrong-key');
    const good = await run(['encryption', 'verify', '--config', config, '--endpoints', primary.endpoint, '--key-prefix', '/registry/secrets/good/']);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain('ALL READABLE (3 encrypted of 3 values)');
    const unreachable = await run(['encryption', 'verify', '--config', config, '--endpoints', 'http://127.0.0.1:1']);
    expect(unreachable.code).toBe(2);
    expect(unreachable.output).toMatch(/etcd-sync: could not verify: this etcd \(http:\/\/127\.0\.0\.1:1\)/);
  });

  it('merge: YAML out (or --output-file, or -o json), renames reported, stranded standby values warned about, bad input exit 2', async () => {
    const primaryFile = file('primary.yaml', configYaml([{ type: 'aescbc', keys: [['key1', k32]] }, { type: 'identity' }]));
    const standbyFile = file('standby.yaml', configYaml([{ type: 'aescbc', keys: [['key1', other32]] }, { type: 'identity' }]));
    // The standby holds a value written with its own key1 (e.g. in its own kube-system namespace).
    const s = standby.client();
    await s.put('/registry/secrets/kube-system/own').value(encryptValue('aescbc', 'key1', other32, pod, '/registry/secrets/kube-system/own')).exec();
    s.close();
    const out = path.join(dir, 'merged.yaml');
    const r = await run(['encryption', 'merge', '--primary', primaryFile, '--standby', standbyFile, '--output-file', out, ...standby.cliArgs('standby')]);
    expect(r.code).toBe(0);
    expect(r.output).toContain("etcd-sync: renamed the standby's aescbc key 'key1' to 'key2' for secrets");
    expect(r.output).toContain("etcd-sync: warning: the standby holds 1 values written with its aescbc key 'key1'");
    const merged = parseEncryptionConfig(readFileSync(out, 'utf8'), out);
    expect(merged.resources[0]!.providers).toMatchObject([{ type: 'aescbc', keys: [{ name: 'key1' }, { name: 'key2' }] }, { type: 'identity' }]);
    const stdout = await run(['encryption', 'merge', '--primary', primaryFile, '--standby', standbyFile]);
    expect(stdout.stdout).toBe(readFileSync(out, 'utf8'));
    // -o json: one object, the YAML and the warnings in it, nothing on stderr.
    const json = await run(['encryption', 'merge', '--primary', primaryFile, '--standby', standbyFile, '-o', 'json', ...standby.cliArgs('standby')]);
    expect(json.output).toBe(json.stdout);
    expect(JSON.parse(json.stdout)).toEqual({
      outputFile: null,
      yaml: readFileSync(out, 'utf8'),
      renames: [{ resources: ['secrets'], type: 'aescbc', from: 'key1', to: 'key2' }],
      warnings: ["renamed the standby's aescbc key 'key1' to 'key2' for secrets", expect.stringMatching(/^warning: the standby holds 1 values written with its aescbc key 'key1'/)],
    });
    const broken = file('broken.yaml', configYaml([{ type: 'aescbc', keys: [['key1', randomBytes(20)]] }]));
    const bad = await run(['encryption', 'merge', '--primary', primaryFile, '--standby', broken]);
    expect(bad.code).toBe(2);
    expect(bad.output.trim()).toBe(`etcd-sync: ${broken}: resources[0].providers[0].aescbc.keys[0].secret: aescbc keys must be 16, 24, 32 bytes, this one is 20`);
  });

  it('run --encryption-config: an encrypted value the standby cannot read is logged once, with its key', async () => {
    const standbyConfig = file('standby-run.yaml', configYaml([{ type: 'aescbc', keys: [['key1', k32]] }]));
    await p.put('/registry/secrets/apps/readable').value(encryptValue('aescbc', 'key1', k32, pod, '/registry/secrets/apps/readable')).exec();
    await p.put('/registry/secrets/apps/stranded').value(encryptValue('aescbc', 'key1', other32, pod, '/registry/secrets/apps/stranded')).exec();
    const cli = runCli(['run', ...primary.cliArgs('primary'), ...standby.cliArgs('standby'), '--encryption-config', standbyConfig]);
    try {
      await cli.waitForLog('streaming from revision');
      await p.put('/registry/secrets/apps/stranded').value(encryptValue('aescbc', 'key1', other32, pod, '/registry/secrets/apps/stranded')).exec();
      const s = standby.client();
      await waitFor(async () => (await snapshot(s)).get('/registry/secrets/apps/stranded')?.value !== undefined, { timeoutMs: 20_000 });
      s.close();
      await waitFor(() => cli.output().split('\n').filter((l) => l.includes('/registry/secrets/apps/stranded')).length >= 1, { timeoutMs: 20_000 });
    } finally {
      cli.child.kill('SIGTERM');
      await cli.exited;
    }
    const lines = cli.output().split('\n').filter((l) => l.includes("encrypted value the standby's apiserver cannot read"));
    // Each once (stranded was written twice), including the earlier test's values this config cannot read;
    // readable and kms values are not logged.
    expect(lines.map((l) => JSON.parse(l).key).sort()).toEqual([
      '/registry/secrets/apps/stranded',
      '/registry/secrets/bad/unknown',
      '/registry/secrets/bad/wrong-key',
      '/registry/secrets/good/box',
      '/registry/secrets/good/gcm',
    ]);
  });
});

describe('which providers kube-apiserver reads a resource with', () => {
  const config = parseEncryptionConfig(
    [
      'apiVersion: apiserver.config.k8s.io/v1',
      'kind: EncryptionConfiguration',
      'resources:',
      '  - resources: [events]',
      '    providers: [{ identity: {} }]',
      '  - resources: [secrets, widgets.example.com]',
      '    providers: [{ aescbc: { keys: [{ name: key1, secret: ' + k32.toString('base64') + ' }] } }]',
      "  - resources: ['*.apps']",
      '    providers: [{ aescbc: { keys: [{ name: key2, secret: ' + k32.toString('base64') + ' }] } }]',
      "  - resources: ['*.']",
      '    providers: [{ secretbox: { keys: [{ name: key3, secret: ' + k32.toString('base64') + ' }] } }]',
    ].join('\n'),
    'wild.yaml',
  );
  const keyNames = (key: string): string[] => providersFor(config, Buffer.from(key), Buffer.from('/registry/')).flatMap((p) => ('keys' in p ? p.keys.map((k) => k.name) : [p.type]));
  it.each([
    ['/registry/secrets/apps/db', ['key1']],
    ['/registry/example.com/widgets/apps/w', ['key1']],
    ['/registry/deployments/apps/web', ['key2']], // apps group, stored without it
    ['/registry/controllerrevisions/apps/r', ['key2']],
    ['/registry/configmaps/apps/c', ['key3']], // core, by '*.'
    ['/registry/minions/node-1', ['key3']], // nodes: core
    ['/registry/events/apps/e', ['identity']], // the first entry that names it wins
    ['/registry/jobs/apps/j', []], // batch: named by no entry → identity, nothing decrypts
    ['/registry/other.io/things/apps/t', []],
  ])('%s → %j', (key, names) => {
    expect(keyNames(key)).toEqual(names);
  });
  it('a ConfigMap encrypted with key1 where only secrets are configured is unreadable (read with identity)', () => {
    const only = parseEncryptionConfig(configYaml([{ type: 'aescbc', keys: [['key1', k32]] }]), 'only.yaml');
    const key = '/registry/configmaps/apps/c';
    const value = encryptValue('aescbc', 'key1', k32, pod, key);
    expect(verifyValue(Buffer.from(key), value, providersFor(only, Buffer.from(key), Buffer.from('/registry/')))).toMatchObject({ status: 'unreadable', provider: 'identity' });
    const secret = '/registry/secrets/apps/s';
    expect(verifyValue(Buffer.from(secret), encryptValue('aescbc', 'key1', k32, pod, secret), providersFor(only, Buffer.from(secret), Buffer.from('/registry/')))).toMatchObject({ status: 'readable' });
  });
});
