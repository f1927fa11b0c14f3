/**
 * The `pipeline` binary as a user runs it: `node bin/pipeline.js ...` in a temp working
 * folder (needs `tsc` to have built dist/). Errors must be one line on stderr with exit 1.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { openDatabase } from '../cache/database.js';
import { makeDataset } from './helpers/images.js';
import { writeRandomModel } from './helpers/random-model.js';
import { type CliResult, expectOneLineError, runPipeline as pipeline } from './helpers/cli.js';
import { tempDir } from './helpers/shared.js';

/** These commands fail before doing any work: stderr must be the error line and nothing else. */
const oneLineError = (t: ExecutionContext, result: CliResult, what: string) => expectOneLineError(t, result, what, true);

test('--help of every command exits 0 and describes it', async (t) => {
  const cwd = tempDir(t);
  for (const command of [[], ['extract'], ['sweep'], ['report'], ['export'], ['predict'], ['cache'], ['export-features']]) {
    const what = ['pipeline', ...command, '--help'].join(' ');
    const result = await pipeline(cwd, [...command, '--help']);
    t.is(result.code, 0, `${what}: ${result.stderr}`);
    t.regex(result.stdout, /pipeline/, what);
    if (command.length === 0) {
      for (const name of ['extract', 'sweep', 'report', 'export', 'predict', 'cache', 'export-features']) t.true(result.stdout.includes(name), name);
    }
    if (command[0] === 'sweep') for (const flag of ['--config', '--db', '--resume', '--feature-set']) t.true(result.stdout.includes(flag), flag);
    if (command[0] === 'report') for (const flag of ['--sweep', '--json', '--html', '--list']) t.true(result.stdout.includes(flag), flag);
    if (command[0] === 'extract') for (const flag of ['--data', '--model', '--size', '--backend', '--db']) t.true(result.stdout.includes(flag), flag);
    if (command[0] === 'export-features') t.true(result.stdout.includes('--out'));
  }
});

test('an unknown command: one line naming it, exit 1', async (t) => {
  const cwd = tempDir(t);
  const line = oneLineError(t, await pipeline(cwd, ['extrakt']), 'unknown command');
  t.regex(line, /extrakt/);
});

test('extract --data on a missing folder: exit 1, one stderr line naming the folder', async (t) => {
  const cwd = tempDir(t);
  // Inside the temp folder, so even a download attempt could not write outside it.
  const missing = join(cwd, 'nonexistent');
  const line = oneLineError(t, await pipeline(cwd, ['extract', '--data', missing]), 'missing --data');
  t.true(line.includes(missing), line);
});

test('extract --data on a missing folder with dataset.url: null in the config: one line naming the folder', async (t) => {
  const cwd = tempDir(t);
  await writeFile(join(cwd, 'config.yaml'), 'dataset:\n  url: null\n');
  const missing = join(cwd, 'nonexistent');
  const line = oneLineError(t, await pipeline(cwd, ['extract', '--data', missing]), 'missing --data');
  t.true(line.includes(missing), line);
});

test('bad flags: --size abc, --backend nope, --batch 0: one line naming the flag', async (t) => {
  const cwd = tempDir(t);
  for (const [args, flag] of [
    [['--size', 'abc'], '--size'],
    [['--backend', 'nope'], 'backend'],
    [['--batch', '0'], '--batch'],
  ] as const) {
    const line = oneLineError(t, await pipeline(cwd, ['extract', '--data', cwd, ...args]), args.join(' '));
    t.true(line.includes(flag), `${args.join(' ')}: ${line}`);
  }
});

test('--db pointing at a file that is not SQLite: one line, exit 1, the file untouched', async (t) => {
  const cwd = tempDir(t);
  const notDb = join(cwd, 'notes.txt');
  const content = 'these are my notes, not a database\n'.repeat(20);
  await writeFile(notDb, content);
  const before = await stat(notDb);
  for (const args of [
    ['cache', '--db', notDb],
    ['export-features', '--db', notDb, '--out', join(cwd, 'out')],
  ]) {
    const line = oneLineError(t, await pipeline(cwd, args), args[0]);
    t.true(line.includes(notDb), line);
  }
  t.is(await readFile(notDb, 'utf8'), content);
  t.is((await stat(notDb)).mtimeMs, before.mtimeMs);
});

test('extract with --db on a file that is not SQLite: exit 1, the error names the file, the file untouched', async (t) => {
  const cwd = tempDir(t);
  await makeDataset(join(cwd, 'data'), { classes: ['a', 'b'], perClass: 1 });
  const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 41 });
  const notDb = join(cwd, 'notes.txt');
  const content = 'not a database\n';
  await writeFile(notDb, content);
  const result = await pipeline(cwd, ['extract', '--data', 'data', '--model', modelJson, '--size', '64x64', '--backend', 'wasm', '--db', notDb]);
  t.is(result.code, 1, result.stderr);
  const errors = result.stderr.split('\n').filter((l) => l.startsWith('pipeline: '));
  t.is(errors.length, 1, result.stderr);
  t.true(errors[0].includes(notDb), errors[0]);
  t.is(await readFile(notDb, 'utf8'), content);
});

