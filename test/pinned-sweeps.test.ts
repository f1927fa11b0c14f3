/**
 * A sweep belongs to the data it trained on. Through the real CLI on generated images: a
 * changed dataset (images removed, relabelled, edited) starts a new sweep; an old sweep's
 * report stays byte-for-byte what it was; readers never change the database file; a
 * database made by the previous schema is migrated and its sweeps are reported as
 * needing a rerun.
 */
import { createHash } from 'node:crypto';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import test, { type ExecutionContext } from 'ava';
import { MIGRATIONS, SCHEMA_VERSION, openDatabase } from '../cache/database.js';
import { listSweeps } from '../cache/sweeps.js';
import { makeDataset, writeImage } from './helpers/images.js';
import { writeRandomModel } from './helpers/random-model.js';
import { expectOneLineError, runPipeline } from './helpers/cli.js';
import { tempDir } from './helpers/shared.js';

const SWEEP_CONFIG = `sweep:
  seeds: [1]
  early_stopping: {monitor: val_loss, patience: 0}
  parameters:
    dropout: {values: [0, 0.2]}
    learning_rate: {value: 0.01}
    epochs: {value: 4}
`;

async function setUp(t: ExecutionContext) {
  const cwd = tempDir(t);
  await makeDataset(join(cwd, 'data'), { classes: ['alpha', 'bravo', 'charlie'], perClass: 10 });
  const { modelJson } = await writeRandomModel(join(cwd, 'model'), { alpha: 0.35, seed: 7 });
  await writeFile(join(cwd, 'config.yaml'), SWEEP_CONFIG);
  const extractArgs = ['extract', '--data', 'data', '--model', modelJson, '--size', '32x32', '--backend', 'wasm', '--db', 'c.sqlite'];
  const run = async (args: readonly string[]) => {
    const result = await runPipeline(cwd, args);
    t.is(result.code, 0, `${args.join(' ')}: ${result.stderr}`);
    return result;
  };
  return {
    cwd,
    run,
    extract: () => run(extractArgs),
    sweep: (...extra: string[]) => run(['sweep', '--db', 'c.sqlite', ...extra]),
    reportJson: async (sweep: number) => (await run(['report', '--db', 'c.sqlite', '--json', '--sweep', String(sweep)])).stdout,
  };
}

const sweepNumber = (stdout: string) => Number(/sweep (\d+) (done|already done|interrupted)/.exec(stdout)?.[1]);
const splitSizes = (json: string) => (JSON.parse(json) as { sweep: { split_sizes: Record<string, number> } }).sweep.split_sizes;
const testPaths = (json: string) => (JSON.parse(json) as { best: { misclassified: { path: string }[] } }).best.misclassified.map((m) => m.path);

