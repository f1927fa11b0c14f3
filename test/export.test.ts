/**
 * `pipeline export`: the exported LayersModel must compute exactly what the extraction
 * engine (fused tfjs backbone) followed by the trained head computes, reload with
 * tf.loadLayersModel, carry its metadata, and never leave a half-written folder.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { buildLayersModel, headFromArrays } from '../backbone/layers-model.js';
import { type InputSize, PREPROCESSING } from '../backbone/preprocessing.js';
import { createTfjsBackbone } from '../backbone/tfjs-backbone.js';
import { backboneWeights, readWeightFile } from '../backbone/weights.js';
import { decodeImage } from '../data/images.js';
import { activateBackend } from '../backbone/backends.js';
import { UserError } from '../core/errors.js';
import { type ExportMetadata, exportModel } from '../stages/export.js';
import { FIXTURE_CLASSES, FIXTURE_FEATURE_SET, type ExportFixture, headProbabilities, makeExportFixture, randomHead, loadTfjsExport } from './helpers/export-fixture.js';
import { classTint, writeImage } from './helpers/images.js';
import { writeRandomModel } from './helpers/random-model.js';
import { SHARED_MODEL_100, TRASHNET_DIR, fileTempDir, serialTestWithShared, tempDir } from './helpers/shared.js';

const temp = fileTempDir('pipeline-export-');
let fixture: ExportFixture;
let images: string[];

test.before(async () => {
  await activateBackend(tf, 'wasm');
  fixture = await makeExportFixture(join(temp.dir, 'fixture'));
  images = [];
  for (let i = 0; i < 4; i++) {
    const path = join(temp.dir, 'images', `image_${i}.${i % 2 ? 'png' : 'jpg'}`);
    await writeImage(path, { width: 80 + i * 7, height: 60 + i * 5, seed: 40 + i, tint: classTint(i), format: i % 2 ? 'png' : 'jpeg' });
    images.push(path);
  }
});

test.after.always(async () => {
  fixture?.db.close();
  await temp.remove();
});

async function pixelBatch(files: readonly string[], size: InputSize, resize: 'fill' | 'cover' = 'fill'): Promise<Uint8Array> {
  const per = size.height * size.width * 3;
  const out = new Uint8Array(files.length * per);
  for (const [i, file] of files.entries()) out.set(await decodeImage(readFileSync(file), size, resize), i * per);
  return out;
}

/** Features from the extraction engine (fused ops), the reference the export must reproduce. */
async function fusedFeatures(modelJson: string, pixels: Uint8Array, n: number, size: InputSize): Promise<Float32Array> {
  const weights = await backboneWeights(await readWeightFile(modelJson));
  const engine = createTfjsBackbone(tf, weights.arch, weights.layers);
  try {
    const input = tf.tensor4d(pixels, [n, size.height, size.width, 3], 'int32');
    const features = engine.features(input);
    const values = (await features.data()) as Float32Array;
    tf.dispose([input, features]);
    return values;
  } finally {
    engine.dispose();
  }
}

