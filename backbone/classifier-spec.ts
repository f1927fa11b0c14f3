/**
 * What a trained classifier is made of, independent of any runtime: the input sizes whose
 * pooled backbone features are concatenated, the test-time views averaged over, the
 * optional z-score standardisation and the dense head. onnx-classifier.ts turns it into
 * one ONNX model; anything else that ships a run reads the same contract.
 *
 * Semantics: for each view, the view is applied to the decoded full-size image, which is
 * then resized to each size (`resize`), run through the backbone and pooled; the blocks
 * are concatenated in `sizes` order, standardized, and put through the head. The
 * probabilities are the mean over views of the head's softmax output.
 */
import { UserError } from '../core/errors.js';
import { parseView } from '../data/views.js';
import { type InputSize, type ResizeMode, RESIZE_MODES, formatSize } from './preprocessing.js';

/**
 * Test-time views; rotations are clockwise, so rot90 turns a 512x384 (W x H) photo into
 * 384x512. Crops `crop:F:POS` (data/views.ts) are views too: the F-fraction window of the
 * decoded image at POS.
 */
export const VIEW_NAMES = ['original', 'hflip', 'vflip', 'rot90', 'rot180', 'rot270'] as const;
export type ViewName = (typeof VIEW_NAMES)[number] | `crop:${string}`;

/** One Dense layer, Keras layout: kernel [inputs, units] row-major. */
export interface DenseLayer {
  readonly kernel: Float32Array;
  readonly inputs: number;
  readonly units: number;
  readonly bias: Float32Array;
  readonly activation: 'relu' | 'softmax';
}

export interface ClassifierSpec {
  /** Class names in output order. */
  readonly labels: readonly string[];
  /** Feature blocks, concatenated in this order. */
  readonly sizes: readonly InputSize[];
  /** fill = stretch to H x W; cover = scale to cover H x W, then crop the centre. */
  readonly resize: ResizeMode;
  readonly views: readonly ViewName[];
  /** Train mean and std of the concatenated features (featureDim * sizes.length each), or none. */
  readonly standardize: { readonly mean: Float32Array; readonly std: Float32Array } | null;
  /** Hidden layers are relu, the last one softmax over `labels`. */
  readonly layers: readonly DenseLayer[];
}

/** Five stride-2 stages: below 32 px nothing is left to pool (the bound --size has too). */
const MIN_SIDE = 32;

/**
 * Throws a one-line UserError naming the field when the spec does not describe a network
 * on a backbone whose pooled features have `featureDim` values.
 */
export function checkClassifierSpec(spec: ClassifierSpec, featureDim: number): void {
  const fail = (message: string) => {
    throw new UserError(`classifier spec: ${message}`);
  };
  if (spec.labels.length < 2) fail(`labels: expected at least 2 classes, got ${spec.labels.length}`);
  if (new Set(spec.labels).size !== spec.labels.length) fail(`labels: duplicate class names in ${spec.labels.join(', ')}`);
  if (spec.sizes.length === 0) fail('sizes: expected at least one input size');
  for (const size of spec.sizes) {
    const { height, width } = size;
    if (!Number.isInteger(height) || !Number.isInteger(width) || height < MIN_SIDE || width < MIN_SIDE) {
      fail(`sizes: ${height}x${width} is not an input size (whole numbers, both sides >= ${MIN_SIDE})`);
    }
  }
  const sizeNames = spec.sizes.map(formatSize);
  if (new Set(sizeNames).size !== sizeNames.length) fail(`sizes: ${sizeNames.join(', ')} repeats a size`);
  if (!RESIZE_MODES.includes(spec.resize)) fail(`resize: "${spec.resize}" is not one of ${RESIZE_MODES.join(', ')}`);
  if (spec.views.length === 0) fail('views: expected at least one view');
  for (const view of spec.views) {
    const parsed = parseView(view);
    if (typeof parsed === 'string') fail(`views: ${parsed}`);
    else if (parsed.name !== view) fail(`views: "${view}" is written "${parsed.name}"`);
  }
  if (new Set(spec.views).size !== spec.views.length) fail(`views: ${spec.views.join(', ')} repeats a view`);

  const dim = featureDim * spec.sizes.length;
  if (spec.standardize) {
    const { mean, std } = spec.standardize;
    if (mean.length !== dim || std.length !== dim) {
      fail(`standardize: mean and std need ${dim} values (${featureDim} x ${spec.sizes.length} sizes), got ${mean.length} and ${std.length}`);
    }
    const bad = std.findIndex((s) => !(s > 0 && Number.isFinite(s)));
    if (bad >= 0) fail(`standardize: std[${bad}] is ${std[bad]}, expected a positive number`);
    const badMean = mean.findIndex((m) => !Number.isFinite(m));
    if (badMean >= 0) fail(`standardize: mean[${badMean}] is ${mean[badMean]}`);
  }

  if (spec.layers.length === 0) fail('layers: expected at least the softmax output layer');
  let inputs = dim;
  spec.layers.forEach((layer, index) => {
    const last = index === spec.layers.length - 1;
    const where = `layers[${index}]`;
    if (layer.activation !== (last ? 'softmax' : 'relu')) fail(`${where}.activation: expected ${last ? 'softmax' : 'relu'}, got ${layer.activation}`);
    if (layer.inputs !== inputs) fail(`${where}.inputs: expected ${inputs} (the previous block's width), got ${layer.inputs}`);
    if (layer.kernel.length !== layer.inputs * layer.units) {
      fail(`${where}.kernel: expected ${layer.inputs} x ${layer.units} = ${layer.inputs * layer.units} values, got ${layer.kernel.length}`);
    }
    if (layer.bias.length !== layer.units) fail(`${where}.bias: expected ${layer.units} values, got ${layer.bias.length}`);
    inputs = layer.units;
  });
  if (inputs !== spec.labels.length) fail(`layers: the output layer has ${inputs} units for ${spec.labels.length} labels`);
}
