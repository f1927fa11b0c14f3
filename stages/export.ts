/**
 * `pipeline export`: one run of a sweep as a standalone classifier that reproduces the run's
 * test predictions, with metadata.json saying what it expects and where it came from.
 *
 * A run may concatenate the features of several input sizes, standardize them and average
 * its probabilities over several views of each image (its params `sizes`, `standardize`,
 * `views`). Two formats carry all of that:
 * - `tfjs` (default): a TF.js layers model (model.json + weight shards) with one input per
 *   size, all through the same backbone layers, the standardisation as a layer, and the
 *   head. Views are made outside the model (they are applied to the decoded full image,
 *   before resizing): the caller feeds each view as one row and averages the rows.
 * - `onnx`: one model.onnx that takes the decoded uint8 image and does the views, resizes,
 *   backbone, standardisation, head and averaging itself (backbone/onnx-classifier.ts).
 *
 * The backbone weights are read again from the feature set's model source and must hash
 * to the sha256 recorded at extraction: a head is only valid on the features it was
 * trained on. Files are written into a temporary sibling folder and renamed into place,
 * so a failure never leaves a half-written export behind.
 */
import { type Log, quietLog } from '../core/log.js';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '../core/tfjs.js';
import { type HeadWeights, buildLayersModel, headFromArrays } from '../backbone/layers-model.js';
import { type InputSize, PREPROCESSING, type ResizeMode, formatSize, parseSize } from '../backbone/preprocessing.js';
import { type BackboneWeights, backboneWeights, readWeightFile } from '../backbone/weights.js';
import type { ViewName } from '../backbone/classifier-spec.js';
import { buildClassifierOnnx, CLASSIFIER_INPUT, CLASSIFIER_OUTPUT } from '../backbone/onnx-classifier.js';
import type { StoreLike } from '../cache/store.js';
import type { FeatureSet } from '../cache/features.js';
import type { RunParams, StoredRun } from '../cache/sweeps.js';
import { parseViews } from '../data/views.js';
import { activateBackend } from '../backbone/backends.js';
import { UserError, messageOf } from '../core/errors.js';
import { chooseSweep, findRun, sweepResults } from './report.js';

/**
 * Bumped when metadata.json changes incompatibly. Version 2 added sizes, views, inputs,
 * standardize and model; predict still reads version 1 (one size, view original).
 */
