/**
 * Encrypts values the way kube-apiserver writes them, for fixtures. Deliberately separate from
 * src/encryption (which only decrypts): node's cipher (not decipher) and nacl's secretbox (not open).
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import nacl from 'tweetnacl';

export type Cipher = 'aescbc' | 'aesgcm' | 'secretbox';

export function encryptValue(cipher: Cipher, keyName: string, secret: Buffer, plain: Buffer, etcdKey: string): Buffer {
  const prefix = Buffer.from(`k8s:enc:${cipher}:v1:${keyName}:`);
  if (cipher === 'aescbc') {
    const iv = randomBytes(16);
    const c = createCipheriv(`aes-${secret.length * 8}-cbc`, secret, iv);
    return Buffer.concat([prefix, iv, c.update(plain), c.final()]);
  }
  if (cipher === 'aesgcm') {
    const nonce = randomBytes(12);
    const c = createCipheriv(`aes-${secret.length * 8}-gcm` as 'aes-256-gcm', secret, nonce);
    c.setAAD(Buffer.from(etcdKey));
    const body = Buffer.concat([c.update(plain), c.final()]);
    return Buffer.concat([prefix, nonce, body, c.getAuthTag()]);
  }
  const nonce = randomBytes(24);
  return Buffer.concat([prefix, nonce, Buffer.from(nacl.secretbox(plain, nonce, secret))]);
}

export function configYaml(
  providers: ({ type: Cipher; keys: [string, Buffer][] } | { type: 'identity' } | { type: 'kms'; name: string })[],
  kind: 'modern' | 'legacy' = 'modern',
  resources: string[] = ['secrets'],
): string {
  const head = kind === 'modern' ? 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n' : 'apiVersion: v1\nkind: EncryptionConfig\n';
  const lines = [`${head}resources:`, `  - resources: [${resources.join(', ')}]`, '    providers:'];
  for (const p of providers) {
    if (p.type === 'identity') lines.push('      - identity: {}');
    else if (p.type === 'kms') lines.push(`      - kms:`, `          name: ${p.name}`, '          endpoint: unix:///var/run/kms.sock', '          apiVersion: v2');
    else {
      lines.push(`      - ${p.type}:`, '          keys:');
      for (const [name, secret] of p.keys) lines.push(`            - name: ${name}`, `              secret: ${secret.toString('base64')}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