async function runModel(model: tf.LayersModel, pixels: Uint8Array, n: number, size: InputSize): Promise<Float32Array> {
  const output = tf.tidy(() => model.predict(tf.tensor4d(Float32Array.from(pixels), [n, size.height, size.width, 3])) as tf.Tensor);
  const values = (await output.data()) as Float32Array;
  output.dispose();
  return values;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

for (const which of ['plain', 'hidden'] as const) {
  test.serial(`exported ${which} head: reloaded model = fused backbone features -> head (1e-4)`, async (t) => {
    const run = which === 'plain' ? fixture.plainRun : fixture.hiddenRun;
    const out = join(temp.dir, `export-${which}`);
    const outcome = await exportModel({ db: fixture.db, run: which === 'plain' ? 'best' : run.runKey, out, log: () => {} });
    t.is(outcome.metadata.run_key, run.runKey);
    t.deepEqual(outcome.files.sort(), readdirSync(out).sort());

    const loaded = await loadTfjsExport(out);
    try {
      const { size } = fixture;
      const pixels = await pixelBatch(images, size);
      const features = await fusedFeatures(fixture.modelJson, pixels, images.length, size);
      const expected = headProbabilities(features, 1280, run.weights).flat();
      const actual = await runModel(loaded.model, pixels, images.length, size);
      t.is(actual.length, images.length * FIXTURE_CLASSES.length);
      const diff = maxDiff(actual, expected);
      t.log(`max |exported - (fused features -> head)| = ${diff.toExponential(2)}`);
      t.true(diff < 1e-4);
      // Not a degenerate comparison: the images get different probabilities.
      t.true(maxDiff(actual.subarray(0, 3), actual.subarray(3, 6)) > 1e-3);

      const layerNames = loaded.model.layers.map((l) => l.name);
      const denseNames = which === 'plain' ? ['dropout', 'dense'] : ['dropout', 'dense', 'dropout_1', 'dense_1'];
      t.deepEqual(layerNames.slice(-denseNames.length), denseNames);
    } finally {
      loaded.model.dispose();
    }
  });
}

test.serial('model.json reads like Keras MobileNetV2 and loads with tf.loadLayersModel from the files', async (t) => {
  const out = join(temp.dir, 'export-files');
  await exportModel({ db: fixture.db, run: fixture.hiddenRun.runKey, out, log: () => {} });
  const modelJson = JSON.parse(readFileSync(join(out, 'model.json'), 'utf8'));
  t.is(modelJson.format, 'layers-model');
  const layers = modelJson.modelTopology.config.layers as { class_name: string; config: { name: string; max_value?: number; scale?: number; offset?: number; padding?: string; activation?: string } }[];
  const byName = new Map(layers.map((l) => [l.config.name, l]));
  t.is(byName.get('rescaling')?.class_name, 'Rescaling');
  t.is(byName.get('rescaling')?.config.scale, 1 / PREPROCESSING.scale);
  t.is(byName.get('rescaling')?.config.offset, -PREPROCESSING.offset);
  t.is(byName.get('Conv1')?.class_name, 'Conv2D');
  t.is(byName.get('Conv1')?.config.padding, 'same');
  t.is(byName.get('Conv1_relu')?.class_name, 'ReLU');
  t.is(byName.get('Conv1_relu')?.config.max_value, 6);
  t.is(byName.get('block_1_depthwise')?.class_name, 'DepthwiseConv2D');
  t.is(byName.get('block_2_add')?.class_name, 'Add');
  t.is(byName.get('out_relu')?.class_name, 'ReLU');
  t.is(byName.get('global_average_pooling2d')?.class_name, 'GlobalAveragePooling2D');
  t.is(byName.get('dense_1')?.config.activation, 'softmax');
  t.is(byName.get('dense')?.config.activation, 'relu');

  // The weight names are Keras' too, so the export is itself a valid backbone source.
  const reread = await backboneWeights(await readWeightFile(join(out, 'model.json')));
  const original = await backboneWeights(await readWeightFile(fixture.modelJson));
  t.is(reread.arch.alpha, 0.35);
  t.false(reread.foldedAtLoad);
  for (const [name, { kernel, bias }] of original.layers) {
    t.true(maxDiff(reread.layers.get(name)!.kernel, kernel) === 0 && maxDiff(reread.layers.get(name)!.bias, bias) === 0, name);
  }

  // A plain file-reading IOHandler, as a user of the export would write it.
  const handler: tf.io.IOHandler = {
    load: async () =>
      tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const specs = manifest.flatMap((g) => g.weights);
        const data = Buffer.concat(manifest.flatMap((g) => g.paths.map((p) => readFileSync(join(out, p)))));
        return [specs, data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer];
      }),
  };
  const model = await tf.loadLayersModel(handler);
  t.deepEqual(model.inputs[0].shape, [null, fixture.size.height, fixture.size.width, 3]);
  t.deepEqual(model.outputs[0].shape, [null, FIXTURE_CLASSES.length]);
  model.dispose();
});

