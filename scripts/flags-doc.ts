/** `npm run docs:flags`: writes docs/flags.md from the parser's --help (src/cli/flags-doc.ts). */
import { mkdirSync, writeFileSync } from 'node:fs';
import { flagsDoc } from '../src/cli/flags-doc.js';

mkdirSync('docs', { recursive: true });
writeFileSync('docs/flags.md', flagsDoc());
process.stdout.write('wrote docs/flags.md\n');
