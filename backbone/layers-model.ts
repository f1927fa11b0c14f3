/**
 * The backbone (and optionally a trained dense head) as a tf.LayersModel, for export.
 * Built by walking the same Architecture the fused engine walks (backbone/tfjs-backbone.ts),
 * with the same folded (kernel, bias) pairs, so its output equals the cached features:
 *
 *   Input [null, H, W, 3] float pixels 0..255
 *   -> Rescaling(1/127.5, -1)                       (PREPROCESSING, inside the model)
 *   -> Conv2D / DepthwiseConv2D, bias, 'same'        (BatchNorm already folded)
 *      -> ReLU(max_value 6) where the layer has one  (Keras names: Conv1_relu ... out_relu)
 *   -> Add where a block is residual                 (block_N_add)
 *   -> GlobalAveragePooling2D
 *   [several sizes: one input per size (input_1, input_2, ...), every size through the
 *    same backbone layers (shared weights, stored once), pooled features concatenated]
 *   [standardisation: (x - mean) / std as a BatchNormalization layer named `standardize`]
 *   -> head: Dropout -> Dense softmax, or Dropout -> Dense relu -> Dropout -> Dense softmax
 *      (layer names as the run stored them: dense, dense_1)
 *
 * ReLU6 is a separate ReLU layer (as in Keras' MobileNetV2) rather than activation 'relu6'
 * on the conv: tfjs-layers only fuses relu/linear/elu into its conv kernel, so 'relu6'
 * would run as a separate op anyway, and Keras 2 cannot deserialize the 'relu6' name.
 * 'same' padding is tf.conv2d's 'same', the padding the fused engine uses.
 */
import * as tf from '@tensorflow/tfjs';
import { type Architecture, type ConvLayer, kernelShape, walkNetwork } from './mobilenetv2.js';
import { type InputSize, PREPROCESSING } from './preprocessing.js';
import type { ConvWeights } from './weights.js';
import { UserError } from '../core/errors.js';

/** A weight array as runs store it (cache/sweeps.ts NamedArray). */
export interface HeadArray {
  readonly name: string;
  readonly shape: readonly number[];
  readonly values: Float32Array;
}

/** One Dense layer of a head, in Keras layout: kernel [inputs, units] row-major. */
export interface DenseWeights {
  /** The run's layer name (`dense`, `dense_1`), kept as the exported layer's name. */
  readonly name: string;
  readonly kernel: Float32Array;
  readonly bias: Float32Array;
  readonly inputs: number;
  readonly units: number;
}

/**
 * A trained head: (Dropout -> Dense) per layer, ReLU between layers, softmax on the last.
 * Plain head: Dropout -> Dense softmax; with hidden units: Dropout -> Dense relu -> Dropout -> Dense softmax.
 */
export interface HeadWeights {
  readonly layers: readonly DenseWeights[];
  /** Dropout rate; identity at inference, kept so the exported topology matches training. */
  readonly dropout: number;
  readonly classes: number;
}

