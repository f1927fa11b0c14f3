/**
 * Weights as data: reads a TF.js layers model (`model.json` + binary shards) from a path
 * or URL, and turns its numbers into the per-layer (kernel, bias) pairs that the
 * architecture in mobilenetv2.ts asks for, folding BatchNorm where the file keeps it.
 * The file's own topology is never executed: it only has to agree with our definition.
 */
import { type Log, quietLog } from '../core/log.js';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { tf } from '../core/tfjs.js';
import envPaths from 'env-paths';
import { download } from '../data/download.js';
import { sha256 } from '../data/hash.js';
import { isHttpUrl } from '../core/urls.js';
import { UserError, messageOf } from '../core/errors.js';
import { writeFileAtomically } from '../core/files.js';
import { type ModelJson, insideFolder, parseModelJson, readModelFiles } from './model-files.js';
import {
  type Architecture,
  type ConvLayer,
  BN_EPSILON,
  PUBLISHED_ALPHAS,
  convLayers,
  kernelShape,
  mobilenetV2,
} from './mobilenetv2.js';

/** A model file as read from disk or the network, before it is matched to the architecture. */
export interface WeightFile {
  /** The path or URL the user gave. */
  readonly source: string;
  readonly modelJson: ModelJson;
  readonly specs: tf.io.WeightsManifestEntry[];
  /** All shards concatenated in manifest order. */
  readonly data: ArrayBuffer;
  /** sha256 over model.json's weight manifest and every weight byte: the weights' identity. */
  readonly sha256: string;
}

/** One convolution's parameters after BatchNorm folding. */
export interface ConvWeights {
  readonly kernel: Float32Array;
  readonly bias: Float32Array;
}

/** The architecture and each of its layers' parameters by layer name: all an engine needs. */
export interface NetworkWeights {
  readonly arch: Architecture;
  readonly layers: ReadonlyMap<string, ConvWeights>;
}

/** Network weights with where they came from. */
export interface BackboneWeights extends NetworkWeights {
  readonly sha256: string;
  readonly source: string;
  /** Whether the file kept BatchNorm layers (Keras layout) that were folded at load time. */
  readonly foldedAtLoad: boolean;
}

/** Where downloaded models are kept; PIPELINE_CACHE_DIR overrides the per-user default. */
export function modelCacheDir(): string {
  return process.env.PIPELINE_CACHE_DIR ?? join(envPaths('pipeline', { suffix: '' }).cache, 'models');
}

export async function readWeightFile(source: string, log: Log = quietLog): Promise<WeightFile> {
  const modelPath = isHttpUrl(source) ? await downloadModel(source, log) : resolve(source);
  const { modelJson, specs, bytes, data } = await readModelFiles(modelPath, source, '--model / model.weights');
  const identity = sha256(Buffer.concat([Buffer.from(JSON.stringify(specs)), bytes]));
  return { source, modelJson, specs, data, sha256: identity };
}

interface DownloadRecord {
  url: string;
  files: Record<string, string>;
}

/**
 * Downloads model.json and its shards once into the model cache. A `download.json`
 * written last records each file's sha256; on reuse every file is hashed again, and a
 * mismatch (a truncated or edited file) triggers a fresh download.
 */
async function downloadModel(url: string, log: Log): Promise<string> {
  const folder = join(modelCacheDir(), sha256(url).slice(0, 16));
  const recordPath = join(folder, 'download.json');
  if (existsSync(recordPath)) {
    const record = JSON.parse(await readFile(recordPath, 'utf8')) as DownloadRecord;
    if (await cachedFilesIntact(folder, record)) return join(folder, 'model.json');
    log(`model cache at ${folder} failed its hash check; downloading again`);
  }
  await mkdir(folder, { recursive: true });
  const files: Record<string, string> = {};
  files['model.json'] = await download(url, join(folder, 'model.json'), { what: 'model.json' });
  const modelJson = parseModelJson(await readFile(join(folder, 'model.json'), 'utf8'), url);
  for (const shard of modelJson.weightsManifest.flatMap((group) => group.paths)) {
    files[shard] = await download(new URL(shard, url).href, insideFolder(folder, shard, url), { what: `weight shard ${shard}` });
  }
  await writeFileAtomically(recordPath, JSON.stringify({ url, files } satisfies DownloadRecord, null, 2), 'the model cache');
  return join(folder, 'model.json');
}

