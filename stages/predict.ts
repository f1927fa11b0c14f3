/**
 * `pipeline predict`: classifies image files with a folder written by `pipeline export`,
 * reproducing what the run's sweep computed for its test images. Each file is read and
 * decoded once (data/images.ts decodeSources); then
 * - a TF.js export: each of the run's views is rendered at each of its sizes (renderInput,
 *   as extraction did), the model takes one row per view (one input per size), and the
 *   rows' probabilities are averaged over the views;
 * - an ONNX export: the decoded image goes into the model, which does all of that itself
 *   (with its own resize, close to but not bitwise sharp's).
 * A file that cannot be read or decoded gets an error of its own; the others are still
 * predicted.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { tf } from '../core/tfjs.js';
import { decodeSources, renderInput } from '../data/images.js';
import { type RawImage, type View, parseViews } from '../data/views.js';
import { type InputSize, formatSize, parseSize } from '../backbone/preprocessing.js';
import { activateBackend } from '../backbone/backends.js';
import { type OnnxClassifierSession, openClassifierSession } from '../backbone/onnx-classifier.js';
import { readModelFiles } from '../backbone/model-files.js';
import { UserError, messageOf } from '../core/errors.js';
import type { ExportMetadata } from './export.js';

// Checked against export.ts' types at compile time, without loading export.ts (and the sweep) at run time.
const FORMAT: ExportMetadata['format'] = 'pipeline-classifier';
const FORMAT_VERSION: ExportMetadata['format_version'] = 2;
/** Exports from before sizes and views: one input size, view original, no model/sizes/views fields. */
const FORMAT_VERSION_ONE_SIZE = 1;

/** What predict needs from metadata.json, the same for every format version. */
export interface ModelRecipe {
  readonly runtime: 'tfjs' | 'onnx';
  readonly labels: string[];
  readonly sizes: InputSize[];
  readonly views: View[];
  readonly resize: ExportMetadata['resize'];
}

export type LoadedModel =
  | { readonly runtime: 'tfjs'; readonly dir: string; readonly metadata: ExportMetadata; readonly recipe: ModelRecipe; readonly model: tf.LayersModel }
  | { readonly runtime: 'onnx'; readonly dir: string; readonly metadata: ExportMetadata; readonly recipe: ModelRecipe; readonly session: OnnxClassifierSession };

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
  /** Image rows per model call (default 16): a file brings one row per view, so a call takes max(1, floor(16 / views)) files. */
  readonly batchSize?: number;
  /** tfjs backend for a TF.js export (default wasm). */
  readonly backend?: 'wasm' | 'cpu';
  readonly onProgress?: (done: number, total: number) => void;
  /** Called with every predicted file's full probability vector (class-index order). */
  readonly onProbabilities?: (file: string, probabilities: Float32Array) => void;
}

export interface PredictResult {
  readonly modelDir: string;
  readonly metadata: ExportMetadata;
  readonly backend: string;
  readonly predictions: FilePrediction[];
}

/** Frees the loaded model (tfjs variables or the ONNX Runtime session). */
export async function releaseModel(loaded: LoadedModel): Promise<void> {
  if (loaded.runtime === 'tfjs') loaded.model.dispose();
  else await loaded.session.release();
}

