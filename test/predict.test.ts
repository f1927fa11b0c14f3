/**
 * `pipeline predict`: good files are classified with the exported model (top-k from its
 * softmax), bad ones (corrupt, text, empty, missing, a folder) get an error each without
 * stopping the rest, results keep the input order, and no tensor is leaked.
 */
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { decodeImage } from '../data/images.js';
import { UserError } from '../core/errors.js';
import { exportModel } from '../stages/export.js';
import { type FilePrediction, predictFiles, topK } from '../stages/predict.js';
import { FIXTURE_CLASSES, type ExportFixture, makeExportFixture, loadTfjsExport } from './helpers/export-fixture.js';
import { classTint, encode, pixels, writeImage } from './helpers/images.js';
import { fileTempDir, tempDir } from './helpers/shared.js';

const temp = fileTempDir('pipeline-predict-');
let fixture: ExportFixture;
let modelDir: string;
let good: string[];
let bad: Record<string, string>;

test.before(async () => {
  fixture = await makeExportFixture(join(temp.dir, 'fixture'));
  modelDir = join(temp.dir, 'model');
  await exportModel({ db: fixture.db, run: fixture.hiddenRun.runKey, out: modelDir, log: () => {} });
  const images = join(temp.dir, 'images');
  good = [];
  for (let i = 0; i < 5; i++) {
    const path = join(images, `good_${i}.${i % 2 ? 'png' : 'jpg'}`);
    await writeImage(path, { width: 70 + i * 9, height: 50 + i * 6, seed: 70 + i, tint: classTint(i), format: i % 2 ? 'png' : 'jpeg' });
    good.push(path);
  }
  const jpeg = await encode(pixels(64, 48, 5), 64, 48, 'jpeg');
  bad = {
    corrupt: join(images, 'corrupt.jpg'),
    text: join(images, 'notes.jpg'),
    empty: join(images, 'empty.jpg'),
    missing: join(images, 'does-not-exist.jpg'),
    folder: join(images, 'a-folder'),
  };
  writeFileSync(bad.corrupt, jpeg.subarray(0, Math.floor(jpeg.length / 2)));
  writeFileSync(bad.text, 'this is not a picture\n');
  writeFileSync(bad.empty, Buffer.alloc(0));
  await mkdir(bad.folder);
});

test.after.always(async () => {
  fixture?.db.close();
  await temp.remove();
});

/** The exported model's own output for one file, as the reference for predict's top class. */
async function modelOutput(file: string): Promise<Float32Array> {
  const loaded = await loadTfjsExport(modelDir);
  try {
    const { height, width } = loaded.recipe.sizes[0];
    const data = await decodeImage(readFileSync(file), { height, width }, loaded.metadata.resize);
    const output = tf.tidy(() => loaded.model.predict(tf.tensor4d(Float32Array.from(data), [1, height, width, 3])) as tf.Tensor);
    const values = (await output.data()) as Float32Array;
    output.dispose();
    return values;
  } finally {
    loaded.model.dispose();
  }
}

test.serial('good files are predicted, bad ones get an error each, order is kept', async (t) => {
  const files = [good[0], bad.corrupt, good[1], bad.missing, good[2], bad.text, bad.empty, good[3], bad.folder, good[4]];
  const progress: number[] = [];
  const result = await predictFiles(files, modelDir, { top: 3, batchSize: 3, onProgress: (done) => progress.push(done) });
  t.is(result.backend, 'wasm');
  t.deepEqual(result.metadata.labels, [...FIXTURE_CLASSES]);
  t.deepEqual(
    result.predictions.map((p) => p.file),
    files,
  );
  t.deepEqual(progress, [3, 6, 9, 10]);

  const byFile = new Map(result.predictions.map((p) => [p.file, p]));
  for (const file of good) {
    const prediction = byFile.get(file) as Extract<FilePrediction, { ok: true }>;
    t.true(prediction.ok, file);
    t.is(prediction.top.length, FIXTURE_CLASSES.length);
    const sum = prediction.top.reduce((s, c) => s + c.probability, 0);
    t.true(Math.abs(sum - 1) < 1e-5, `probabilities sum to ${sum}`);
    for (let i = 1; i < prediction.top.length; i++) t.true(prediction.top[i - 1].probability >= prediction.top[i].probability);
    t.deepEqual(prediction.top.map((c) => c.label).sort(), [...FIXTURE_CLASSES]);

    const reference = await modelOutput(file);
    const argmax = reference.indexOf(Math.max(...reference));
    t.is(prediction.top[0].label, FIXTURE_CLASSES[argmax]);
    t.true(Math.abs(prediction.top[0].probability - reference[argmax]) < 1e-6);
  }
  // Not all the same answer with identical probabilities: the model sees the images.
  const firsts = good.map((file) => (byFile.get(file) as Extract<FilePrediction, { ok: true }>).top[0].probability);
  t.true(Math.max(...firsts) - Math.min(...firsts) > 1e-4);

  const errors = Object.fromEntries(Object.entries(bad).map(([kind, file]) => [kind, byFile.get(file)!]));
  for (const [kind, prediction] of Object.entries(errors)) {
    t.false(prediction.ok, kind);
    if (!prediction.ok) {
      t.true(prediction.error.length > 0);
      t.false(prediction.error.includes('\n'));
    }
  }
  t.is((errors.missing as { error: string }).error, 'no such file');
  t.is((errors.folder as { error: string }).error, 'is a folder, not an image');
  t.regex((errors.corrupt as { error: string }).error, /^cannot decode/);
  t.regex((errors.empty as { error: string }).error, /empty file/);
});