test('removing images starts a new sweep; the old sweep keeps its own split, labels and paths byte for byte', async (t) => {
  const s = await setUp(t);
  await s.extract();
  const first = await s.sweep();
  t.is(sweepNumber(first.stdout), 1);
  const report1 = await s.reportJson(1);
  const sizes1 = splitSizes(report1);
  t.is(sizes1.train + sizes1.val + sizes1.test, 30);

  // The same data again: nothing to train.
  const same = await s.sweep();
  t.regex(same.stdout, /sweep 1 already done: 0 runs trained now/);
  t.regex(same.stderr, /this exact configuration on this exact data/);

  for (const i of [0, 1, 2, 3, 4]) await rm(join(s.cwd, 'data', 'alpha', `alpha_${i}.jpg`));
  await s.extract();
  const second = await s.sweep();
  t.is(sweepNumber(second.stdout), 2, second.stdout);
  t.regex(second.stdout, /sweep 2 done: 2 runs trained now/);

  t.is(await s.reportJson(1), report1, 'sweep 1 reports exactly what it did before the dataset changed');
  const report2 = await s.reportJson(2);
  const sizes2 = splitSizes(report2);
  t.is(sizes2.train + sizes2.val + sizes2.test, 25);
  // Every path sweep 1 names as misclassified is one of its own test images, even the removed ones.
  for (const path of testPaths(report1)) t.regex(path, /^(alpha|bravo|charlie)\//);
});

test('a relabelled image and an edited image each start a new sweep; --resume says why it cannot continue', async (t) => {
  const s = await setUp(t);
  await s.extract();
  t.is(sweepNumber((await s.sweep()).stdout), 1);

  // Move one image to another class folder: same content, new label.
  await rename(join(s.cwd, 'data', 'alpha', 'alpha_3.jpg'), join(s.cwd, 'data', 'bravo', 'alpha_3.jpg'));
  await s.extract();
  const relabelled = await s.sweep();
  t.is(sweepNumber(relabelled.stdout), 2, relabelled.stdout);

  // Edit an image in place: same path and label, new content.
  await writeImage(join(s.cwd, 'data', 'charlie', 'charlie_2.jpg'), { width: 40, height: 30, seed: 4242, tint: [10, 200, 10] });
  await s.extract();
  const resumed = await s.sweep('--resume');
  t.is(sweepNumber(resumed.stdout), 3, resumed.stdout);
  t.regex(resumed.stderr, /--resume: sweep 2 has this configuration but was trained on other data \(0 images added, 0 removed, 1 changed in content, label or split\): it cannot be resumed; starting a new sweep/);

  const db = openDatabase(join(s.cwd, 'c.sqlite'), { readonly: true });
  try {
    const sweeps = listSweeps(db);
    t.is(new Set(sweeps.map((x) => x.dataHash)).size, 3, 'three different data hashes');
    t.true(sweeps.every((x) => x.trainer === 'wasm-simd'));
  } finally {
    db.close();
  }
});

const fileDigest = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

test('readers never write: report, export, cache and export-features leave the database bytes unchanged', async (t) => {
  const s = await setUp(t);
  await s.extract();
  await s.sweep();
  const db = join(s.cwd, 'c.sqlite');
  const before = await fileDigest(db);
  const mtime = (await stat(db)).mtimeMs;
  for (const args of [
    ['report', '--db', 'c.sqlite'],
    ['report', '--db', 'c.sqlite', '--json'],
    ['report', '--db', 'c.sqlite', '--list'],
    ['report', '--db', 'c.sqlite', '--html', 'r.html'],
    ['cache', '--db', 'c.sqlite', '--failures'],
    ['export-features', '--db', 'c.sqlite', '--out', 'features'],
    ['export', '--db', 'c.sqlite', '--out', 'exported'],
  ]) {
    await s.run(args);
    t.is(await fileDigest(db), before, `${args[0]} ${args.slice(3).join(' ')} changed the database`);
  }
  t.is((await stat(db)).mtimeMs, mtime);
  // predict reads only the exported model.
  const predicted = await s.run(['predict', join('data', 'alpha', 'alpha_0.jpg'), '--model', 'exported']);
  t.regex(predicted.stdout, /1 predicted, 0 failed/);
  t.is(await fileDigest(db), before);
});

test('a database made by the previous schema is migrated; its old sweep is reported as needing a rerun', async (t) => {
  const s = await setUp(t);
  await s.extract();
  const path = join(s.cwd, 'c.sqlite');
  // Rebuild the file as the previous release left it: schema step 1 only, with one old sweep.
  const current = new Database(path);
  const featureSets = current.prepare('SELECT * FROM feature_sets').all() as Record<string, unknown>[];
  const items = current.prepare('SELECT * FROM dataset_items').all() as Record<string, unknown>[];
  const features = current.prepare("SELECT feature_set, sha256, vector FROM features WHERE view = 'original'").all() as Record<string, unknown>[];
  current.close();
  await rm(path);
  const old = new Database(path);
  old.exec(MIGRATIONS[0]);
  old.pragma('user_version = 1');
  const insert = (table: string, row: Record<string, unknown>) =>
    old.prepare(`INSERT INTO ${table} (${Object.keys(row).join(', ')}) VALUES (${Object.keys(row).map(() => '?').join(', ')})`).run(...Object.values(row));
  for (const row of featureSets) insert('feature_sets', row);
  for (const row of items) insert('dataset_items', row);
  for (const row of features) insert('features', row);
  insert('sweeps', {
    feature_set: featureSets[0].id,
    config_hash: 'old',
    config_json: JSON.stringify({ sweep: { metric: { name: 'val_accuracy', goal: 'maximize' }, seeds: [1] } }),
    split_source: 'official split lists',
    backend: 'wasm-simd',
    status: 'done',
    planned_runs: 0,
    started_at: '2026-01-01T00:00:00.000Z',
  });
  old.close();

  // A reader does not upgrade the file: one line saying what to run.
  const reader = expectOneLineError(t, await runPipeline(s.cwd, ['report', '--db', 'c.sqlite']), 'report on schema 1');
  t.regex(reader, /older cache schema \(1 < \d+\): run `pipeline extract` or `pipeline sweep` once to upgrade it/);
  t.is(new Database(path, { readonly: true }).pragma('user_version', { simple: true }), 1);

  // The next writer migrates; the old sweep is kept, flagged, and never taken for the current data.
  const swept = await s.sweep();
  t.is(sweepNumber(swept.stdout), 2, swept.stdout);
  const db = openDatabase(path, { readonly: true });
  try {
    t.is(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    const [oldSweep, newSweep] = listSweeps(db);
    t.is(oldSweep.trainer, 'wasm-simd', 'the old backend column is now the trainer column');
    t.is(oldSweep.dataHash, null);
    t.truthy(newSweep.dataHash);
  } finally {
    db.close();
  }
  const line = expectOneLineError(t, await runPipeline(s.cwd, ['report', '--db', 'c.sqlite', '--sweep', '1']), 'old sweep');
  t.regex(line, /sweep 1 was made by an earlier pipeline that did not record which images it trained on.*run `pipeline sweep` again/);
  const listed = await s.run(['report', '--db', 'c.sqlite', '--list']);
  t.regex(listed.stdout, /sweep 1 .*needs a rerun/);
});
