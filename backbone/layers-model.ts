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
  readonly size: InputSize;
  /** Without a head the model outputs the pooled features [batch, featureDim]. */
  readonly head?: HeadWeights;
  readonly name?: string;
}

/** The Keras name of the ReLU6 after a conv: `Conv1_relu`, `block_3_expand_relu`, ..., `out_relu`. */
const reluName = (arch: Architecture, layer: ConvLayer) => (layer === arch.head ? 'out_relu' : `${layer.name}_relu`);

/**
 * Builds the model with its weights set. The caller owns it (model.dispose() frees the
 * weight variables). Throws if a layer's weights are missing or shaped unlike the architecture.
 */
export function buildLayersModel(spec: LayersModelSpec): tf.LayersModel {
  const { arch, size, head } = spec;
  const weightsOf = new Map<tf.layers.Layer, { layer: ConvLayer }>();
  const denseWeights = new Map<tf.layers.Layer, DenseWeights>();

  const input = tf.input({ shape: [size.height, size.width, 3], dtype: 'float32', name: 'input_1' });
  let x = tf.layers
    .rescaling({ scale: 1 / PREPROCESSING.scale, offset: -PREPROCESSING.offset, name: 'rescaling' })
    .apply(input) as tf.SymbolicTensor;

  const conv = (layer: ConvLayer, from: tf.SymbolicTensor): tf.SymbolicTensor => {
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
    const built =
      layer.kind === 'depthwise'
        ? tf.layers.depthwiseConv2d({ ...common, depthMultiplier: 1, depthwiseInitializer: 'zeros' })
        : tf.layers.conv2d({ ...common, filters: layer.outChannels, kernelInitializer: 'zeros' });
    weightsOf.set(built, { layer });
    let y = built.apply(from) as tf.SymbolicTensor;
    if (layer.relu6) y = tf.layers.reLU({ maxValue: 6, name: reluName(arch, layer) }).apply(y) as tf.SymbolicTensor;
    return y;
  };

  x = walkNetwork(arch, x, {
    conv,
    add: (a, b, block) => tf.layers.add({ name: `${block.name}_add` }).apply([a, b]) as tf.SymbolicTensor,
  });
  x = tf.layers.globalAveragePooling2d({ name: 'global_average_pooling2d' }).apply(x) as tf.SymbolicTensor;

  if (head) {
    if (head.layers[0]?.inputs !== arch.featureDim) {
      throw new UserError(`the head expects ${head.layers[0]?.inputs} features, the backbone gives ${arch.featureDim}`);
    }
    head.layers.forEach((weights, i) => {
      const last = i === head.layers.length - 1;
      x = tf.layers.dropout({ rate: head.dropout, name: i ? `dropout_${i}` : 'dropout' }).apply(x) as tf.SymbolicTensor;
      const dense = tf.layers.dense({
        units: weights.units,
        activation: last ? 'softmax' : 'relu',
        useBias: true,
        kernelInitializer: 'zeros',
        name: weights.name,
      });
      denseWeights.set(dense, weights);
      x = dense.apply(x) as tf.SymbolicTensor;
    });
  }

  const alphaTag = arch.alpha.toFixed(2);
  const model = tf.model({ inputs: input, outputs: x, name: spec.name ?? `mobilenetv2_${alphaTag}_${size.height}x${size.width}` });
  try {
    for (const [built, { layer }] of weightsOf) {
      const weights = spec.layers.get(layer.name);
      if (!weights) throw new Error(`no weights for layer ${layer.name}`);
      setWeights(built, [
        [weights.kernel, kernelShape(layer)],
        [weights.bias, [layer.outChannels]],
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

