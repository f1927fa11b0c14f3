/**
 * Stage one end to end in-process: runExtract on a generated dataset with a random
 * alpha-0.35 model at 64x64 on wasm, the SQLite cache it leaves, and export-features.
 * The serial tests below share one dataset and one cache and build on each other in
 * order, as a user's reruns would.
 */
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import test from 'ava';
import { createTfjsBackbone } from '../backbone/tfjs-backbone.js';
import { backboneWeights, readWeightFile } from '../backbone/weights.js';
import { openDatabase } from '../cache/database.js';
import { type FeatureSet, listFailures, listFeatureSets, listItems } from '../cache/features.js';
import { sha256 } from '../data/hash.js';
import { decodeImage } from '../data/images.js';
import { exportFeatures } from '../stages/export-features.js';
import { type ExtractOptions, type ExtractSummary, runExtract } from '../stages/extract.js';
import { activateBackend } from '../backbone/backends.js';
import { UserError } from '../core/errors.js';
import { type GeneratedDataset, makeDataset, writeImage } from './helpers/images.js';
import { writeRandomModel } from './helpers/random-model.js';
import { fileTempDir } from './helpers/shared.js';

const SIZE = { height: 64, width: 64 };
const temp = fileTempDir('pipeline-extract-');
let dataset: GeneratedDataset;
let modelJson: string;
const dbPath = join(temp.dir, 'cache', 'pipeline.sqlite');
/** The duplicate: a byte-identical copy of bravo_1 filed under charlie. */
const DUPLICATE = 'charlie/copy_of_bravo_1.jpg';

test.before(async () => {
  tf.enableProdMode();
  await activateBackend(tf, 'wasm');
  dataset = await makeDataset(join(temp.dir, 'data'), { perClass: 4, corrupt: true, zeroByte: true });
  await copyFile(join(dataset.root, 'bravo/bravo_1.jpg'), join(dataset.root, DUPLICATE));
  ({ modelJson } = await writeRandomModel(join(temp.dir, 'model'), { alpha: 0.35, layout: 'keras', seed: 21 }));
});
test.after.always(() => temp.remove());

function options(overrides: Partial<ExtractOptions> = {}): ExtractOptions & { logged: string[] } {
  const logged: string[] = [];
  return {
    dataset: { root: dataset.root, url: null, sha256: null, splits: null },
    model: { weights: modelJson, size: SIZE, resize: 'fill' },
    db: dbPath,
    backend: 'wasm',
    batch: 4,
    concurrency: 2,
    log: (line) => logged.push(line),
    logged,
    ...overrides,
  };
}

/** Every (sha256 -> vector bytes) of a feature set, straight from SQLite. */
function rows(featureSet: string): Map<string, Buffer> {
  const db = openDatabase(dbPath, { readonly: true });
  try {
    const all = db.prepare('SELECT sha256, vector FROM features WHERE feature_set = ?').all(featureSet) as { sha256: string; vector: Buffer }[];
    return new Map(all.map((r) => [r.sha256, Buffer.from(r.vector)]));
  } finally {
    db.close();
  }
}

function items(featureSet: string) {
  const db = openDatabase(dbPath, { readonly: true });
  try {
    return listItems(db, featureSet);
  } finally {
    db.close();
  }
}

const fileHash = async (rel: string) => sha256(await readFile(join(dataset.root, rel)));

let first: ExtractSummary;
let firstRows: Map<string, Buffer>;

test.serial('first extract: one row per distinct good image, the duplicate shares one, failures recorded and listed', async (t) => {
  const opts = options();
  first = await runExtract(opts);
  t.false(first.interrupted);
  t.is(first.images, 12 + 1 + 2, 'every file in the listing: 12 images, the duplicate, 2 bad files');
  t.is(first.cached, 0);
  t.is(first.toExtract, 14, '12 distinct good contents + 2 bad ones');
  t.is(first.extracted, 12);
  t.is(first.featureSet.dim, 1280);
  t.is(first.featureSet.alpha, 0.35);
  t.is(first.featureSet.height, 64);
  t.deepEqual(first.failures.map((f) => f.path).sort(), dataset.bad);
  t.true(first.failures.every((f) => f.error.length > 0 && !f.error.includes('\n')));

  firstRows = rows(first.featureSet.id);
  t.is(firstRows.size, 12);
  const expected = [...new Set(await Promise.all(dataset.images.map(fileHash)))].sort();
  t.deepEqual([...firstRows.keys()].sort(), expected);
  t.is(await fileHash(DUPLICATE), await fileHash('bravo/bravo_1.jpg'));
  for (const vector of firstRows.values()) {
    t.is(vector.length, 1280 * 4);
    const values = new Float32Array(new Uint8Array(vector).buffer);
    t.true(values.every(Number.isFinite));
  }
  // Different images, different vectors: the cache is not filled with one repeated row.
  t.is(new Set([...firstRows.values()].map((v) => v.toString('hex'))).size, 12);

  const db = openDatabase(dbPath, { readonly: true });
  try {
    const failures = listFailures(db, first.featureSet.id);
    t.deepEqual(
      failures.map((f) => f.path),
      dataset.bad,
    );
    const [summary] = listFeatureSets(db);
    t.is(summary.features, 12);
    t.is(summary.failures, 2);
    t.is(summary.images, 15);
    const listing = listItems(db, first.featureSet.id);
    t.deepEqual(
      listing.map((i) => i.path),
      [...dataset.images, ...dataset.bad, DUPLICATE].sort(),
    );
    t.is(listing.find((i) => i.path === DUPLICATE)!.label, 'charlie');
    const run = db.prepare('SELECT status, images, extracted, failed FROM extract_runs ORDER BY id').all();
    t.deepEqual(run, [{ status: 'done', images: 15, extracted: 12, failed: 2 }]);
  } finally {
    db.close();
  }
});

