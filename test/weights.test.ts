import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import test from 'ava';
import { convLayers, mobilenetV2 } from '../backbone/mobilenetv2.js';
import { createTfjsBackbone } from '../backbone/tfjs-backbone.js';
import { backboneWeights, readWeightFile } from '../backbone/weights.js';
import { activateBackend } from '../backbone/backends.js';
import { UserError } from '../core/errors.js';
import { type NamedArray, foldKerasArrays, randomWeights, rng, writeModelFolder } from './helpers/random-model.js';
import { SHARED_MODEL_035, SHARED_MODEL_100, serialTestWithShared, tempDir } from './helpers/shared.js';

test.before(async () => {
  tf.enableProdMode();
  await activateBackend(tf, 'wasm');
});

/** Seeded uint8 RGB pixels, NHWC. */
function randomPixels(batch: number, height: number, width: number, seed: number): tf.Tensor4D {
  const random = rng(seed);
  const values = Int32Array.from({ length: batch * height * width * 3 }, () => Math.floor(random() * 256));
  return tf.tensor4d(values, [batch, height, width, 3], 'int32');
}

async function loadFeatures(modelJson: string, pixels: tf.Tensor4D): Promise<Float32Array> {
  const weights = await backboneWeights(await readWeightFile(modelJson));
  const backbone = createTfjsBackbone(tf, weights.arch, weights.layers);
  try {
    const out = backbone.features(pixels);
    const values = (await out.data()) as Float32Array;
    out.dispose();
    return values;
  } finally {
    backbone.dispose();
  }
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
};

test('a random alpha-0.35 model loads in the folded layout', async (t) => {
  const dir = tempDir(t);
  const arrays = randomWeights({ alpha: 0.35, layout: 'folded', seed: 3 });
  const file = await writeModelFolder(join(dir, 'm'), arrays);
  const weights = await backboneWeights(await readWeightFile(file));
  t.is(weights.arch.alpha, 0.35);
  t.is(weights.arch.featureDim, 1280);
  t.false(weights.foldedAtLoad);
  t.is(weights.layers.size, 52);
  t.regex(weights.sha256, /^[0-9a-f]{64}$/);
  // Folded weights are taken as they are.
  const byName = new Map(arrays.map((a) => [a.name, a.values]));
  for (const layer of convLayers(weights.arch)) {
    const kernel = byName.get(`${layer.name}/${layer.kind === 'depthwise' ? 'depthwise_kernel' : 'kernel'}`)!;
    t.deepEqual(weights.layers.get(layer.name)!.kernel, kernel, layer.name);
    t.deepEqual(weights.layers.get(layer.name)!.bias, byName.get(`${layer.name}/bias`), layer.name);
  }
});

test('a random alpha-0.35 model loads in the Keras layout (BatchNorm folded at load), also with nested-model name prefixes', async (t) => {
  const dir = tempDir(t);
  const arrays = randomWeights({ alpha: 0.35, layout: 'keras', seed: 4 });
  const plain = await backboneWeights(await readWeightFile(await writeModelFolder(join(dir, 'plain'), arrays)));
  t.is(plain.arch.alpha, 0.35);
  t.true(plain.foldedAtLoad);
  t.is(plain.layers.size, 52);
  const nested = await backboneWeights(
    await readWeightFile(await writeModelFolder(join(dir, 'nested'), arrays, { prefix: 'model1/' })),
  );
  t.true(nested.foldedAtLoad);
  for (const layer of convLayers(plain.arch)) t.deepEqual(nested.layers.get(layer.name), plain.layers.get(layer.name), layer.name);
});

test('alpha is recognised from the shapes: a random alpha-1.0 file is alpha 1.0', async (t) => {
  const dir = tempDir(t);
  const file = await writeModelFolder(join(dir, 'm'), randomWeights({ alpha: 1.0, layout: 'folded', seed: 5 }));
  const weights = await backboneWeights(await readWeightFile(file));
  t.is(weights.arch.alpha, 1.0);
  t.is(weights.layers.get('Conv1')!.bias.length, 32);
});