test('export-features and cache on a cache without features: one line, exit 1', async (t) => {
  const cwd = tempDir(t);
  // A cache database created by the pipeline, holding no feature set yet.
  const fresh = join(cwd, 'fresh.sqlite');
  openDatabase(fresh).close();
  oneLineError(t, await pipeline(cwd, ['export-features', '--db', fresh, '--out', join(cwd, 'out')]), 'fresh db');
  const listed = await pipeline(cwd, ['cache', '--db', fresh]);
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, /no feature sets/);
  // No database at all.
  const line = oneLineError(t, await pipeline(cwd, ['export-features', '--db', join(cwd, 'none.sqlite'), '--out', 'out']), 'no db');
  t.true(line.includes(join(cwd, 'none.sqlite')), line);
});

test('export-features and cache on an empty (zero-byte) --db file: one line, exit 1', async (t) => {
  const cwd = tempDir(t);
  const empty = join(cwd, 'empty.sqlite');
  await writeFile(empty, '');
  const exported = oneLineError(t, await pipeline(cwd, ['export-features', '--db', empty, '--out', join(cwd, 'out')]), 'export-features');
  t.true(exported.includes(empty), exported);
  const result = await pipeline(cwd, ['cache', '--db', empty]);
  // Listing an empty cache may succeed ("no feature sets") or fail in one line, never with a stack.
  if (result.code === 0) t.regex(result.stdout, /no feature sets/);
  else oneLineError(t, result, 'cache');
});

test('a small real extract through the CLI, then cache lists it and export-features writes the files', async (t) => {
  const cwd = tempDir(t);
  const data = await makeDataset(join(cwd, 'data'), { perClass: 3, corrupt: true });
  const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, layout: 'keras', seed: 42 });
  const args = ['--data', 'data', '--model', modelJson, '--size', '64x64', '--backend', 'wasm', '--batch', '4', '--db', 'cache.sqlite'];
  const extract = await pipeline(cwd, ['extract', ...args]);
  t.is(extract.code, 0, extract.stderr);
  t.regex(extract.stdout, /^done: 10 images, 0 already cached, 9 extracted in [\d.]+ s .*, 1 failed$/m);
  t.regex(extract.stdout, /failed: alpha\/corrupt\.jpg: /);
  const id = /feature set ([0-9a-f]{16}) in /.exec(extract.stdout)?.[1];
  t.truthy(id, extract.stdout);
  t.true(extract.stdout.includes(join(cwd, 'cache.sqlite')));
  t.regex(extract.stderr, /BatchNorm folded at load/);

  const again = await pipeline(cwd, ['extract', ...args]);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stdout, /^done: 10 images, 9 already cached, 0 extracted/m);

  const listed = await pipeline(cwd, ['cache', '--db', 'cache.sqlite', '--failures']);
  t.is(listed.code, 0, listed.stderr);
  t.true(listed.stdout.includes(id!), listed.stdout);
  t.regex(listed.stdout, /alpha 0\.35\s+64x64 fill\s+wasm\s+9 vectors for 10 images, 1 failures/);
  t.regex(listed.stdout, /alpha\/corrupt\.jpg: /);
  t.true(listed.stdout.includes(modelJson));

  const exported = await pipeline(cwd, ['export-features', '--db', 'cache.sqlite', '--out', 'export']);
  t.is(exported.code, 0, exported.stderr);
  t.regex(exported.stdout, new RegExp(`wrote 9 x 1280 features of ${id}`));
  const npy = await readFile(join(cwd, 'export', 'features.npy'));
  t.is(npy.subarray(0, 6).toString('latin1'), '\x93NUMPY');
  t.regex(npy.toString('latin1', 10, 10 + npy.readUInt16LE(8)), /'shape': \(9, 1280\)/);
  t.is(npy.length, 10 + npy.readUInt16LE(8) + 9 * 1280 * 4);
  const csv = (await readFile(join(cwd, 'export', 'index.csv'), 'utf8')).trim().split('\n');
  t.deepEqual(
    csv.slice(1).map((l) => l.split(',')[0]),
    data.images,
  );

  const wrong = oneLineError(t, await pipeline(cwd, ['export-features', '--db', 'cache.sqlite', '--out', 'x', '--feature-set', 'nope']), 'bad id');
  t.regex(wrong, /--feature-set nope/);
});