test.serial('metadata.json has labels, input, preprocessing, provenance and metrics', async (t) => {
  const out = join(temp.dir, 'export-metadata');
  const { metadata: returned } = await exportModel({ db: fixture.db, run: 'best', out, log: () => {} });
  const metadata = JSON.parse(readFileSync(join(out, 'metadata.json'), 'utf8')) as ExportMetadata;
  t.deepEqual(metadata, JSON.parse(JSON.stringify(returned)));
  t.is(metadata.format, 'pipeline-classifier');
  t.is(metadata.format_version, 2);
  t.deepEqual(metadata.model, { runtime: 'tfjs', file: 'model.json' });
  t.deepEqual(metadata.labels, [...FIXTURE_CLASSES]);
  // A run stored without sizes, views or standardize: the feature set's size, view original, none.
  t.deepEqual(metadata.sizes, [`${fixture.size.height}x${fixture.size.width}`]);
  t.deepEqual(metadata.views, ['original']);
  t.false(metadata.views_in_model);
  t.is(metadata.standardize, null);
  t.deepEqual(metadata.inputs, [{ name: 'input_1', height: fixture.size.height, width: fixture.size.width, channels: 3, layout: 'NHWC', dtype: 'float32', range: [0, 255] }]);
  t.deepEqual(metadata.output, { name: 'dense', activation: 'softmax', classes: 3 });
  t.is(metadata.resize, 'fill');
  t.is(metadata.preprocessing.id, PREPROCESSING.id);
  t.is(metadata.preprocessing.formula, 'x / 127.5 - 1');
  t.is(metadata.feature_set, FIXTURE_FEATURE_SET);
  t.is(metadata.backbone.source, fixture.modelJson);
  t.is(metadata.backbone.weights_sha256, (await readWeightFile(fixture.modelJson)).sha256);
  t.is(metadata.backbone.alpha, 0.35);
  t.is(metadata.sweep_id, fixture.sweepId);
  t.is(metadata.run_key, fixture.plainRun.runKey);
  t.deepEqual(metadata.params, fixture.plainRun.params);
  t.is(metadata.seed, 1);
  t.deepEqual(metadata.metrics, { val_accuracy: 0.9, val_loss: 0.6, test_accuracy: 0.7, test_loss: 0.7, macro_f1: 0.65 });
  t.deepEqual(metadata.head, { layers: [{ name: 'dense', units: 3, activation: 'softmax' }], hidden_units: 0, dropout: 0.2 });
  t.false(Number.isNaN(Date.parse(metadata.created_at)));
  t.regex(metadata.pipeline_version, /^\d+\.\d+\.\d+/);
});

test.serial('unwritable output path: one-line UserError, nothing left behind', async (t) => {
  const dir = tempDir(t);
  const blocker = join(dir, 'a-file');
  writeFileSync(blocker, 'not a folder');
  const error = await t.throwsAsync(exportModel({ db: fixture.db, run: 'best', out: join(blocker, 'model'), log: () => {} }), {
    instanceOf: UserError,
  });
  t.regex(error!.message, /cannot write the export to/);
  t.false(error!.message.includes('\n'));
  t.deepEqual(readdirSync(dir), ['a-file']);

  // The target is itself a file.
  await t.throwsAsync(exportModel({ db: fixture.db, run: 'best', out: blocker, log: () => {} }), { instanceOf: UserError });
  t.is(readFileSync(blocker, 'utf8'), 'not a folder');
});

