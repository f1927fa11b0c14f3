/**
 * Views and several sizes at extract time, on a generated dataset with a random tiny
 * model (onnx, 2 sessions): one decode per image whatever the views and sizes, one
 * feature set per size, vectors keyed by view, adding a view later computes only it,
 * and a cache written before views existed migrates to view 'original'.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import test from 'ava';
import { SCHEMA_VERSION, openDatabase } from '../cache/database.js';
import { listFeatureSets, loadVectors, listItems } from '../cache/features.js';
import { decodeImage, decodeSources, renderInput } from '../data/images.js';
import { type View, parseView } from '../data/views.js';
import { type ExtractOptions, runExtract } from '../stages/extract.js';
import { startEngine } from '../backbone/engine.js';
import { backboneWeights, readWeightFile } from '../backbone/weights.js';
import { readFile } from 'node:fs/promises';
import { makeDataset } from './helpers/images.js';
import { writeRandomModel } from './helpers/random-model.js';
import { fileTempDir } from './helpers/shared.js';

const temp = fileTempDir('pipeline-views-');
test.after.always(() => temp.remove());

const SIZES = [
  { height: 48, width: 64 },
  { height: 32, width: 32 },
];

async function setup(name: string) {
  const dataset = await makeDataset(join(temp.dir, name, 'data'), { perClass: 3, width: 50, height: 40, corrupt: true });
  const { modelJson } = await writeRandomModel(join(temp.dir, name, 'model'), { alpha: 0.35, seed: 5 });
  const options = (overrides: Partial<ExtractOptions['model']> = {}): ExtractOptions => ({
    dataset: { root: dataset.root, url: null, sha256: null, splits: null },
    model: { weights: modelJson, size: SIZES, resize: 'fill', views: ['original', 'hflip'], ...overrides },
    db: join(temp.dir, name, 'cache.sqlite'),
    backend: 'onnx',
    batch: 4,
    concurrency: 2,
  });
  return { dataset, modelJson, options };
}

test('three views at two sizes: one decode per image, one feature set per size, a vector per view; a view added later computes only it', async (t) => {
  const { dataset, modelJson, options } = await setup('a');
  const first = await runExtract(options({ views: ['original', 'hflip', 'rot90'] }));
  const images = dataset.images.length;
  t.is(first.decoded, images, 'each good image decoded once for 3 views x 2 sizes');
  t.is(first.extracted, images * 3 * 2);
  t.is(first.featureSets.length, 2);
  t.deepEqual(first.featureSets.map((s) => [s.height, s.width]), SIZES.map((s) => [s.height, s.width]));
  t.deepEqual(first.failures.map((f) => f.path), dataset.bad);

  const again = await runExtract(options({ views: ['original', 'hflip', 'rot90', 'crop:0.8:center'] }));
  t.is(again.decoded, images, 'the new view needs one more decode per image');
  t.is(again.extracted, images * 2, 'only the new view, at both sizes');
  const rerun = await runExtract(options({ views: ['original', 'hflip', 'rot90', 'crop:0.8:center'] }));
  t.is(rerun.extracted, 0);
  t.is(rerun.cached, images);

  const db = openDatabase(options().db, { readonly: true });
  try {
    const sets = listFeatureSets(db);
    for (const set of sets) {
      t.deepEqual(set.views.map((v) => v.view), ['original', 'crop:0.8:center', 'hflip', 'rot90']);
      t.true(set.views.every((v) => v.vectors === images));
    }
    // A stored vector is the backbone of that view of the decoded image at that size.
    const weights = await backboneWeights(await readWeightFile(modelJson));
    const size = SIZES[1];
    const set = sets.find((s) => s.height === size.height)!;
    const item = listItems(db, set.id).find((i) => i.path === dataset.images[0])!;
    const bytes = await readFile(join(dataset.root, item.path));
    const { sources } = await decodeSources(bytes, [size]);
    const engine = await startEngine({ weights, backend: { backend: 'onnx', reason: 'test', workers: 1 }, size, batchSize: 1 });
    try {
      for (const name of ['original', 'rot90']) {
        const expected = await engine.run(await renderInput(sources[0], parseView(name) as View, size, 'fill'), 1);
        const stored = loadVectors(db, set.id, [item.sha256], name).get(item.sha256)!;
        t.deepEqual([...stored], [...expected], `${name} vector`);
      }
      const original = loadVectors(db, set.id, [item.sha256], 'original').get(item.sha256)!;
      const flipped = loadVectors(db, set.id, [item.sha256], 'hflip').get(item.sha256)!;
      t.notDeepEqual([...original], [...flipped]);
      // The original view through renderInput is what decodeImage (predict) gives.
      t.true((await decodeImage(bytes, size, 'fill')).equals(await renderInput(sources[0], parseView('original') as View, size, 'fill')));
    } finally {
      await engine.close();
    }
  } finally {
    db.close();
  }
});

test('a bad view name is one line naming the flag', async (t) => {
  const { options } = await setup('b');
  await t.throwsAsync(runExtract(options({ views: ['original', 'sideways'] })), { message: /^--views \/ model\.views: unknown view "sideways"/ });
});

test('a cache written before views (schema 2) migrates: old vectors become view original and are not recomputed', async (t) => {
  const { dataset, options } = await setup('c');
  const opts = options({ size: SIZES[0], views: ['original'] });
  const first = await runExtract(opts);
  // Rewind the file to schema 2: the features table as it was, without the view column, and
  // none of the tables later steps add.
  const raw = new Database(opts.db);
  raw.exec(`
    CREATE TABLE old_features (feature_set TEXT NOT NULL REFERENCES feature_sets(id), sha256 TEXT NOT NULL, vector BLOB NOT NULL,
      PRIMARY KEY (feature_set, sha256)) WITHOUT ROWID;
    INSERT INTO old_features SELECT feature_set, sha256, vector FROM features;
    DROP TABLE features;
    ALTER TABLE old_features RENAME TO features;
    DROP TABLE audit_map; DROP TABLE audits; DROP TABLE image_hashes; DROP TABLE file_hashes;
    ALTER TABLE sweeps DROP COLUMN size_sets_json; ALTER TABLE sweep_runs DROP COLUMN test_accuracy_single_view;
    PRAGMA user_version = 2;
  `);
  raw.close();
  const readonly = t.throws(() => openDatabase(opts.db, { readonly: true }));
  t.regex(readonly!.message, /older cache schema \(2 < \d+\): run `pipeline extract` or `pipeline sweep` once to upgrade it/);
  const second = await runExtract({ ...opts, model: { ...opts.model, views: ['original', 'vflip'] } });
  t.is(second.extracted, dataset.images.length, 'only vflip is computed');
  const db = openDatabase(opts.db, { readonly: true });
  try {
    t.is(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    const [set] = listFeatureSets(db);
    t.is(set.id, first.featureSet.id);
    t.deepEqual(set.views, [{ view: 'original', vectors: dataset.images.length }, { view: 'vflip', vectors: dataset.images.length }]);
  } finally {
    db.close();
  }
});
