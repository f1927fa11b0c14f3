/**
 * The onnx engine must compute the same features as the tfjs one: on a tiny random model
 * everywhere, and on both real ImageNet backbones with real photos when ../shared exists.
 */
import { readFile } from 'node:fs/promises';
import test, { type ExecutionContext } from 'ava';
import { startEngine } from '../backbone/engine.js';
import { convLayers, kernelShape, mobilenetV2 } from '../backbone/mobilenetv2.js';
import type { InputSize } from '../backbone/preprocessing.js';
import { type BackboneWeights, type ConvWeights, backboneWeights, readWeightFile } from '../backbone/weights.js';
import { scanDataset } from '../data/dataset.js';
import { decodeImage } from '../data/images.js';
import type { Backend } from '../backbone/backends.js';
import { SHARED_MODEL_035, SHARED_MODEL_100, TRASHNET_DIR, testWithShared } from './helpers/shared.js';

const SIZES: InputSize[] = [
  { height: 224, width: 224 },
  { height: 384, width: 512 },
];

/** Features of `count` images from one engine; a single wasm worker is enough for a few images. */
async function features(backend: Backend, weights: BackboneWeights, size: InputSize, pixels: Uint8Array, count: number) {
  const engine = await startEngine({ weights, backend: { backend, reason: 'test', workers: 1 }, size, batchSize: count });
  try {
    return await engine.run(pixels, count);
  } finally {
    await engine.close();
  }
}

/** The bar: cosine >= 0.9999 and max abs diff <= 1e-3 over the whole batch. */
async function assertParity(t: ExecutionContext, weights: BackboneWeights, size: InputSize, pixels: Uint8Array, count: number) {
  const onnx = await features('onnx', weights, size, pixels, count);
  const wasm = await features('wasm', weights, size, pixels, count);
  t.is(onnx.length, count * weights.arch.featureDim);
  t.is(wasm.length, onnx.length);
  let dot = 0;
  let onnxNorm = 0;
  let wasmNorm = 0;
  let maxDiff = 0;
  for (let i = 0; i < onnx.length; i++) {
    dot += onnx[i] * wasm[i];
    onnxNorm += onnx[i] ** 2;
    wasmNorm += wasm[i] ** 2;
    maxDiff = Math.max(maxDiff, Math.abs(onnx[i] - wasm[i]));
  }
  const cosine = dot / Math.sqrt(onnxNorm * wasmNorm);
  t.log(`${size.height}x${size.width}: 1 - cosine ${(1 - cosine).toExponential(1)}, max abs diff ${maxDiff.toExponential(1)}`);
  t.true(onnxNorm > 0, 'features are not all zero');
  t.true(cosine >= 0.9999, `cosine ${cosine}`);
  t.true(maxDiff <= 1e-3, `max abs diff ${maxDiff}`);
}

/** Deterministic uniform numbers in [-1, 1) (mulberry32). */
function uniform(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let z = Math.imul(state ^ (state >>> 15), 1 | state);
    z = (z + Math.imul(z ^ (z >>> 7), 61 | z)) ^ z;
    return (((z ^ (z >>> 14)) >>> 0) / 2 ** 32) * 2 - 1;
  };
}

/** He-scaled random weights, so activations neither vanish nor blow up through 52 layers. */
function randomWeights(alpha: number, seed: number): BackboneWeights {
  const arch = mobilenetV2(alpha);
  const next = uniform(seed);
  const layers = new Map<string, ConvWeights>();
  for (const layer of convLayers(arch)) {
    const [kh, kw, inChannels, outChannels] = kernelShape(layer);
    const fanIn = layer.kind === 'depthwise' ? kh * kw : kh * kw * inChannels;
    const bound = Math.sqrt(6 / fanIn);
    const kernel = Float32Array.from({ length: kh * kw * inChannels * outChannels }, () => next() * bound);
    const bias = Float32Array.from({ length: layer.outChannels }, () => next() * 0.1);
    layers.set(layer.name, { kernel, bias });
  }
  return { arch, layers, sha256: `random-${seed}`, source: 'test', foldedAtLoad: false };
}

test('tiny random model: onnx matches wasm at an odd input size (asymmetric SAME padding)', async (t) => {
  const size = { height: 45, width: 61 };
  const count = 3;
  const next = uniform(7);
  const pixels = Uint8Array.from({ length: count * size.height * size.width * 3 }, () => Math.floor((next() + 1) * 127.5));
  await assertParity(t, randomWeights(0.35, 1), size, pixels, count);
});

test('onnx engine: run after close fails instead of touching released memory', async (t) => {
  const size = { height: 32, width: 32 };
  const engine = await startEngine({ weights: randomWeights(0.35, 2), backend: { backend: 'onnx', reason: 'test', workers: 1 }, size, batchSize: 1 });
  await engine.close();
  await t.throwsAsync(engine.run(new Uint8Array(size.height * size.width * 3), 1));
});

/** A few real photos, decoded as the extract stage decodes them. */
async function photos(size: InputSize, count: number): Promise<Uint8Array> {
  const { items } = await scanDataset(TRASHNET_DIR);
  const imageBytes = size.height * size.width * 3;
  const pixels = new Uint8Array(count * imageBytes);
  for (let i = 0; i < count; i++) {
    const item = items[Math.floor((i * items.length) / count)];
    pixels.set(await decodeImage(await readFile(item.absolutePath), size, 'fill'), i * imageBytes);
  }
  return pixels;
}

for (const [alpha, model] of [
  ['1.00', SHARED_MODEL_100],
  ['0.35', SHARED_MODEL_035],
]) {
  testWithShared(`real MobileNetV2 ${alpha}: onnx matches wasm on TrashNet photos at 224x224 and 384x512`, async (t) => {
    const weights = await backboneWeights(await readWeightFile(model));
    for (const size of SIZES) await assertParity(t, weights, size, await photos(size, 4), 4);
  });
}