export const EXPORT_FORMAT_VERSION = 2;
export const EXPORT_FORMAT = 'pipeline-classifier';
export const EXPORT_FORMATS = ['tfjs', 'onnx'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

/** One input of the exported model, in the order the model takes them. */
export interface ExportInput {
  readonly name: string;
  /** Fixed for a TF.js export (one input per size); null for the ONNX model, which takes any image size. */
  readonly height: number | null;
  readonly width: number | null;
  readonly channels: 3;
  /** TF.js: a batch of images, one row per view; ONNX: one decoded image. */
  readonly layout: 'NHWC' | 'HWC';
  readonly dtype: 'float32' | 'uint8';
  /** 8-bit sRGB values (as floats for TF.js); the model scales them itself. */
  readonly range: [0, 255];
}

/** metadata.json: everything needed to feed the model and to trace where it came from. */
export interface ExportMetadata {
  readonly format: typeof EXPORT_FORMAT;
  readonly format_version: typeof EXPORT_FORMAT_VERSION;
  readonly model: { readonly runtime: ExportFormat; readonly file: 'model.json' | 'model.onnx' };
  /** Class names in output-index order. */
  readonly labels: string[];
  /** Input sizes "HxW" whose pooled features are concatenated, in this order. */
  readonly sizes: string[];
  /** Views (data/views.ts names) whose probabilities are averaged; view i is made from the decoded image before resizing. */
  readonly views: string[];
  /** True: the model averages over the views itself (ONNX); false: feed one row per view and average the rows. */
  readonly views_in_model: boolean;
  readonly inputs: ExportInput[];
  readonly resize: ResizeMode;
  readonly preprocessing: {
    readonly id: string;
    readonly formula: string;
    readonly scale: number;
    readonly offset: number;
    /** True: the model applies the formula. */
    readonly in_model: true;
  };
  /** z-score of the concatenated features with the run's train statistics, inside the model; null: none. */
  readonly standardize: { readonly dim: number; readonly in_model: true } | null;
  /** The model's output: `probabilities` [classes] for ONNX, the last Dense layer's [rows, classes] for TF.js. */
  readonly output: { readonly name: string; readonly activation: 'softmax'; readonly classes: number };
  readonly feature_set: string;
  readonly backbone: {
    readonly architecture: string;
    readonly alpha: number;
    readonly feature_dim: number;
    readonly source: string;
    readonly weights_sha256: string;
  };
  readonly head: {
    /** Dense layers in order (each preceded by Dropout at training time): relu between, softmax last. */
    readonly layers: { readonly name: string; readonly units: number; readonly activation: 'relu' | 'softmax' }[];
    /** Units of the hidden layer, 0 for a plain Dropout -> Dense head. */
    readonly hidden_units: number;
    readonly dropout: number;
  };
  readonly sweep_id: number;
  readonly run_key: string;
  readonly variant_key: string;
  readonly params: RunParams;
  readonly seed: number;
  readonly metrics: {
    readonly val_accuracy: number;
    readonly val_loss: number;
    readonly test_accuracy: number;
    readonly test_loss: number;
    readonly macro_f1: number;
  };
  readonly created_at: string;
  readonly pipeline_version: string;
}

export interface ExportOptions {
  readonly db: StoreLike;
  /** Sweep id; the latest sweep when absent. */
  readonly sweepId?: number;
  /** 'best' (the best seed of the winning variant) or a run key. */
  readonly run: string;
  /** Output folder; created, or replaced if it holds an earlier export. */
  readonly out: string;
  /** 'tfjs' (default) or 'onnx'. */
  readonly format?: ExportFormat;
  /** Where to read the backbone weights instead of the feature set's model source (must hash the same). */
  readonly weights?: string;
  readonly log?: Log;
}

export interface ExportOutcome {
  /** Absolute path of the export folder. */
  readonly dir: string;
  /** File names written into it (model.json + shards or model.onnx, metadata.json). */
  readonly files: string[];
  readonly bytes: number;
  readonly metadata: ExportMetadata;
}

/** What a run computes from an image, read from its stored params and weights. */
export interface RunRecipe {
  readonly sizes: InputSize[];
  readonly views: string[];
  readonly standardize: { readonly mean: Float32Array; readonly std: Float32Array } | null;
  readonly head: HeadWeights;
}

/** Weight shard size, as tensorflowjs_converter's default. */
const SHARD_BYTES = 4 * 1024 * 1024;

/** Weight arrays of the standardisation, stored with the head's when a run standardizes. */
const STANDARDIZE_PREFIX = 'standardize/';

/**
 * A run's sizes, views, standardisation and head. Runs without `sizes`, `views` or
 * `standardize` in their params (sweeps made before those existed) use the feature set's
 * one size, the original view and no standardisation.
 */
export function runRecipe(run: StoredRun, featureSet: FeatureSet, featureDim: number): RunRecipe {
  const params = run.params as Record<string, unknown>;
  const fail = (field: string, message: string): never => {
    throw new UserError(`run ${run.runKey}: params.${field}: ${message}`);
  };
  const stringList = (field: string): string[] | undefined => {
    const value = params[field];
    if (value === undefined) return undefined;
    if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === 'string')) return fail(field, `expected a non-empty list of names, got ${JSON.stringify(value)}`);
    return value as string[];
  };
  const sizes = (stringList('sizes') ?? [formatSize(featureSet)]).map((text) => parseSize(text) ?? fail('sizes', `"${text}" is not HxW`));
  if (new Set(sizes.map(formatSize)).size !== sizes.length) fail('sizes', `${sizes.map(formatSize).join(', ')} repeats a size`);
  const views = parseViews(stringList('views') ?? ['original']);
  if (typeof views === 'string') return fail('views', views);
  const standardizeParam = params.standardize ?? false;
  if (typeof standardizeParam !== 'boolean') fail('standardize', `expected true or false, got ${JSON.stringify(standardizeParam)}`);

  const dim = featureDim * sizes.length;
  let standardize: RunRecipe['standardize'] = null;
  if (standardizeParam) {
    const array = (name: string) => {
      const found = run.weights.find((w) => w.name === `${STANDARDIZE_PREFIX}${name}`);
      if (!found) return fail('standardize', `true, but the run has no ${STANDARDIZE_PREFIX}${name} weights`);
      if (found.values.length !== dim) fail('standardize', `${STANDARDIZE_PREFIX}${name} has ${found.values.length} values, expected ${dim} (${featureDim} x ${sizes.length} sizes)`);
      return found.values;
    };
    standardize = { mean: array('mean'), std: array('std') };
    const bad = standardize.std.findIndex((s) => !(s > 0 && Number.isFinite(s)));
    if (bad >= 0) fail('standardize', `${STANDARDIZE_PREFIX}std[${bad}] is ${standardize.std[bad]}, expected a positive number`);
  }
  const dropout = Number(params.dropout ?? 0);
  const headArrays = run.weights.filter((w) => !w.name.startsWith(STANDARDIZE_PREFIX));
  const head = headFromArrays(headArrays, dim, Number.isFinite(dropout) ? dropout : 0);
  return { sizes, views: views.map((v) => v.name), standardize, head };
}