test.serial('top is clamped to 1..classes; one batch or many give the same answers; no tensor leaks', async (t) => {
  const before = tf.memory().numTensors;
  const one = await predictFiles(good, modelDir, { top: 1, batchSize: 64 });
  const many = await predictFiles(good, modelDir, { top: 99, batchSize: 1 });
  t.is(tf.memory().numTensors, before);
  for (const [i, prediction] of one.predictions.entries()) {
    const other = many.predictions[i];
    t.true(prediction.ok && other.ok);
    if (!prediction.ok || !other.ok) continue;
    t.is(prediction.top.length, 1);
    t.is(other.top.length, FIXTURE_CLASSES.length);
    t.is(prediction.top[0].label, other.top[0].label);
    t.true(Math.abs(prediction.top[0].probability - other.top[0].probability) < 1e-6);
  }
});

test.serial('a missing or non-export model folder is a UserError', async (t) => {
  const dir = tempDir(t);
  await t.throwsAsync(predictFiles(good, join(dir, 'nope')), { instanceOf: UserError, message: /no such folder/ });
  await t.throwsAsync(predictFiles(good, dir), { instanceOf: UserError, message: /no metadata\.json/ });
  writeFileSync(join(dir, 'metadata.json'), JSON.stringify({ format: 'something-else' }));
  await t.throwsAsync(predictFiles(good, dir), { instanceOf: UserError, message: /not a pipeline export/ });
  // model.json itself is accepted in place of its folder.
  const result = await predictFiles(good.slice(0, 1), join(modelDir, 'model.json'));
  t.true(result.predictions[0].ok);
});

test.serial('an export of format version 1 (one size, no views) still predicts the same; bad sizes or views in metadata.json are UserErrors', async (t) => {
  const dir = tempDir(t);
  const metadata = JSON.parse(readFileSync(join(modelDir, 'metadata.json'), 'utf8'));
  const { model, sizes, views, views_in_model: _inModel, inputs, standardize, ...common } = metadata;
  t.deepEqual([model.runtime, sizes, views, standardize], ['tfjs', ['64x64'], ['original'], null]);
  const v1 = { ...common, format_version: 1, input: { ...inputs[0], name: undefined } };
  for (const file of readdirSync(modelDir)) copyFileSync(join(modelDir, file), join(dir, file));
  writeFileSync(join(dir, 'metadata.json'), JSON.stringify(v1));
  const now = await predictFiles(good, modelDir, { top: 3 });
  const old = await predictFiles(good, dir, { top: 3 });
  t.deepEqual(old.predictions, now.predictions);

  for (const [field, value, message] of [
    ['sizes', ['64x64', 'huge'], /metadata\.json sizes: "huge" is not HxW/],
    ['views', ['original', 'sideways'], /metadata\.json views: unknown view "sideways"/],
    ['model', { runtime: 'pytorch' }, /metadata\.json model\.runtime: expected tfjs or onnx/],
  ] as const) {
    writeFileSync(join(dir, 'metadata.json'), JSON.stringify({ ...metadata, [field]: value }));
    await t.throwsAsync(predictFiles(good, dir), { instanceOf: UserError, message }, field);
  }
  // Sizes that disagree with the model's inputs.
  writeFileSync(join(dir, 'metadata.json'), JSON.stringify({ ...metadata, sizes: ['64x64', '32x32'] }));
  await t.throwsAsync(predictFiles(good, dir), { instanceOf: UserError, message: /disagrees with metadata\.json \(sizes 64x64, 32x32/ });
});

test('topK orders by probability, ties by class index', (t) => {
  t.deepEqual(topK(Float32Array.from([0.25, 0.5, 0.25]), ['a', 'b', 'c'], 3), [
    { label: 'b', probability: 0.5 },
    { label: 'a', probability: 0.25 },
    { label: 'c', probability: 0.25 },
  ]);
});