/** Loads an export folder (or its model.json / model.onnx); UserError when anything is missing or not an export. */
export async function loadExportedModel(modelPath: string): Promise<LoadedModel> {
  let dir = resolve(modelPath);
  const info = await stat(dir).catch(() => undefined);
  if (!info) throw new UserError(`--model ${modelPath}: no such folder`);
  if (info.isFile()) {
    if (basename(dir) !== 'model.json' && basename(dir) !== 'model.onnx') throw new UserError(`--model ${modelPath}: expected an export folder (from pipeline export)`);
    dir = resolve(dir, '..');
  }
  const readBytes = async (name: string, what = `no ${name} (is it a folder written by pipeline export?)`): Promise<Buffer> => {
    try {
      return await readFile(join(dir, name));
    } catch {
      throw new UserError(`--model ${modelPath}: ${what}`);
    }
  };
  const readJson = async (name: string): Promise<unknown> => {
    const text = (await readBytes(name)).toString('utf8');
    try {
      return JSON.parse(text);
    } catch {
      throw new UserError(`--model ${modelPath}: ${name} is not valid JSON`);
    }
  };
  const metadata = (await readJson('metadata.json')) as ExportMetadata;
  const recipe = checkMetadata(metadata, modelPath);

  if (recipe.runtime === 'onnx') {
    const bytes = await readBytes('model.onnx');
    let session: OnnxClassifierSession;
    try {
      session = await openClassifierSession(bytes);
    } catch (error) {
      throw new UserError(`--model ${modelPath}: cannot load model.onnx: ${messageOf(error).split('\n')[0]}`);
    }
    return { runtime: 'onnx', dir, metadata, recipe, session };
  }

  const { modelJson, specs: weightSpecs, data: weightData } = await readModelFiles(join(dir, 'model.json'), `--model ${modelPath}`, '--model');
  if (!modelJson.modelTopology) throw new UserError(`--model ${modelPath}: model.json is not a TF.js layers model`);
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: modelJson.modelTopology as tf.io.ModelJSON['modelTopology'], weightSpecs, weightData }));
  } catch (error) {
    throw new UserError(`--model ${modelPath}: cannot load the model: ${messageOf(error).split('\n')[0]}`);
  }
  const shapes = model.inputs.map((input) => input.shape);
  const outputs = model.outputs[0].shape[1];
  const expected = recipe.sizes.map(formatSize);
  const actual = shapes.map(([, height, width]) => `${height}x${width}`);
  if (actual.join(',') !== expected.join(',') || shapes.some((shape) => shape[3] !== 3) || outputs !== recipe.labels.length) {
    model.dispose();
    throw new UserError(
      `--model ${modelPath}: model.json (inputs ${actual.join(', ')}, ${outputs} outputs) disagrees with metadata.json ` +
        `(sizes ${expected.join(', ')}, ${recipe.labels.length} labels)`,
    );
  }
  return { runtime: 'tfjs', dir, metadata, recipe, model };
}

/** Reads what predict needs from metadata.json of either format version; UserError naming the field otherwise. */
function checkMetadata(value: unknown, modelPath: string): ModelRecipe {
  const fail = (message: string): never => {
    throw new UserError(`--model ${modelPath}: metadata.json ${message}`);
  };
  const m = value as Partial<ExportMetadata> & { input?: { height?: unknown; width?: unknown } } | null;
  if (m?.format !== FORMAT) throw new UserError(`--model ${modelPath}: metadata.json is not a pipeline export (format ${String(m?.format)})`);
  const version = m.format_version as number;
  if (version !== FORMAT_VERSION && version !== FORMAT_VERSION_ONE_SIZE) {
    throw new UserError(`--model ${modelPath}: export format version ${version}; this pipeline reads versions ${FORMAT_VERSION_ONE_SIZE} and ${FORMAT_VERSION}`);
  }
  if (!Array.isArray(m.labels) || m.labels.length === 0 || !m.resize) fail('lacks labels or resize mode');
  if (version === FORMAT_VERSION_ONE_SIZE) {
    const size = parseSize(`${m.input?.height}x${m.input?.width}`) ?? fail('lacks the input size');
    return { runtime: 'tfjs', labels: m.labels!, sizes: [size], views: parseViews(['original']) as View[], resize: m.resize! };
  }
  const runtime = m.model?.runtime;
  if (runtime !== 'tfjs' && runtime !== 'onnx') return fail(`model.runtime: expected tfjs or onnx, got ${JSON.stringify(runtime)}`);
  if (!Array.isArray(m.sizes) || m.sizes.length === 0) fail('sizes: expected a list of HxW');
  const sizes = m.sizes!.map((text) => parseSize(String(text)) ?? fail(`sizes: "${text}" is not HxW`));
  const views = Array.isArray(m.views) ? parseViews(m.views.map(String)) : 'expected a list of view names';
  if (typeof views === 'string') return fail(`views: ${views}`);
  return { runtime, labels: m.labels!, sizes, views, resize: m.resize! };
}

/** Classifies the files with the exported model in modelDir. */
export async function predictFiles(files: readonly string[], modelDir: string, options: PredictOptions = {}): Promise<PredictResult> {
  const backend = options.backend ?? 'wasm';
  const loaded = await loadExportedModel(modelDir);
  try {
    if (loaded.runtime === 'tfjs') {
      try {
        await activateBackend(tf, backend);
      } catch (error) {
        throw new UserError(`backend ${backend} cannot load: ${messageOf(error).split('\n')[0]}`);
      }
    }
    return {
      modelDir: loaded.dir,
      metadata: loaded.metadata,
      backend: loaded.runtime === 'tfjs' ? tf.getBackend() : 'onnxruntime-node',
      predictions: await predictWith(loaded, files, options),
    };
  } finally {
    await releaseModel(loaded);
  }
}