/** Where a stored layer sits in the head: Keras' sequential names dense, dense_1, ... */
function layerOrder(name: string): number | undefined {
  if (name === 'dense') return 0;
  const match = /^dense_(\d+)$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

/**
 * Reads a run's head from its stored arrays: `dense/kernel` [dim, classes] + `dense/bias`,
 * or with a hidden layer `dense/*` [dim, H] then `dense_1/*` [H, classes] (Keras' names). Every shape is checked against the chain.
 */
export function headFromArrays(arrays: readonly HeadArray[], featureDim: number, dropout: number): HeadWeights {
  const byName = new Map(arrays.map((a) => [a.name, a]));
  const prefixes = [...new Set(arrays.map((a) => a.name.replace(/\/[^/]*$/, '')))];
  const unknown = prefixes.filter((p) => layerOrder(p) === undefined);
  if (unknown.length > 0 || prefixes.length === 0) {
    throw new UserError(`the run's head has weights this exporter does not know: ${[...byName.keys()].join(', ') || 'none'}`);
  }
  prefixes.sort((a, b) => layerOrder(a)! - layerOrder(b)!);
  let inputs = featureDim;
  const layers = prefixes.map((name): DenseWeights => {
    const kernel = byName.get(`${name}/kernel`);
    const bias = byName.get(`${name}/bias`);
    const extra = arrays.filter((a) => a.name.startsWith(`${name}/`) && a !== kernel && a !== bias);
    if (!kernel || !bias || extra.length > 0) {
      throw new UserError(`the run's head layer ${name} should have exactly ${name}/kernel and ${name}/bias (has ${[...byName.keys()].join(', ')})`);
    }
    const [rows, units] = kernel.shape;
    if (kernel.shape.length !== 2 || rows !== inputs || bias.shape.length !== 1 || bias.shape[0] !== units) {
      throw new UserError(`the run's ${name} layer has kernel [${kernel.shape}] and bias [${bias.shape}]; expected [${inputs}, units] and [units]`);
    }
    inputs = units;
    return { name, kernel: kernel.values, bias: bias.values, inputs: rows, units };
  });
  return { layers, dropout, classes: inputs };
}

export interface LayersModelSpec {
  readonly arch: Architecture;
  readonly layers: ReadonlyMap<string, ConvWeights>;
  /** One input size, or several: one model input each, features concatenated in this order. */
  readonly size: InputSize | readonly InputSize[];
  /** Train mean and std of the (concatenated) features, applied before the head. */
  readonly standardize?: { readonly mean: Float32Array; readonly std: Float32Array } | null;
  /** Without a head the model outputs the pooled (concatenated) features [batch, featureDim * sizes]. */
  readonly head?: HeadWeights;
  readonly name?: string;
}

/**
 * BatchNormalization at inference is (x - movingMean) * gamma / sqrt(movingVariance + epsilon) + beta.
 * With movingVariance = 1 - 2^-10 and epsilon = 2^-10 (both exact in float32, summing to exactly 1)
 * and gamma = 1 / std it is (x - mean) / std up to one rounding, with layers every TF.js and Keras
 * runtime knows. Folding the division into the first Dense kernel instead would lose digits for
 * features whose std is tiny (W / std and mean * W / std nearly cancel).
 */
const STANDARDIZE_EPSILON = 2 ** -10;

/** The Keras name of the ReLU6 after a conv: `Conv1_relu`, `block_3_expand_relu`, ..., `out_relu`. */
const reluName = (arch: Architecture, layer: ConvLayer) => (layer === arch.head ? 'out_relu' : `${layer.name}_relu`);

/**
 * Builds the model with its weights set. The caller owns it (model.dispose() frees the
 * weight variables). Throws if a layer's weights are missing or shaped unlike the architecture.
 */
export function buildLayersModel(spec: LayersModelSpec): tf.LayersModel {
  const { arch, head } = spec;
  const sizes: readonly InputSize[] = 'height' in spec.size ? [spec.size] : spec.size;
  if (sizes.length === 0) throw new Error('buildLayersModel: no input size');
  const weightsOf = new Map<tf.layers.Layer, { layer: ConvLayer }>();
  const denseWeights = new Map<tf.layers.Layer, DenseWeights>();
  // Every size runs through the same layer objects: Keras' shared layers, one set of weights.
  const shared = new Map<string, tf.layers.Layer>();
  const once = <T extends tf.layers.Layer>(name: string, make: () => T): T => {
    if (!shared.has(name)) shared.set(name, make());
    return shared.get(name) as T;
  };
  const apply = (layer: tf.layers.Layer, from: tf.SymbolicTensor | tf.SymbolicTensor[]) => layer.apply(from) as tf.SymbolicTensor;

  const conv = (layer: ConvLayer, from: tf.SymbolicTensor): tf.SymbolicTensor => {
    const built = once(layer.name, () => {
      const common = {
        kernelSize: layer.kernel,
        strides: layer.stride,
        padding: 'same' as const,
        useBias: true,
        activation: 'linear' as const,
        // Overwritten by setWeights below; zeros skip drawing random numbers for nothing.
        biasInitializer: 'zeros' as const,
        name: layer.name,
      };
      const made =
        layer.kind === 'depthwise'
          ? tf.layers.depthwiseConv2d({ ...common, depthMultiplier: 1, depthwiseInitializer: 'zeros' })
          : tf.layers.conv2d({ ...common, filters: layer.outChannels, kernelInitializer: 'zeros' });
      weightsOf.set(made, { layer });
      return made;
    });
    let y = apply(built, from);
    if (layer.relu6) {
      const name = reluName(arch, layer);
      y = apply(once(name, () => tf.layers.reLU({ maxValue: 6, name })), y);
    }
    return y;
  };

  const backbone = (input: tf.SymbolicTensor): tf.SymbolicTensor => {
    let x = apply(once('rescaling', () => tf.layers.rescaling({ scale: 1 / PREPROCESSING.scale, offset: -PREPROCESSING.offset, name: 'rescaling' })), input);
    x = walkNetwork(arch, x, {
      conv,
      add: (a, b, block) => {
        const name = `${block.name}_add`;
        return apply(once(name, () => tf.layers.add({ name })), [a, b]);
      },
    });
    return apply(once('global_average_pooling2d', () => tf.layers.globalAveragePooling2d({ name: 'global_average_pooling2d' })), x);
  };

  const inputs = sizes.map((size, i) => tf.input({ shape: [size.height, size.width, 3], dtype: 'float32', name: `input_${i + 1}` }));
  const pooled = inputs.map(backbone);
  let x = pooled.length > 1 ? apply(tf.layers.concatenate({ axis: -1, name: 'concatenate' }), pooled) : pooled[0];
  const dim = arch.featureDim * sizes.length;

  let standardize: tf.layers.Layer | undefined;
  if (spec.standardize) {
    if (spec.standardize.mean.length !== dim || spec.standardize.std.length !== dim) {
      throw new UserError(`standardize: mean and std need ${dim} values, got ${spec.standardize.mean.length} and ${spec.standardize.std.length}`);
    }
    standardize = tf.layers.batchNormalization({ axis: -1, epsilon: STANDARDIZE_EPSILON, name: 'standardize' });
    x = apply(standardize, x);
  }

  if (head) {
    if (head.layers[0]?.inputs !== dim) {
      throw new UserError(`the head expects ${head.layers[0]?.inputs} features, the backbone gives ${dim} (${arch.featureDim} x ${sizes.length} sizes)`);
    }
    head.layers.forEach((weights, i) => {
      const last = i === head.layers.length - 1;
      x = apply(tf.layers.dropout({ rate: head.dropout, name: i ? `dropout_${i}` : 'dropout' }), x);
      const dense = tf.layers.dense({
        units: weights.units,
        activation: last ? 'softmax' : 'relu',
        useBias: true,
        kernelInitializer: 'zeros',
        name: weights.name,
      });
      denseWeights.set(dense, weights);
      x = apply(dense, x);
    });
  }

  const alphaTag = arch.alpha.toFixed(2);
  const sizeTag = sizes.map((size) => `${size.height}x${size.width}`).join('_');
  const model = tf.model({ inputs: inputs.length > 1 ? inputs : inputs[0], outputs: x, name: spec.name ?? `mobilenetv2_${alphaTag}_${sizeTag}` });
  try {
    for (const [built, { layer }] of weightsOf) {
      const weights = spec.layers.get(layer.name);
      if (!weights) throw new Error(`no weights for layer ${layer.name}`);
      setWeights(built, [
        [weights.kernel, kernelShape(layer)],
        [weights.bias, [layer.outChannels]],
      ]);
    }
    if (standardize && spec.standardize) {
      const { mean, std } = spec.standardize;
      const bad = std.findIndex((s) => !(s > 0 && Number.isFinite(s)));
      if (bad >= 0) throw new UserError(`standardize: std[${bad}] is ${std[bad]}, expected a positive number`);
      // Order of a BatchNormalization layer's weights: gamma, beta, moving mean, moving variance.
      setWeights(standardize, [
        [Float32Array.from(std, (s) => 1 / s), [dim]],
        [new Float32Array(dim), [dim]],
        [mean, [dim]],
        [new Float32Array(dim).fill(1 - STANDARDIZE_EPSILON), [dim]],
      ]);
    }
    for (const [built, weights] of denseWeights) {
      setWeights(built, [
        [weights.kernel, [weights.inputs, weights.units]],
        [weights.bias, [weights.units]],
      ]);
    }
  } catch (error) {
    model.dispose();
    throw error;
  }
  return model;
}

function setWeights(layer: tf.layers.Layer, arrays: [Float32Array, number[]][]): void {
  const tensors = arrays.map(([values, shape]) => {
    const expected = shape.reduce((a, b) => a * b, 1);
    if (values.length !== expected) throw new Error(`layer ${layer.name}: ${values.length} values for shape [${shape}]`);
    return tf.tensor(values, shape, 'float32');
  });
  try {
    layer.setWeights(tensors);
  } finally {
    for (const t of tensors) t.dispose();
  }
}