async function cachedFilesIntact(folder: string, record: DownloadRecord): Promise<boolean> {
  for (const [name, expected] of Object.entries(record.files)) {
    try {
      if (sha256(await readFile(join(folder, name))) !== expected) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/** Decodes the file's tensors into plain arrays, keyed by weight name without any model prefix. */
async function decodeArrays(file: WeightFile): Promise<Map<string, { shape: number[]; values: Float32Array }>> {
  await tf.ready();
  let tensors: tf.NamedTensorMap;
  try {
    tensors = tf.io.decodeWeights(file.data, file.specs);
  } catch (error) {
    throw new UserError(`cannot decode weights of ${file.source}: ${messageOf(error)}`);
  }
  const arrays = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const [name, tensor] of Object.entries(tensors)) {
    // Nested Keras models prefix weight names ("model1/Conv1/kernel"); the last two parts identify it.
    const key = name.split('/').slice(-2).join('/');
    arrays.set(key, { shape: tensor.shape, values: Float32Array.from(tensor.dataSync()) });
    tensor.dispose();
  }
  return arrays;
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((v, i) => v === b[i]);

/** The published width multiplier whose layer shapes the file matches, if any. */
function matchAlpha(arrays: Map<string, { shape: number[] }>): Architecture | undefined {
  for (const alpha of PUBLISHED_ALPHAS) {
    const arch = mobilenetV2(alpha);
    const fits = convLayers(arch).every((layer) => {
      const kernel = arrays.get(`${layer.name}/${layer.kind === 'depthwise' ? 'depthwise_kernel' : 'kernel'}`);
      return kernel !== undefined && sameShape(kernel.shape, kernelShape(layer));
    });
    if (fits) return arch;
  }
  return undefined;
}

export async function backboneWeights(file: WeightFile): Promise<BackboneWeights> {
  const arrays = await decodeArrays(file);
  const arch = matchAlpha(arrays);
  if (!arch) {
    const stem = arrays.get('Conv1/kernel');
    throw new UserError(
      `weights in ${file.source} don't match MobileNetV2 (alpha ${PUBLISHED_ALPHAS.join('/')}): ` +
        (stem ? `no alpha fits every layer (Conv1/kernel is [${stem.shape}])` : 'no Conv1/kernel weight'),
    );
  }
  const layers = new Map<string, ConvWeights>();
  let foldedAtLoad = false;
  for (const layer of convLayers(arch)) {
    const kernel = arrays.get(`${layer.name}/${layer.kind === 'depthwise' ? 'depthwise_kernel' : 'kernel'}`)!.values;
    const bias = arrays.get(`${layer.name}/bias`);
    if (bias) {
      requireShape(file, `${layer.name}/bias`, bias.shape, [layer.outChannels]);
      layers.set(layer.name, { kernel, bias: bias.values });
    } else {
      layers.set(layer.name, foldBatchNorm(file, layer, kernel, arrays));
      foldedAtLoad = true;
    }
  }
  return { arch, layers, sha256: file.sha256, source: file.source, foldedAtLoad };
}

function requireShape(file: WeightFile, name: string, actual: readonly number[], expected: readonly number[]) {
  if (!sameShape(actual, expected)) {
    throw new UserError(`weights in ${file.source} don't match MobileNetV2: ${name} is [${actual}], expected [${expected}]`);
  }
}

/**
 * Folds inference-mode BatchNorm into the preceding convolution:
 * y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta  ==  conv'(x) + b'
 * with the kernel scaled per output channel.
 */
function foldBatchNorm(
  file: WeightFile,
  layer: ConvLayer,
  kernel: Float32Array,
  arrays: Map<string, { shape: number[]; values: Float32Array }>,
): ConvWeights {
  const param = (suffix: string) => {
    const entry = arrays.get(`${layer.bnName}/${suffix}`);
    if (!entry) throw new UserError(`weights in ${file.source} don't match MobileNetV2: ${layer.name} has neither a bias nor ${layer.bnName}/${suffix}`);
    requireShape(file, `${layer.bnName}/${suffix}`, entry.shape, [layer.outChannels]);
    return entry.values;
  };
  const [gamma, beta, mean, variance] = ['gamma', 'beta', 'moving_mean', 'moving_variance'].map(param);
  const channels = layer.outChannels;
  const scale = new Float64Array(channels); // rounded to float32 once, in the product below
  const bias = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    scale[c] = gamma[c] / Math.sqrt(variance[c] + BN_EPSILON);
    bias[c] = beta[c] - mean[c] * scale[c];
  }
  // The output channel is the fastest-varying kernel axis in both HWIO and depthwise HWC1.
  const folded = new Float32Array(kernel.length);
  for (let i = 0; i < kernel.length; i++) folded[i] = kernel[i] * scale[i % channels];
  return { kernel: folded, bias };
}