/** Per file, either its model inputs (one RGB buffer per size and view) or why it failed. */
type Decoded = { readonly rendered: Buffer[][]; readonly full: RawImage } | { readonly error: string };

/** Reads and decodes one file once; for a TF.js export also renders every view at every size. */
async function decodeFile(file: string, recipe: ModelRecipe): Promise<Decoded> {
  try {
    const { sources } = await decodeSources(await readFile(file), recipe.sizes);
    if (recipe.runtime === 'onnx') {
      // The sizes' decodes differ only for large JPEGs shrunk on load; the graph resizes the sharpest one.
      const full = sources.reduce((best, s) => (s.width * s.height > best.width * best.height ? s : best));
      return { rendered: [], full };
    }
    const rendered = await Promise.all(
      recipe.sizes.map((size, i) => Promise.all(recipe.views.map((view) => renderInput(sources[i], view, size, recipe.resize)))),
    );
    return { rendered, full: sources[0] };
  } catch (error) {
    return { error: describeFailure(error) };
  }
}

/** Runs a loaded model over files, batch by batch; every tensor is disposed before returning. */
export async function predictWith(loaded: LoadedModel, files: readonly string[], options: PredictOptions = {}): Promise<FilePrediction[]> {
  const { recipe } = loaded;
  const classes = recipe.labels.length;
  const top = Math.max(1, Math.min(classes, Math.floor(options.top ?? 3)));
  // Rows, not files, bound the backbone's activations (64 rows at 448x597 would need gigabytes).
  const batchSize = Math.max(1, Math.floor(Math.max(1, Math.floor(options.batchSize ?? 16)) / recipe.views.length));
  const results: FilePrediction[] = new Array(files.length);

  for (let start = 0; start < files.length; start += batchSize) {
    const batch = files.slice(start, start + batchSize);
    const decoded = await Promise.all(batch.map((file) => decodeFile(file, recipe)));
    const good: number[] = [];
    decoded.forEach((d, i) => {
      if ('error' in d) results[start + i] = { file: batch[i], ok: false, error: d.error };
      else good.push(i);
    });
    const probabilities =
      loaded.runtime === 'tfjs'
        ? await runLayers(loaded.model, recipe, good.map((i) => (decoded[i] as { rendered: Buffer[][] }).rendered))
        : await Promise.all(good.map((i) => loaded.session.classify((decoded[i] as { full: RawImage }).full)));
    good.forEach((i, row) => {
      options.onProbabilities?.(batch[i], probabilities[row]);
      results[start + i] = { file: batch[i], ok: true, top: topK(probabilities[row], recipe.labels, top) };
    });
    options.onProgress?.(Math.min(files.length, start + batch.length), files.length);
  }
  return results;
}

/**
 * One model call for the files' rendered views: input s holds size s of every view of every
 * file (row file * views + view); each file's probabilities are the mean of its views' rows.
 */
async function runLayers(model: tf.LayersModel, recipe: ModelRecipe, files: readonly Buffer[][][]): Promise<Float32Array[]> {
  if (files.length === 0) return [];
  const views = recipe.views.length;
  const classes = recipe.labels.length;
  const rows = files.length * views;
  const output = tf.tidy(() => {
    const inputs = recipe.sizes.map((size, s) => {
      const pixels = size.height * size.width * 3;
      const input = new Float32Array(rows * pixels);
      files.forEach((rendered, f) => rendered[s].forEach((view, v) => input.set(view, (f * views + v) * pixels)));
      return tf.tensor4d(input, [rows, size.height, size.width, 3]);
    });
    return model.predict(inputs.length > 1 ? inputs : inputs[0]) as tf.Tensor2D;
  });
  const values = (await output.data()) as Float32Array;
  output.dispose();
  return files.map((_, f) => {
    const mean = new Float32Array(classes);
    for (let v = 0; v < views; v++) for (let c = 0; c < classes; c++) mean[c] += values[(f * views + v) * classes + c];
    for (let c = 0; c < classes; c++) mean[c] /= views;
    return mean;
  });
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
