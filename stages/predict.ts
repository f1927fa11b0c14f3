/**
 * `pipeline predict`: classifies image files with a folder written by `pipeline export`.
 * Reads model.json + shards + metadata.json, decodes each file exactly as extraction did
 * (data/images.ts at the metadata's size and resize mode), runs the model in batches and
 * returns each file's top-k classes. A file that cannot be read or decoded gets an error
 * of its own; the others are still predicted.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { tf } from '../core/tfjs.js';
import { decodeImage } from '../data/images.js';
import { activateBackend } from '../backbone/backends.js';
import { readModelFiles } from '../backbone/model-files.js';
import { UserError, messageOf } from '../core/errors.js';
import type { ExportMetadata } from './export.js';

// Checked against export.ts' types at compile time, without loading export.ts (and the sweep) at run time.
const FORMAT: ExportMetadata['format'] = 'pipeline-classifier';
const FORMAT_VERSION: ExportMetadata['format_version'] = 1;

export interface LoadedModel {
  readonly dir: string;
  readonly model: tf.LayersModel;
  readonly metadata: ExportMetadata;
}

export interface ClassProbability {
  readonly label: string;
  readonly probability: number;
}

/** One file's outcome, in the order the files were given. */
export type FilePrediction =
  | { readonly file: string; readonly ok: true; readonly top: ClassProbability[] }
  | { readonly file: string; readonly ok: false; readonly error: string };

export interface PredictOptions {
  /** Classes listed per file, best first (default 3, at most the number of classes). */
  readonly top?: number;
  /** Images per model call (default 16). */
  readonly batchSize?: number;
  /** tfjs backend (default wasm). */
  readonly backend?: 'wasm' | 'cpu';
  readonly onProgress?: (done: number, total: number) => void;
}

export interface PredictResult {
  readonly modelDir: string;
  readonly metadata: ExportMetadata;
  readonly backend: string;
  readonly predictions: FilePrediction[];
}

/** Loads an export folder (or its model.json); UserError when anything is missing or not an export. */
export async function loadExportedModel(modelPath: string): Promise<LoadedModel> {
  let dir = resolve(modelPath);
  const info = await stat(dir).catch(() => undefined);
  if (!info) throw new UserError(`--model ${modelPath}: no such folder`);
  if (info.isFile()) {
    if (basename(dir) !== 'model.json') throw new UserError(`--model ${modelPath}: expected an export folder (from pipeline export)`);
    dir = resolve(dir, '..');
  }
  const readJson = async (name: string): Promise<unknown> => {
    let text: string;
    try {
      text = await readFile(join(dir, name), 'utf8');
    } catch {
      throw new UserError(`--model ${modelPath}: no ${name} (is it a folder written by pipeline export?)`);
    }
    try {
      return JSON.parse(text);
    } catch {
      throw new UserError(`--model ${modelPath}: ${name} is not valid JSON`);
    }
  };
  const metadata = checkMetadata(await readJson('metadata.json'), modelPath);
  const { modelJson, specs: weightSpecs, data: weightData } = await readModelFiles(join(dir, 'model.json'), `--model ${modelPath}`, '--model');
  if (!modelJson.modelTopology) throw new UserError(`--model ${modelPath}: model.json is not a TF.js layers model`);
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: modelJson.modelTopology as tf.io.ModelJSON['modelTopology'], weightSpecs, weightData }));
  } catch (error) {
    throw new UserError(`--model ${modelPath}: cannot load the model: ${messageOf(error).split('\n')[0]}`);
  }
  const [, height, width, channels] = model.inputs[0].shape;
  const outputs = model.outputs[0].shape[1];
  if (height !== metadata.input.height || width !== metadata.input.width || channels !== 3 || outputs !== metadata.labels.length) {
    model.dispose();
    throw new UserError(
      `--model ${modelPath}: model.json (input ${height}x${width}x${channels}, ${outputs} outputs) disagrees with metadata.json ` +
        `(${metadata.input.height}x${metadata.input.width}x3, ${metadata.labels.length} labels)`,
    );
  }
  return { dir, model, metadata };
}