export async function exportModel(options: ExportOptions): Promise<ExportOutcome> {
  const log = options.log ?? quietLog;
  const format = options.format ?? 'tfjs';
  const { db } = options;
  const sweep = await chooseSweep(db, options.sweepId);
  const results = await sweepResults(db, sweep);
  const run = findRun(results, options.run);
  const featureSet = results.featureSet;

  // Decoding, building and saving compute little; wasm (not tfjs' default cpu backend) keeps its banner off stdout.
  try {
    await activateBackend(tf, 'wasm');
  } catch (error) {
    throw new UserError(`the wasm backend cannot load: ${messageOf(error).split('\n')[0]}`);
  }
  const source = options.weights ?? featureSet.modelSource;
  const file = await readWeightFile(source).catch((error: unknown) => {
    const hint = options.weights ? '' : ' (give their current location with --weights PATH)';
    throw new UserError(`cannot read the backbone weights of feature set ${featureSet.id}: ${messageOf(error)}${hint}`);
  });
  if (file.sha256 !== featureSet.weightsSha256) {
    throw new UserError(
      `weights changed since extraction: ${source} hashes to ${file.sha256.slice(0, 12)}, feature set ${featureSet.id} was extracted with ${featureSet.weightsSha256.slice(0, 12)}`,
    );
  }
  const backbone = await backboneWeights(file);
  if (backbone.arch.featureDim !== featureSet.dim) {
    throw new UserError(`backbone gives ${backbone.arch.featureDim} features, feature set ${featureSet.id} has ${featureSet.dim}`);
  }

  // Class order as the run was trained and scored: its per-class report lists labels by class index.
  const labels = run.perClass.map((c) => c.label);
  const recipe = runRecipe(run, featureSet, backbone.arch.featureDim);
  const { head } = recipe;
  if (head.classes !== labels.length || new Set(labels).size !== labels.length) {
    throw new UserError(`run ${run.runKey} has ${head.classes} outputs but its report lists ${labels.length} classes (${labels.join(', ')})`);
  }

  const resize = featureSet.resize as ResizeMode;
  const inputs: ExportInput[] =
    format === 'onnx'
      ? [{ name: CLASSIFIER_INPUT, height: null, width: null, channels: 3, layout: 'HWC', dtype: 'uint8', range: [0, 255] }]
      : recipe.sizes.map((size, i) => ({ name: `input_${i + 1}`, height: size.height, width: size.width, channels: 3, layout: 'NHWC', dtype: 'float32', range: [0, 255] }));
  const metadata: ExportMetadata = {
    format: EXPORT_FORMAT,
    format_version: EXPORT_FORMAT_VERSION,
    model: { runtime: format, file: format === 'onnx' ? 'model.onnx' : 'model.json' },
    labels,
    sizes: recipe.sizes.map(formatSize),
    views: recipe.views,
    views_in_model: format === 'onnx',
    inputs,
    resize,
    preprocessing: {
      id: featureSet.preprocessing,
      formula: `x / ${PREPROCESSING.scale} - ${PREPROCESSING.offset}`,
      scale: 1 / PREPROCESSING.scale,
      offset: -PREPROCESSING.offset,
      in_model: true,
    },
    standardize: recipe.standardize && { dim: recipe.standardize.mean.length, in_model: true },
    output: { name: format === 'onnx' ? CLASSIFIER_OUTPUT : head.layers[head.layers.length - 1].name, activation: 'softmax', classes: labels.length },
    feature_set: featureSet.id,
    backbone: {
      architecture: backbone.arch.name,
      alpha: backbone.arch.alpha,
      feature_dim: backbone.arch.featureDim,
      source: featureSet.modelSource,
      weights_sha256: featureSet.weightsSha256,
    },
    head: {
      layers: head.layers.map((layer, i) => ({
        name: layer.name,
        units: layer.units,
        activation: i === head.layers.length - 1 ? ('softmax' as const) : ('relu' as const),
      })),
      hidden_units: head.layers.length > 1 ? head.layers[0].units : 0,
      dropout: head.dropout,
    },
    sweep_id: sweep.id,
    run_key: run.runKey,
    variant_key: run.variantKey,
    params: run.params,
    seed: run.seed,
    metrics: {
      val_accuracy: run.valAccuracy,
      val_loss: run.valLoss,
      test_accuracy: run.testAccuracy,
      test_loss: run.testLoss,
      macro_f1: run.macroF1,
    },
    created_at: new Date().toISOString(),
    pipeline_version: pipelineVersion(),
  };

  const files = format === 'onnx' ? onnxFiles(backbone, recipe, resize, metadata) : await tfjsFiles(backbone, recipe, metadata);
  const dir = resolve(options.out);
  await writeFolder(dir, files, options.out);
  const bytes = Object.values(files).reduce((sum, data) => sum + data.length, 0);
  log(`exported run ${run.runKey} of sweep ${sweep.id} to ${dir} (${Object.keys(files).length} files, ${(bytes / 1e6).toFixed(1)} MB)`);
  return { dir, files: Object.keys(files), bytes, metadata };
}