test('BatchNorm folding: Keras-layout weights folded at load give the features of the same numbers pre-folded by the test', async (t) => {
  const dir = tempDir(t);
  const keras = randomWeights({ alpha: 0.35, layout: 'keras', seed: 6 });
  const kerasFile = await writeModelFolder(join(dir, 'keras'), keras);
  const foldedFile = await writeModelFolder(join(dir, 'folded'), foldKerasArrays(keras, 0.35));
  const pixels = randomPixels(2, 64, 64, 7);
  const fromKeras = await loadFeatures(kerasFile, pixels);
  const fromFolded = await loadFeatures(foldedFile, pixels);
  pixels.dispose();
  t.is(fromKeras.length, 2 * 1280);
  // The test folds in float64 with one rounding; the loader rounds the per-channel scale to
  // float32 first. That ulp-level difference grows through 52 layers to ~2e-6 of the
  // features' magnitude, so the bound is 1e-5 relative to the largest feature.
  const magnitude = Math.max(1, ...fromFolded.map(Math.abs));
  const diff = maxAbsDiff(fromKeras, fromFolded);
  t.true(diff <= 1e-5 * magnitude, `max abs diff ${diff}, largest feature ${magnitude}`);
  // Not a vacuous comparison: the features vary and the two images differ.
  const spread = Math.max(...fromKeras) - Math.min(...fromKeras);
  t.true(spread > 0.05, `feature spread ${spread}`);
  t.true(maxAbsDiff(fromKeras.subarray(0, 1280), fromKeras.subarray(1280)) > 1e-3);
  // And not BN-agnostic: ignoring BatchNorm (kernel as stored, bias 0) changes the result.
  const stored = new Map(keras.map((a) => [a.name, a]));
  const unfolded = convLayers(mobilenetV2(0.35)).flatMap((layer): NamedArray[] => [
    stored.get(`${layer.name}/${layer.kind === 'depthwise' ? 'depthwise_kernel' : 'kernel'}`)!,
    { name: `${layer.name}/bias`, shape: [layer.outChannels], values: new Float32Array(layer.outChannels) },
  ]);
  const unfoldedFile = await writeModelFolder(join(dir, 'unfolded'), unfolded);
  const pixels2 = randomPixels(2, 64, 64, 7);
  const ignoringBn = await loadFeatures(unfoldedFile, pixels2);
  pixels2.dispose();
  t.true(maxAbsDiff(fromKeras, ignoringBn) > 1e-3);
});

test('BatchNorm folding of one layer equals conv followed by explicit inference BatchNorm', async (t) => {
  const dir = tempDir(t);
  const keras = randomWeights({ alpha: 0.35, layout: 'keras', seed: 8 });
  const weights = await backboneWeights(await readWeightFile(await writeModelFolder(join(dir, 'k'), keras)));
  const get = (name: string) => keras.find((a) => a.name === name)!;
  for (const layer of [weights.arch.stem, weights.arch.blocks[1].depthwise]) {
    const input = tf.randomUniform([1, 9, 9, layer.inChannels], -1, 1, 'float32', 11) as tf.Tensor4D;
    const kernelArray = get(`${layer.name}/${layer.kind === 'depthwise' ? 'depthwise_kernel' : 'kernel'}`);
    const kernel = tf.tensor4d(kernelArray.values, kernelArray.shape as [number, number, number, number]);
    const conv =
      layer.kind === 'depthwise' ? tf.depthwiseConv2d(input, kernel, layer.stride, 'same') : tf.conv2d(input, kernel, layer.stride, 'same');
    const bn = (s: string) => tf.tensor1d(get(`${layer.bnName}/${s}`).values);
    const reference = tf.batchNorm(conv, bn('moving_mean'), bn('moving_variance'), bn('beta'), bn('gamma'), 1e-3);
    const { kernel: k, bias } = weights.layers.get(layer.name)!;
    const foldedKernel = tf.tensor4d(k, kernelArray.shape as [number, number, number, number]);
    const folded =
      layer.kind === 'depthwise'
        ? tf.fused.depthwiseConv2d({ x: input, filter: foldedKernel, strides: layer.stride, pad: 'same', bias: tf.tensor1d(bias) })
        : tf.fused.conv2d({ x: input, filter: foldedKernel, strides: layer.stride, pad: 'same', bias: tf.tensor1d(bias) });
    const diff = maxAbsDiff(await reference.data(), await folded.data());
    t.true(diff <= 1e-5, `${layer.name}: max abs diff ${diff}`);
    tf.disposeVariables();
    tf.dispose([input, kernel, conv, reference, foldedKernel, folded]);
  }
});

test('a kernel with a wrong shape: UserError naming the file', async (t) => {
  const dir = tempDir(t);
  const arrays = randomWeights({ alpha: 0.35, layout: 'folded', seed: 9 }).map((a) =>
    a.name === 'block_5_project/kernel' ? { ...a, shape: [1, 1, a.shape[3], a.shape[2]] } : a,
  );
  const file = await writeModelFolder(join(dir, 'wrongshape'), arrays);
  const error = await t.throwsAsync(async () => backboneWeights(await readWeightFile(file)), { instanceOf: UserError });
  t.true(error!.message.includes(file), error!.message);
  t.false(error!.message.includes('\n'));
});

test('a bias with a wrong shape: UserError naming the file and the weight', async (t) => {
  const dir = tempDir(t);
  const arrays = randomWeights({ alpha: 0.35, layout: 'folded', seed: 9 }).map((a) =>
    a.name === 'Conv_1/bias' ? { ...a, shape: [1279], values: a.values.subarray(0, 1279) } : a,
  );
  const file = await writeModelFolder(join(dir, 'wrongbias'), arrays);
  const error = await t.throwsAsync(async () => backboneWeights(await readWeightFile(file)), { instanceOf: UserError });
  t.true(error!.message.includes(file), error!.message);
  t.true(error!.message.includes('Conv_1/bias'), error!.message);
});