function checkMetadata(value: unknown, modelPath: string): ExportMetadata {
  const m = value as Partial<ExportMetadata> | null;
  if (m?.format !== FORMAT) throw new UserError(`--model ${modelPath}: metadata.json is not a pipeline export (format ${String(m?.format)})`);
  if (m.format_version !== FORMAT_VERSION) {
    throw new UserError(`--model ${modelPath}: export format version ${m.format_version}; this pipeline reads version ${FORMAT_VERSION}`);
  }
  const sizeOk = (n: unknown) => Number.isInteger(n) && (n as number) > 0;
  if (!Array.isArray(m.labels) || m.labels.length === 0 || !sizeOk(m.input?.height) || !sizeOk(m.input?.width) || !m.resize) {
    throw new UserError(`--model ${modelPath}: metadata.json lacks labels, input size or resize mode`);
  }
  return m as ExportMetadata;
}

/** Classifies the files with the exported model in modelDir. */
export async function predictFiles(files: readonly string[], modelDir: string, options: PredictOptions = {}): Promise<PredictResult> {
  const backend = options.backend ?? 'wasm';
  try {
    await activateBackend(tf, backend);
  } catch (error) {
    throw new UserError(`backend ${backend} cannot load: ${messageOf(error).split('\n')[0]}`);
  }
  const loaded = await loadExportedModel(modelDir);
  try {
    return {
      modelDir: loaded.dir,
      metadata: loaded.metadata,
      backend: tf.getBackend(),
      predictions: await predictWith(loaded, files, options),
    };
  } finally {
    loaded.model.dispose();
  }
}

/** Runs a loaded model over files, batch by batch; every tensor is disposed before returning. */
export async function predictWith(loaded: LoadedModel, files: readonly string[], options: PredictOptions = {}): Promise<FilePrediction[]> {
  const { model, metadata } = loaded;
  const classes = metadata.labels.length;
  const top = Math.max(1, Math.min(classes, Math.floor(options.top ?? 3)));
  const batchSize = Math.max(1, Math.floor(options.batchSize ?? 16));
  const size = { height: metadata.input.height, width: metadata.input.width };
  const pixelsPerImage = size.height * size.width * 3;
  const results: FilePrediction[] = new Array(files.length);

  for (let start = 0; start < files.length; start += batchSize) {
    const batch = files.slice(start, start + batchSize);
    const decoded = await Promise.all(
      batch.map(async (file): Promise<{ pixels: Buffer } | { error: string }> => {
        try {
          return { pixels: await decodeImage(await readFile(file), size, metadata.resize) };
        } catch (error) {
          return { error: describeFailure(error) };
        }
      }),
    );
    const good: number[] = [];
    decoded.forEach((d, i) => {
      if ('error' in d) results[start + i] = { file: batch[i], ok: false, error: d.error };
      else good.push(i);
    });
    if (good.length > 0) {
      const input = new Float32Array(good.length * pixelsPerImage);
      good.forEach((i, row) => input.set((decoded[i] as { pixels: Buffer }).pixels, row * pixelsPerImage));
      const probabilities = tf.tidy(() => {
        const x = tf.tensor4d(input, [good.length, size.height, size.width, 3]);
        return model.predict(x) as tf.Tensor2D;
      });
      const values = await probabilities.data();
      probabilities.dispose();
      good.forEach((i, row) => {
        results[start + i] = { file: batch[i], ok: true, top: topK(values.subarray(row * classes, (row + 1) * classes) as Float32Array, metadata.labels, top) };
      });
    }
    options.onProgress?.(Math.min(files.length, start + batch.length), files.length);
  }
  return results;
}

/** The k most probable classes, best first; ties go to the lower class index. */
export function topK(probabilities: Float32Array, labels: readonly string[], k: number): ClassProbability[] {
  return Array.from(probabilities, (probability, index) => ({ index, probability }))
    .sort((a, b) => b.probability - a.probability || a.index - b.index)
    .slice(0, k)
    .map(({ index, probability }) => ({ label: labels[index], probability }));
}

function describeFailure(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EISDIR') return 'is a folder, not an image';
  if (code === 'EACCES') return 'permission denied';
  return `cannot decode: ${messageOf(error).split('\n')[0]}`;
}