test.serial('a rerun extracts nothing and leaves every row bitwise identical', async (t) => {
  const again = await runExtract(options());
  t.is(again.featureSet.id, first.featureSet.id);
  t.is(again.featureSet.createdAt, first.featureSet.createdAt);
  t.is(again.extracted, 0);
  t.is(again.cached, 13);
  t.is(again.failures.length, 2, 'bad files are retried and fail again');
  const now = rows(first.featureSet.id);
  t.is(now.size, firstRows.size);
  for (const [hash, vector] of firstRows) t.true(now.get(hash)?.equals(vector), hash);
});

test.serial('editing one image re-extracts just that one', async (t) => {
  const edited = 'alpha/alpha_2.jpg';
  const before = await fileHash(edited);
  await writeImage(join(dataset.root, edited), { seed: 4242, tint: [10, 250, 10] });
  const after = await fileHash(edited);
  t.not(after, before);
  const summary = await runExtract(options());
  t.is(summary.featureSet.id, first.featureSet.id);
  t.is(summary.extracted, 1);
  t.is(summary.cached, 12);
  const now = rows(first.featureSet.id);
  t.true(now.has(after));
  for (const [hash, vector] of firstRows) if (hash !== before) t.true(now.get(hash)?.equals(vector), hash);
  t.is(items(first.featureSet.id).find((i) => i.path === edited)!.sha256, after);
});

let secondSet: FeatureSet;

test.serial('another input size makes a new feature set and leaves the old one untouched', async (t) => {
  const oldRows = rows(first.featureSet.id);
  const oldItems = items(first.featureSet.id);
  const summary = await runExtract(options({ model: { weights: modelJson, size: { height: 96, width: 64 }, resize: 'fill' } }));
  secondSet = summary.featureSet;
  t.not(secondSet.id, first.featureSet.id);
  t.is(secondSet.height, 96);
  t.is(summary.extracted, 12);
  t.is(rows(secondSet.id).size, 12);
  const oldNow = rows(first.featureSet.id);
  t.is(oldNow.size, oldRows.size);
  for (const [hash, vector] of oldRows) t.true(oldNow.get(hash)?.equals(vector), hash);
  t.deepEqual(items(first.featureSet.id), oldItems);
  // The same image at another size gives other numbers.
  const hash = await fileHash('charlie/charlie_0.jpg');
  t.false(rows(secondSet.id).get(hash)!.equals(oldNow.get(hash)!));
});

/** Reads a NumPy .npy v1/v2 file: header dict and float32 data. */
function parseNpy(bytes: Buffer): { descr: string; fortran: boolean; shape: number[]; data: Float32Array; headerLength: number } {
  if (bytes.subarray(0, 6).toString('latin1') !== '\x93NUMPY') throw new Error('not an .npy file');
  const major = bytes[6];
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = bytes.subarray(start, start + headerLength).toString('latin1');
  if (!header.endsWith('\n')) throw new Error('header does not end with a newline');
  const descr = /'descr':\s*'([^']+)'/.exec(header)![1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)![1] === 'True';
  const shape = /'shape':\s*\(([^)]*)\)/
    .exec(header)![1]
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const body = bytes.subarray(start + headerLength);
  const data = new Float32Array(new Uint8Array(body).buffer);
  return { descr, fortran, shape, data, headerLength: start + headerLength };
}

