/**
 * `pipeline audit` wired into the rest of the CLI, on a generated dataset and a random
 * MobileNetV2 (no ../shared needed): extract stores every image's perceptual hash from the
 * pixels it decodes, the `audit:` section lives in the one config file (flags override it,
 * unknown keys are refused with file:line), and `pipeline report` shows the audit of the
 * reported sweep's feature set: `--json` as an `audit` object, `--html` as an "Audit"
 * section with a map that is checked in headless Chromium.
 */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import sharp from 'sharp';
import { openDatabase } from '../cache/database.js';
import { listItems } from '../cache/features.js';
import { decodeImage } from '../data/images.js';
import { perceptualHash } from '../data/phash.js';
import type { AuditResult } from '../stages/audit.js';
import { type GeneratedDataset, makeDataset } from './helpers/images.js';
import { runPipeline } from './helpers/cli.js';
import { writeRandomModel } from './helpers/random-model.js';
import { fileTempDir } from './helpers/shared.js';

const SIZE = { height: 64, width: 64 };
const temp = fileTempDir('pipeline-audit-report-');
const dbPath = join(temp.dir, 'cache.sqlite');
const configPath = join(temp.dir, 'config.yaml');
/** A byte-identical copy filed under another class, and a smaller re-encoded copy. */
const EXACT_COPY = 'charlie/copy_of_alpha_1.jpg';
const NEAR_COPY = 'bravo/smaller_bravo_2.jpg';
let dataset: GeneratedDataset;

const CONFIG = (modelJson: string, extra = '') => `dataset:
  root: data
cache:
  db: cache.sqlite
model:
  weights: ${JSON.stringify(modelJson)}
  size: 64x64
engine:
  backend: wasm
  batch: 4
  concurrency: 2
sweep:
  seeds: [1]
  parameters:
    dropout: {values: [0, 0.2]}
    learning_rate: {value: 0.003}
    epochs: {value: 15}
audit:
  label_issues:
    folds: 3
    epochs: 20
  map:
    neighbors: 6
    epochs: 60
${extra}`;

let modelJson: string;

test.before(async () => {
  dataset = await makeDataset(join(temp.dir, 'data'), { perClass: 8, width: 96, height: 72 });
  await copyFile(join(dataset.root, 'alpha/alpha_1.jpg'), join(dataset.root, EXACT_COPY));
  await sharp(join(dataset.root, 'bravo/bravo_2.jpg')).resize(72, 54).jpeg({ quality: 60 }).toFile(join(dataset.root, NEAR_COPY));
  ({ modelJson } = await writeRandomModel(join(temp.dir, 'model'), { alpha: 0.35, layout: 'keras', seed: 5 }));
  await writeFile(configPath, CONFIG(modelJson));
  const extract = await runPipeline(temp.dir, ['extract']);
  if (extract.code !== 0) throw new Error(`extract failed: ${extract.stderr}`);
});
test.after.always(() => temp.remove());

function hashRows(): Map<string, string> {
  const db = openDatabase(dbPath, { readonly: true });
  try {
    const rows = db.prepare('SELECT sha256, phash FROM image_hashes').all() as { sha256: string; phash: string }[];
    return new Map(rows.map((r) => [r.sha256, r.phash]));
  } finally {
    db.close();
  }
}

function listing(): { path: string; sha256: string }[] {
  const db = openDatabase(dbPath, { readonly: true });
  try {
    const [set] = db.prepare('SELECT id FROM feature_sets').all() as { id: string }[];
    return listItems(db, set.id);
  } finally {
    db.close();
  }
}

test.serial('extract stores one perceptual hash per extracted image, equal to data/phash.ts on the decoded file', async (t) => {
  const hashes = hashRows();
  const items = listing();
  t.is(items.length, 8 * 3 + 2);
  const contents = new Set(items.map((item) => item.sha256));
  t.is(contents.size, 8 * 3 + 1, 'the exact copy shares its content');
  t.deepEqual([...hashes.keys()].sort(), [...contents].sort());
  for (const item of items) {
    const pixels = await decodeImage(await readFile(join(dataset.root, item.path)), SIZE, 'fill');
    t.is(hashes.get(item.sha256), perceptualHash(pixels, SIZE.width, SIZE.height), item.path);
  }
  // A rerun decodes nothing and keeps the hashes.
  const again = await runPipeline(temp.dir, ['extract']);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(hashRows(), hashes);
});

test.serial('audit reads the hashes extract stored (phash_computed 0) and hashes only images that lack one', async (t) => {
  const first = await runPipeline(temp.dir, ['audit', '--json']);
  t.is(first.code, 0, first.stderr);
  const result = JSON.parse(first.stdout) as AuditResult;
  t.is(result.summary.phash_computed, 0);
  t.is(result.summary.images, 8 * 3 + 2);
  t.true(result.duplicate_groups.some((g) => g.kind === 'exact' && g.paths.includes(EXACT_COPY)));

  // As for a cache extracted before extract stored hashes: the audit computes the same ones.
  const before = hashRows();
  const [a, b] = listing().map((item) => item.sha256);
  const db = openDatabase(dbPath);
  db.prepare('DELETE FROM image_hashes WHERE sha256 IN (?, ?)').run(a, b);
  db.close();
  const second = await runPipeline(temp.dir, ['audit', '--json']);
  t.is(second.code, 0, second.stderr);
  t.is((JSON.parse(second.stdout) as AuditResult).summary.phash_computed, 2);
  t.deepEqual(hashRows(), before);
});

function storedAuditConfig(): { label_issues: { folds: number; epochs: number }; duplicates: { cosine: number } } {
  const db = openDatabase(dbPath, { readonly: true });
  try {
    const row = db.prepare('SELECT config_json FROM audits ORDER BY id DESC LIMIT 1').get() as { config_json: string };
    return JSON.parse(row.config_json);
  } finally {
    db.close();
  }
}

test.serial('the audit: section of the config file is used, flags override it, unknown keys are refused with file:line', async (t) => {
  const fromFile = await runPipeline(temp.dir, ['audit', '--json']);
  t.is(fromFile.code, 0, fromFile.stderr);
  t.like(storedAuditConfig(), { label_issues: { folds: 3, epochs: 20 }, duplicates: { cosine: 0.85 } });

  const flagged = await runPipeline(temp.dir, ['audit', '--json', '--folds', '4', '--cosine', '0.9']);
  t.is(flagged.code, 0, flagged.stderr);
  t.like(storedAuditConfig(), { label_issues: { folds: 4, epochs: 20 }, duplicates: { cosine: 0.9 } });

  const bad = join(temp.dir, 'bad.yaml');
  await writeFile(bad, CONFIG(modelJson).replace('    folds: 3\n', '    folds: 3\n    fold: 2\n'));
  for (const command of ['audit', 'sweep']) {
    const refused = await runPipeline(temp.dir, [command, '--config', bad]);
    t.is(refused.code, 1, refused.stderr);
    t.is(refused.stderr.trim().split('\n').length, 1, refused.stderr);
    t.regex(refused.stderr, /bad\.yaml:21:5: audit\.label_issues\.fold: unknown key \(allowed: folds, epochs, learning_rate, dropout, seed\)/);
  }
  await writeFile(bad, CONFIG(modelJson).replace('    folds: 3\n', '    folds: 1\n'));
  const range = await runPipeline(temp.dir, ['audit', '--config', bad]);
  t.is(range.code, 1);
  t.regex(range.stderr, /bad\.yaml:20:12: audit\.label_issues\.folds: /);
});