test.serial('an earlier export is replaced; a folder with other files is refused untouched', async (t) => {
  const dir = tempDir(t);
  const out = join(dir, 'model');
  await exportModel({ db: fixture.db, run: fixture.hiddenRun.runKey, out, log: () => {} });
  await exportModel({ db: fixture.db, run: 'best', out, log: () => {} });
  t.is(JSON.parse(readFileSync(join(out, 'metadata.json'), 'utf8')).run_key, fixture.plainRun.runKey);
  t.deepEqual(readdirSync(dir), ['model']); // no temp or backup folders left

  const other = join(dir, 'photos');
  await mkdir(other);
  writeFileSync(join(other, 'holiday.jpg'), 'x');
  await t.throwsAsync(exportModel({ db: fixture.db, run: 'best', out: other, log: () => {} }), {
    instanceOf: UserError,
    message: /holds other files/,
  });
  t.deepEqual(readdirSync(other), ['holiday.jpg']);
});

test.serial('unknown run key and changed backbone weights are UserErrors', async (t) => {
  const dir = tempDir(t);
  await t.throwsAsync(exportModel({ db: fixture.db, run: 'no-such-run', out: join(dir, 'a'), log: () => {} }), {
    instanceOf: UserError,
    message: /no such run/,
  });
  // Same architecture, different numbers: the head no longer fits the features.
  const { modelJson: other } = await writeRandomModel(join(dir, 'other-backbone'), { alpha: 0.35, seed: 99 });
  await t.throwsAsync(exportModel({ db: fixture.db, run: 'best', out: join(dir, 'b'), weights: other, log: () => {} }), {
    instanceOf: UserError,
    message: /weights changed since extraction/,
  });
  t.false(existsSync(join(dir, 'a')) || existsSync(join(dir, 'b')));
});

test('headFromArrays orders dense, dense_1 and checks the chain of shapes', (t) => {
  const keras = headFromArrays(randomHead(1280, 3, 16, 1).reverse(), 1280, 0.2);
  t.deepEqual(keras.layers.map((l) => [l.name, l.inputs, l.units]), [['dense', 1280, 16], ['dense_1', 16, 3]]);
  t.is(keras.classes, 3);
  const legacy = randomHead(1280, 3, 16, 1).map((a) => ({ ...a, name: a.name.replace('dense/', 'hidden/') }));
  t.throws(() => headFromArrays(legacy, 1280, 0), { instanceOf: UserError, message: /does not know/ });
  t.throws(() => headFromArrays(randomHead(1024, 3, 0, 1), 1280, 0), { instanceOf: UserError, message: /expected \[1280, units\]/ });
  t.throws(() => headFromArrays([...randomHead(1280, 3, 0, 1), { name: 'conv/kernel', shape: [1], values: new Float32Array(1) }], 1280, 0), {
    instanceOf: UserError,
    message: /does not know/,
  });
  t.throws(() => headFromArrays(randomHead(1280, 3, 0, 1).slice(0, 1), 1280, 0), { instanceOf: UserError });
});

serialTestWithShared('real alpha 1.0 weights at 224x224: LayersModel features = fused engine features on TrashNet (1e-4)', async (t) => {
  const size = { height: 224, width: 224 };
  const files = [join(TRASHNET_DIR, 'glass', 'glass1.jpg'), join(TRASHNET_DIR, 'cardboard', 'cardboard1.jpg')];
  const weights = await backboneWeights(await readWeightFile(SHARED_MODEL_100));
  t.is(weights.arch.alpha, 1);
  const pixels = await pixelBatch(files, size);
  const reference = await fusedFeatures(SHARED_MODEL_100, pixels, files.length, size);
  const model = buildLayersModel({ arch: weights.arch, layers: weights.layers, size });
  try {
    const features = await runModel(model, pixels, files.length, size);
    t.is(features.length, files.length * 1280);
    const diff = maxDiff(features, reference);
    t.log(`max |LayersModel - fused| over ${features.length} features = ${diff.toExponential(2)}`);
    t.true(diff < 1e-4);
    t.true(maxDiff(features.subarray(0, 1280), features.subarray(1280)) > 0.1);
  } finally {
    model.dispose();
  }
});