async function tfjsFiles(backbone: BackboneWeights, recipe: RunRecipe, metadata: ExportMetadata): Promise<Record<string, Buffer>> {
  const model = buildLayersModel({ arch: backbone.arch, layers: backbone.layers, size: recipe.sizes, standardize: recipe.standardize, head: recipe.head });
  try {
    return await serialize(model, metadata);
  } finally {
    model.dispose();
  }
}

function onnxFiles(backbone: BackboneWeights, recipe: RunRecipe, resize: ResizeMode, metadata: ExportMetadata): Record<string, Buffer> {
  const model = buildClassifierOnnx(backbone, {
    labels: metadata.labels,
    sizes: recipe.sizes,
    resize,
    views: recipe.views as ViewName[],
    standardize: recipe.standardize,
    layers: recipe.head.layers.map((layer, i) => ({
      kernel: layer.kernel,
      bias: layer.bias,
      inputs: layer.inputs,
      units: layer.units,
      activation: i === recipe.head.layers.length - 1 ? ('softmax' as const) : ('relu' as const),
    })),
  });
  return {
    'model.onnx': Buffer.from(model.buffer, model.byteOffset, model.byteLength),
    'metadata.json': Buffer.from(`${JSON.stringify(metadata, null, 2)}\n`),
  };
}