test.serial('export-features writes a valid .npy and index.csv in the same order, equal to the cache', async (t) => {
  const out = join(temp.dir, 'export');
  const db = openDatabase(dbPath, { readonly: true });
  let result;
  try {
    result = await exportFeatures(db, first.featureSet, out);
  } finally {
    db.close();
  }
  t.is(result.rows, 13, '12 images + the duplicate; the 2 failures have no row');
  t.is(result.dim, 1280);
  const npy = parseNpy(await readFile(join(out, 'features.npy')));
  t.is(npy.descr, '<f4');
  t.false(npy.fortran);
  t.deepEqual(npy.shape, [13, 1280]);
  t.is(npy.headerLength % 64, 0, 'data starts 64-byte aligned');
  t.is(npy.data.length, 13 * 1280);

  const csv = (await readFile(join(out, 'index.csv'), 'utf8')).trim().split(/\r?\n/);
  t.is(csv[0], 'path,label,split,sha256');
  const records = csv.slice(1).map((line) => line.split(','));
  t.is(records.length, 13);
  const expectedPaths = [...dataset.images, DUPLICATE].sort();
  t.deepEqual(
    records.map((r) => r[0]),
    expectedPaths,
  );
  const vectors = rows(first.featureSet.id);
  for (const [i, [path, label, split, hash]] of records.entries()) {
    t.is(label, path.split('/')[0]);
    t.is(split, '');
    t.is(hash, await fileHash(path));
    const fromDb = new Float32Array(new Uint8Array(vectors.get(hash)!).buffer);
    t.deepEqual(npy.data.subarray(i * 1280, (i + 1) * 1280), fromDb, path);
  }
  t.deepEqual(
    npy.data.subarray(records.findIndex((r) => r[0] === DUPLICATE) * 1280).subarray(0, 1280),
    npy.data.subarray(records.findIndex((r) => r[0] === 'bravo/bravo_1.jpg') * 1280).subarray(0, 1280),
  );
});

test.serial('the cached features equal createTfjsBackbone run in-process on the same decoded pixels', async (t) => {
  const weights = await backboneWeights(await readWeightFile(modelJson));
  const backbone = createTfjsBackbone(tf, weights.arch, weights.layers);
  const vectors = rows(first.featureSet.id);
  try {
    const paths = [...dataset.images];
    const decoded = await Promise.all(paths.map(async (p) => decodeImage(await readFile(join(dataset.root, p)), SIZE, 'fill')));
    // Run in a different batching than the extract stage (6 + 6 vs 4 + 4 + 4): features are per image.
    for (let start = 0; start < paths.length; start += 6) {
      const batch = decoded.slice(start, start + 6);
      const input = tf.tensor4d(Int32Array.from(Buffer.concat(batch)), [batch.length, 64, 64, 3], 'int32');
      const out = backbone.features(input);
      const values = (await out.data()) as Float32Array;
      tf.dispose([input, out]);
      for (let i = 0; i < batch.length; i++) {
        const hash = await fileHash(paths[start + i]);
        const cached = new Float32Array(new Uint8Array(vectors.get(hash)!).buffer);
        let diff = 0;
        for (let k = 0; k < 1280; k++) diff = Math.max(diff, Math.abs(cached[k] - values[i * 1280 + k]));
        t.true(diff <= 1e-5, `${paths[start + i]}: max abs diff ${diff}`);
      }
    }
  } finally {
    backbone.dispose();
  }
});

test.serial('export-features of a feature set without vectors, or into a path that is a file: UserError', async (t) => {
  const db = openDatabase(dbPath, { readonly: true });
  try {
    const noVectors: FeatureSet = { ...first.featureSet, id: 'not-a-stored-set' };
    await t.throwsAsync(() => exportFeatures(db, noVectors, join(temp.dir, 'nothing')), { instanceOf: UserError });
    const error = await t.throwsAsync(() => exportFeatures(db, first.featureSet, join(dataset.root, 'alpha', 'alpha_0.jpg')), {
      instanceOf: UserError,
    });
    t.regex(error!.message, /--out/);
  } finally {
    db.close();
  }
});

test.serial('a bad file that is fixed leaves the failure list: cache --failures shows only what fails now', async (t) => {
  // Runs last among the serial tests: it changes the dataset the others describe.
  await writeImage(join(dataset.root, 'alpha/corrupt.jpg'), { seed: 777 });
  const summary = await runExtract(options());
  t.is(summary.extracted, 1);
  t.deepEqual(
    summary.failures.map((f) => f.path),
    ['alpha/empty.jpg'],
  );
  const db = openDatabase(dbPath, { readonly: true });
  try {
    t.deepEqual(
      listFailures(db, first.featureSet.id).map((f) => f.path),
      ['alpha/empty.jpg'],
      'the fixed file is no longer listed as failing',
    );
    const summaryRow = listFeatureSets(db).find((s) => s.id === first.featureSet.id)!;
    t.is(summaryRow.failures, 1);
  } finally {
    db.close();
  }
});

test('no tensor leak: createTfjsBackbone.features over several batches, then dispose', async (t) => {
  const weights = await backboneWeights(await readWeightFile(modelJson));
  const baseline = tf.memory().numTensors;
  const backbone = createTfjsBackbone(tf, weights.arch, weights.layers);
  const withWeights = tf.memory().numTensors;
  t.is(withWeights - baseline, 52 * 2, 'one kernel and one bias tensor per layer');
  const run = async (batch: number) => {
    const input = tf.tensor4d(new Int32Array(batch * 64 * 64 * 3).fill(100), [batch, 64, 64, 3], 'int32');
    const out = backbone.features(input);
    await out.data();
    tf.dispose([input, out]);
  };
  await run(2);
  const afterFirst = tf.memory().numTensors;
  for (const batch of [1, 3, 2, 4]) await run(batch);
  t.is(tf.memory().numTensors, afterFirst);
  t.is(afterFirst, withWeights);
  backbone.dispose();
  t.is(tf.memory().numTensors, baseline);
});
