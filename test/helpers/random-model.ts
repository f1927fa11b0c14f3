/**
 * Seeded random MobileNetV2 weights written as a TF.js layers model folder (model.json with
 * a weightsManifest + one weights.bin). The layer names and shapes come from
 * backbone/mobilenetv2.ts, never from a copy of the architecture here.
 *
 * Layouts:
 * - 'folded': `<layer>/kernel` (or `/depthwise_kernel`) + `<layer>/bias`, like ../shared's alpha 1.0 model;
 * - 'keras':  the kernel without bias + `<bnName>/gamma|beta|moving_mean|moving_variance`,
 *             like the Keras / Teachable Machine files.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BN_EPSILON, type ConvLayer, convLayers, kernelShape, mobilenetV2 } from '../../backbone/mobilenetv2.js';

export type Layout = 'folded' | 'keras';

export interface NamedArray {
  readonly name: string;
  readonly shape: number[];
  readonly values: Float32Array;
}

/** mulberry32: a small, fast, seeded PRNG; same seed, same sequence, on every machine. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const kernelName = (layer: ConvLayer) => `${layer.name}/${layer.kind === 'depthwise' ? 'depthwise_kernel' : 'kernel'}`;
const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

export interface RandomWeightsOptions {
  readonly alpha?: number;
  readonly layout?: Layout;
  readonly seed?: number;
  /** Multiplies the He-uniform kernel range. 1 keeps pooled features spread over ~0..6 at alpha 0.35; 0.6 collapses them to ~0. */
  readonly scale?: number;
}

/**
 * The weights as named arrays in manifest order. Kernels are uniform in
 * +-scale*sqrt(6/fanIn) (He), biases and BN shifts small, BN variances in [0.5, 1.5].
 */
export function randomWeights(options: RandomWeightsOptions = {}): NamedArray[] {
  const { alpha = 0.35, layout = 'folded', seed = 1, scale = 1 } = options;
  const random = rng(seed);
  const uniform = (n: number, lo: number, hi: number) => Float32Array.from({ length: n }, () => lo + (hi - lo) * random());
  const arrays: NamedArray[] = [];
  for (const layer of convLayers(mobilenetV2(alpha))) {
    const shape = kernelShape(layer);
    const fanIn = layer.kind === 'depthwise' ? layer.kernel * layer.kernel : layer.kernel * layer.kernel * layer.inChannels;
    const range = scale * Math.sqrt(6 / fanIn);
    arrays.push({ name: kernelName(layer), shape, values: uniform(count(shape), -range, range) });
    const c = layer.outChannels;
    if (layout === 'folded') {
      arrays.push({ name: `${layer.name}/bias`, shape: [c], values: uniform(c, -0.05, 0.05) });
    } else {
      arrays.push({ name: `${layer.bnName}/gamma`, shape: [c], values: uniform(c, 0.6, 1.2) });
      arrays.push({ name: `${layer.bnName}/beta`, shape: [c], values: uniform(c, -0.05, 0.05) });
      arrays.push({ name: `${layer.bnName}/moving_mean`, shape: [c], values: uniform(c, -0.1, 0.1) });
      arrays.push({ name: `${layer.bnName}/moving_variance`, shape: [c], values: uniform(c, 0.5, 1.5) });
    }
  }
  return arrays;
}

/**
 * Folds Keras-layout arrays into the 'folded' layout, computed independently of
 * backbone/weights.ts: y = gamma (conv(x) - mean) / sqrt(var + eps) + beta.
 */
export function foldKerasArrays(arrays: readonly NamedArray[], alpha: number): NamedArray[] {
  const byName = new Map(arrays.map((a) => [a.name, a]));
  const folded: NamedArray[] = [];
  for (const layer of convLayers(mobilenetV2(alpha))) {
    const kernel = byName.get(kernelName(layer))!;
    const get = (suffix: string) => byName.get(`${layer.bnName}/${suffix}`)!.values;
    const [gamma, beta, mean, variance] = ['gamma', 'beta', 'moving_mean', 'moving_variance'].map(get);
    const c = layer.outChannels;
    const values = new Float32Array(kernel.values.length);
    // Explicit HWIO / HWC1 indexing: the output (or depthwise) channel is the last axis.
    const [kh, kw, cin] = kernel.shape;
    for (let y = 0; y < kh; y++) {
      for (let x = 0; x < kw; x++) {
        for (let i = 0; i < cin; i++) {
          for (let o = 0; o < kernel.shape[3]; o++) {
            const index = ((y * kw + x) * cin + i) * kernel.shape[3] + o;
            const channel = layer.kind === 'depthwise' ? i : o;
            values[index] = kernel.values[index] * (gamma[channel] / Math.sqrt(variance[channel] + BN_EPSILON));
          }
        }
      }
    }
    const bias = Float32Array.from({ length: c }, (_, k) => beta[k] - (mean[k] * gamma[k]) / Math.sqrt(variance[k] + BN_EPSILON));
    folded.push({ name: kernel.name, shape: kernel.shape, values }, { name: `${layer.name}/bias`, shape: [c], values: bias });
  }
  return folded;
}

export interface WriteModelOptions {
  /** Weight names get this prefix in the manifest, as nested Keras models do ("mobilenetv2_1.00_224/"). */
  readonly prefix?: string;
  /** Written as modelTopology; our loader ignores it. */
  readonly modelTopology?: unknown;
}

/** Writes `dir/model.json` + `dir/weights.bin`; returns the model.json path. */
export async function writeModelFolder(dir: string, arrays: readonly NamedArray[], options: WriteModelOptions = {}): Promise<string> {
  await mkdir(dir, { recursive: true });
  const data = Buffer.concat(arrays.map((a) => Buffer.from(a.values.buffer, a.values.byteOffset, a.values.byteLength)));
  await writeFile(join(dir, 'weights.bin'), data);
  const modelJson = {
    format: 'layers-model',
    generatedBy: 'pipeline test/helpers/random-model.ts',
    modelTopology: options.modelTopology ?? null,
    weightsManifest: [
      {
        paths: ['weights.bin'],
        weights: arrays.map((a) => ({ name: `${options.prefix ?? ''}${a.name}`, shape: a.shape, dtype: 'float32' })),
      },
    ],
  };
  const path = join(dir, 'model.json');
  await writeFile(path, JSON.stringify(modelJson));
  return path;
}

/** Random weights in one call: returns the model.json path and the arrays written. */
export async function writeRandomModel(dir: string, options: RandomWeightsOptions = {}): Promise<{ modelJson: string; arrays: NamedArray[] }> {
  const arrays = randomWeights(options);
  return { modelJson: await writeModelFolder(dir, arrays), arrays };
}