/** model.json (tensorflowjs_converter's layout), weight shards, metadata.json: as bytes. */
async function serialize(model: tf.LayersModel, metadata: ExportMetadata): Promise<Record<string, Buffer>> {
  let artifacts: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (saved) => {
      artifacts = saved;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  if (!artifacts?.weightData || !artifacts.weightSpecs) throw new Error('model.save produced no weights');
  const data = Buffer.from(tf.io.CompositeArrayBuffer.join(artifacts.weightData));
  const shardCount = Math.max(1, Math.ceil(data.length / SHARD_BYTES));
  const files: Record<string, Buffer> = {};
  const paths: string[] = [];
  for (let i = 0; i < shardCount; i++) {
    const name = `group1-shard${i + 1}of${shardCount}.bin`;
    files[name] = data.subarray(i * SHARD_BYTES, Math.min(data.length, (i + 1) * SHARD_BYTES));
    paths.push(name);
  }
  const modelJson = {
    format: artifacts.format ?? 'layers-model',
    generatedBy: artifacts.generatedBy,
    convertedBy: `pipeline ${metadata.pipeline_version}`,
    modelTopology: artifacts.modelTopology,
    weightsManifest: [{ paths, weights: artifacts.weightSpecs }],
  };
  return {
    'model.json': Buffer.from(JSON.stringify(modelJson)),
    ...files,
    'metadata.json': Buffer.from(`${JSON.stringify(metadata, null, 2)}\n`),
  };
}

/** Files this exporter writes: a folder holding only these may be replaced by a new export. */
const isExportFile = (name: string) => name === 'model.json' || name === 'model.onnx' || name === 'metadata.json' || /^group\d+-shard\d+of\d+\.bin$/.test(name);

/**
 * Writes the files into `.NAME.tmp-PID-RANDOM` beside the target, then renames it into
 * place. An existing target is replaced only when empty or an earlier export.
 */
async function writeFolder(dir: string, files: Record<string, Buffer>, given: string): Promise<void> {
  const fail = (error: unknown): never => {
    throw new UserError(`cannot write the export to ${given}: ${messageOf(error).split('\n')[0]}`);
  };
  const existing = await stat(dir).catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? undefined : fail(error)));
  if (existing && !existing.isDirectory()) fail(new Error('it exists and is not a folder'));
  if (existing) {
    const names = await readdir(dir).catch(fail);
    const foreign = names.filter((name) => !isExportFile(name));
    if (foreign.length > 0) fail(new Error(`the folder exists and holds other files (${foreign.slice(0, 3).join(', ')}); choose an empty or new folder`));
  }
  const parent = dirname(dir);
  await mkdir(parent, { recursive: true }).catch(fail);
  const temp = join(parent, `.${basename(dir)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
  const old = `${temp}-old`;
  try {
    await mkdir(temp).catch(fail);
    for (const [name, data] of Object.entries(files)) await writeFile(join(temp, name), data).catch(fail);
    if (existing) await rename(dir, old).catch(fail);
    try {
      await rename(temp, dir);
    } catch (error) {
      if (existing) await rename(old, dir).catch(() => {});
      fail(error);
    }
  } finally {
    await rm(temp, { recursive: true, force: true }).catch(() => {});
    await rm(old, { recursive: true, force: true }).catch(() => {});
  }
}

let version: string | undefined;

/** The version in the pipeline package.json above this file (works from the source tree and dist/). */
export function pipelineVersion(): string {
  if (version) return version;
  let folder = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(folder, 'package.json');
    if (existsSync(pkg)) {
      const parsed = JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string; version?: string };
      if (parsed.name === 'pipeline' && parsed.version) return (version = parsed.version);
    }
    const up = dirname(folder);
    if (up === folder) return (version = 'unknown');
    folder = up;
  }
}
