/**
 * The README is the user's manual: what scripts depend on must be in it. Every exit code
 * the CLI can return (pipeline/exit-codes.ts) is listed in its "Commands" section.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { EXIT } from '../pipeline/exit-codes.js';
import { REPO_ROOT } from './helpers/shared.js';

const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');

test('the README lists every exit code, each once in the exit-code sentence', (t) => {
  const commands = readme.slice(readme.indexOf('## Commands'), readme.indexOf('| command |'));
  const sentence = commands.slice(commands.indexOf('Exit'));
  t.true(sentence.length > 0, 'no exit-code sentence in the Commands section');
  const listed = [...sentence.matchAll(/`(\d+)`/g)].map((m) => Number(m[1]));
  t.deepEqual(listed.sort((a, b) => a - b), Object.values(EXIT).sort((a, b) => a - b));
});