test('a missing layer: UserError naming the file', async (t) => {
  const dir = tempDir(t);
  const arrays = randomWeights({ alpha: 0.35, layout: 'folded', seed: 10 }).filter((a) => !a.name.startsWith('block_7_expand/'));
  const file = await writeModelFolder(join(dir, 'missing'), arrays);
  const error = await t.throwsAsync(async () => backboneWeights(await readWeightFile(file)), { instanceOf: UserError });
  t.true(error!.message.includes(file), error!.message);
});

test('a missing BatchNorm parameter in the Keras layout: UserError naming the file and the parameter', async (t) => {
  const dir = tempDir(t);
  const arrays = randomWeights({ alpha: 0.35, layout: 'keras', seed: 12 }).filter((a) => a.name !== 'block_3_project_BN/moving_variance');
  const file = await writeModelFolder(join(dir, 'nobn'), arrays);
  const error = await t.throwsAsync(async () => backboneWeights(await readWeightFile(file)), { instanceOf: UserError });
  t.true(error!.message.includes(file), error!.message);
  t.true(error!.message.includes('block_3_project_BN/moving_variance'), error!.message);
});

test('a weights.bin shorter than its manifest: UserError naming the file', async (t) => {
  const dir = tempDir(t);
  const file = await writeModelFolder(join(dir, 'short'), randomWeights({ alpha: 0.35, layout: 'folded', seed: 13 }));
  const bin = join(dir, 'short', 'weights.bin');
  const bytes = await readFile(bin);
  await writeFile(bin, bytes.subarray(0, bytes.length - 4096));
  const error = await t.throwsAsync(async () => backboneWeights(await readWeightFile(file)), { instanceOf: UserError });
  t.true(error!.message.includes(file), error!.message);
});

test('a missing shard and a missing model.json: UserError naming the path', async (t) => {
  const dir = tempDir(t);
  const file = await writeModelFolder(join(dir, 'noshard'), randomWeights({ alpha: 0.35, seed: 14 }));
  const json = JSON.parse(await readFile(file, 'utf8'));
  json.weightsManifest[0].paths = ['gone.bin'];
  await writeFile(file, JSON.stringify(json));
  const shard = await t.throwsAsync(() => readWeightFile(file), { instanceOf: UserError });
  t.true(shard!.message.includes(join(dir, 'noshard', 'gone.bin')), shard!.message);
  const missing = await t.throwsAsync(() => readWeightFile(join(dir, 'nowhere', 'model.json')), { instanceOf: UserError });
  t.true(missing!.message.includes(join(dir, 'nowhere', 'model.json')), missing!.message);
});

test('a model.json that is HTML: a one-line UserError saying so', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'model.json');
  await writeFile(file, '<!DOCTYPE html>\n<html>\n<head><title>Sign in</title></head>\n<body>Please log in</body>\n</html>\n');
  const error = await t.throwsAsync(() => readWeightFile(file), { instanceOf: UserError });
  t.false(error!.message.includes('\n'), error!.message);
  t.true(error!.message.includes(file), error!.message);
  t.regex(error!.message, /HTML/);
  // Valid JSON without a weight manifest is refused too.
  await writeFile(file, JSON.stringify({ modelTopology: {} }));
  const noManifest = await t.throwsAsync(() => readWeightFile(file), { instanceOf: UserError });
  t.regex(noManifest!.message, /weightsManifest/);
});

/**
 * Our fused, code-defined network against tfjs' own Keras layers execution of the same
 * file (topology included), on the real ImageNet weights.
 */
async function parity(t: import('ava').ExecutionContext, modelJson: string, alpha: number): Promise<void> {
  const json = JSON.parse(await readFile(modelJson, 'utf8'));
  const file = await readWeightFile(modelJson);
  const reference = await tf.loadLayersModel(
    tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: file.specs, weightData: file.data }),
  );
  const weights = await backboneWeights(file);
  t.is(weights.arch.alpha, alpha);
  const backbone = createTfjsBackbone(tf, weights.arch, weights.layers);
  const pixels = randomPixels(1, 224, 224, 42);
  try {
    const ours = backbone.features(pixels);
    const theirs = tf.tidy(() => reference.predict(tf.sub(tf.div(tf.cast(pixels, 'float32'), 127.5), 1)) as tf.Tensor);
    t.deepEqual(theirs.shape, [1, 1280]);
    const a = (await ours.data()) as Float32Array;
    const b = (await theirs.data()) as Float32Array;
    const diff = maxAbsDiff(a, b);
    t.log(`alpha ${alpha}: max abs diff ${diff.toExponential(2)}, max |feature| ${Math.max(...b).toFixed(3)}`);
    t.true(diff <= 1e-4, `max abs diff ${diff}`);
    t.true(Math.max(...b) > 0.1, 'reference features are not all ~0');
    tf.dispose([ours, theirs]);
  } finally {
    pixels.dispose();
    backbone.dispose();
    reference.dispose();
  }
}

serialTestWithShared('parity with tf.loadLayersModel: real alpha 1.0 (folded) model at 224x224 on wasm', (t) =>
  parity(t, SHARED_MODEL_100, 1.0),
);
serialTestWithShared('parity with tf.loadLayersModel: real alpha 0.35 (Keras layout) model at 224x224 on wasm', (t) =>
  parity(t, SHARED_MODEL_035, 0.35),
);
