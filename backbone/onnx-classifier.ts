/**
 * A whole classifier (classifier-spec.ts) as ONE ONNX model: decoded image in,
 * probabilities out. Everything between, views, resizing, the backbone at every size, the
 * standardisation and the head, runs inside the graph, so a runtime needs nothing but
 * the image's RGB bytes.
 *
 *   image uint8 [H0, W0, 3] -> float NCHW [1, 3, H0, W0]
 *   for each view: flip (Slice, step -1) / rotate (Transpose + flip) / crop (Slice of a window)
 *     for each size: Resize (cubic, antialiased) [+ centre crop for cover] -> [1, 3, H, W]
 *   for each size: the views as one batch [V, 3, H, W] -> round to 8-bit levels
 *     -> x / 127.5 - 1 -> backbone (weights shared by all sizes) -> pooled [V, featureDim]
 *   concat over sizes [V, featureDim * S] -> (x - mean) / std -> dense layers -> softmax
 *   -> mean over views [classes]
 */
import { type ClassifierSpec, type ViewName, checkClassifierSpec } from './classifier-spec.js';
import { DataType, GraphWriter, OPSET_18, backboneFeatures, encodeModel, scalePixels, valueInfo } from './onnx-graph.js';
import { type InputSize, formatSize } from './preprocessing.js';
import type { NetworkWeights } from './weights.js';
import { type View, parseView } from '../data/views.js';

export const CLASSIFIER_INPUT = 'image';
export const CLASSIFIER_OUTPUT = 'probabilities';

/** Slice's "to the far end" for a negative step: any value below -dim clamps to before the first element. */
const INT64_MIN = -(2 ** 63);

/**
 * Resize settings shared by every resize of the graph, chosen to come close to sharp's
 * default (lanczos3), which made the features the head was trained on. half_pixel centres
 * pixels as libvips does when shrinking; antialias widens the kernel when shrinking, as
 * sharp's reduce does, instead of sampling only the nearest source pixels. Cubic (Keys,
 * a = -0.75, ONNX's default) rather than linear: TrashNet photos shrunk to 224x224 land
 * 0.29 8-bit levels from sharp's on average (linear: 1.13), and a trained head's top class
 * agrees with the sharp-fed one on 99.1% of the test photos (linear: 96.3%;
 * bench/classifier-resize.ts). Enlarging stays further from sharp: libvips samples output
 * pixel i at i / scale - 0.5, a mapping no ONNX coordinate mode has.
 */
export const RESIZE_ATTRIBUTES = { mode: 'cubic', coordinate_transformation_mode: 'half_pixel', antialias: 1, axes: [2, 3] } as const;

/** A 1-D constant used by several views or sizes: added to the graph on first use. */
function int64s(graph: GraphWriter, name: string, values: readonly number[]): string {
  return graph.has(name) ? name : graph.int64(name, [values.length], values);
}

function floats(graph: GraphWriter, name: string, values: readonly number[]): string {
  return graph.has(name) ? name : graph.constant(name, [values.length], Float32Array.from(values));
}

/** Flips an NCHW tensor along the given axes (2 = rows, 3 = columns) with negative-step Slices. */
function flip(graph: GraphWriter, x: string, axes: readonly (2 | 3)[], name: string): string {
  const key = `flip_${axes.join('')}`;
  const starts = int64s(graph, `${key}/starts`, axes.map(() => -1));
  const ends = int64s(graph, `${key}/ends`, axes.map(() => INT64_MIN));
  const steps = int64s(graph, `${key}/steps`, axes.map(() => -1));
  return graph.node('Slice', name, [x, starts, ends, int64s(graph, `${key}/axes`, axes), steps]);
}

/**
 * One view of the NCHW image. A clockwise quarter turn is a transpose followed by a
 * horizontal flip (out[i][j] = in[H-1-j][i]); a counter-clockwise one (rot270) a transpose
 * followed by a vertical flip.
 */
function applyView(graph: GraphWriter, image: string, view: ViewName): string {
  const name = `view_${view}`;
  const transpose = () => graph.node('Transpose', `${name}/transpose`, [image], { perm: [0, 1, 3, 2] });
  if (view.startsWith('crop:')) return crop(graph, image, parseView(view) as Extract<View, { kind: 'crop' }>, name);
  switch (view) {
    case 'original': return image;
    case 'hflip': return flip(graph, image, [3], name);
    case 'vflip': return flip(graph, image, [2], name);
    case 'rot180': return flip(graph, image, [2, 3], name);
    case 'rot90': return flip(graph, transpose(), [3], name);
    case 'rot270': return flip(graph, transpose(), [2], name);
  }
  throw new Error(`view ${view}: no graph for it`);
}

/**
 * The crop view of data/views.ts on the run-time shape: a window of max(1, round(side * F))
 * per side, at the top/left (0), the far end (the spare pixels) or the centre (half of them,
 * rounded down). The window is computed in float64 so it rounds exactly as JavaScript does.
 */
function crop(graph: GraphWriter, image: string, view: Extract<View, { kind: 'crop' }>, name: string): string {
  const shape = graph.node('Shape', `${name}/shape`, [image]);
  const hw = graph.node('Slice', `${name}/hw`, [shape, int64s(graph, 'cover/hw_start', [2]), int64s(graph, 'cover/hw_end', [4])]);
  const scaled = graph.node('Mul', `${name}/scaled`, [graph.node('Cast', `${name}/hw_double`, [hw], { to: DataType.DOUBLE }), graph.float64(`${name}/fraction`, [], [view.fraction])]);
  const half = graph.has('crop/half') ? 'crop/half' : graph.float64('crop/half', [], [0.5]);
  const rounded = graph.node('Floor', `${name}/rounded`, [graph.node('Add', `${name}/scaled_plus_half`, [scaled, half])]);
  const window = graph.node('Max', `${name}/window`, [graph.node('Cast', `${name}/window_raw`, [rounded], { to: DataType.INT64 }), int64s(graph, 'cover/one', [1])]);
  const spare = graph.node('Sub', `${name}/spare`, [hw, window]);
  // Per axis (rows, columns): start = spare * numerator / denominator.
  const share = (edge: 'near' | 'far' | 'middle') => (edge === 'near' ? [0, 1] : edge === 'far' ? [1, 1] : [1, 2]);
  const rows = share(view.position === 'tl' || view.position === 'tr' ? 'near' : view.position === 'bl' || view.position === 'br' ? 'far' : 'middle');
  const cols = share(view.position === 'tl' || view.position === 'bl' ? 'near' : view.position === 'tr' || view.position === 'br' ? 'far' : 'middle');
  const numerator = graph.int64(`${name}/numerator`, [2], [rows[0], cols[0]]);
  const denominator = graph.int64(`${name}/denominator`, [2], [rows[1], cols[1]]);
  const starts = graph.node('Div', `${name}/starts`, [graph.node('Mul', `${name}/spare_share`, [spare, numerator]), denominator]);
  const ends = graph.node('Add', `${name}/ends`, [starts, window]);
  return graph.node('Slice', name, [image, starts, ends, int64s(graph, 'cover/spatial_axes', [2, 3])]);
}

/** Stretches an NCHW image to exactly height x width. */
function resizeFill(graph: GraphWriter, x: string, size: InputSize, scope: string): string {
  const target = int64s(graph, `size_${formatSize(size)}/hw`, [size.height, size.width]);
  return graph.node('Resize', `${scope}resized`, [x, '', '', target], RESIZE_ATTRIBUTES);
}

/**
 * Scales an NCHW image by s = max(H / h, W / w) so it covers H x W, each side rounded half up
 * (round(h * s), as libvips rounds a resize's output size), then keeps the centre H x W,
 * starting at (excess + 1) / 2 rows and columns in as sharp's centre gravity does. Both
 * steps read the image's run-time shape.
 */
function resizeCover(graph: GraphWriter, x: string, size: InputSize, scope: string): string {
  const key = `size_${formatSize(size)}`;
  const target = int64s(graph, `${key}/hw`, [size.height, size.width]);
  const targetFloat = floats(graph, `${key}/hw_float`, [size.height, size.width]);
  const spatial = int64s(graph, 'cover/spatial_axes', [2, 3]);

  // Shape [1, 3, h, w] -> [h, w] as floats.
  const shape = graph.node('Shape', `${scope}shape`, [x]);
  const hw = graph.node('Slice', `${scope}hw`, [shape, int64s(graph, 'cover/hw_start', [2]), int64s(graph, 'cover/hw_end', [4])]);
  const hwFloat = graph.node('Cast', `${scope}hw_float`, [hw], { to: DataType.FLOAT });
  const ratios = graph.node('Div', `${scope}ratios`, [targetFloat, hwFloat]);
  const scale = graph.node('ReduceMax', `${scope}scale`, [ratios, int64s(graph, 'cover/first_axis', [0])], { keepdims: 1 });
  const scaled = graph.node('Add', `${scope}scaled_plus_half`, [graph.node('Mul', `${scope}scaled`, [hwFloat, scale]), floats(graph, 'cover/half', [0.5])]);
  const sizes = graph.node('Cast', `${scope}cover_hw`, [graph.node('Floor', `${scope}scaled_rounded`, [scaled])], { to: DataType.INT64 });
  const resized = graph.node('Resize', `${scope}resized`, [x, '', '', sizes], RESIZE_ATTRIBUTES);
  // Integer division of non-negative numbers: floor((excess + 1) / 2).
  const excessPlusOne = graph.node('Add', `${scope}excess_plus_one`, [graph.node('Sub', `${scope}excess`, [sizes, target]), int64s(graph, 'cover/one', [1])]);
  const starts = graph.node('Div', `${scope}crop_starts`, [excessPlusOne, int64s(graph, 'cover/two', [2])]);
  const ends = graph.node('Add', `${scope}crop_ends`, [starts, target]);
  return graph.node('Slice', `${scope}cropped`, [resized, starts, ends, spatial]);
}

/** x [batch, inputs] -> activation(x W + b). */
function dense(graph: GraphWriter, x: string, layer: ClassifierSpec['layers'][number], index: number): string {
  const kernel = graph.constant(`head/${index}/kernel`, [layer.inputs, layer.units], layer.kernel);
  const bias = graph.constant(`head/${index}/bias`, [layer.units], layer.bias);
  const y = graph.node('Add', `head/${index}/logits`, [graph.node('MatMul', `head/${index}/matmul`, [x, kernel]), bias]);
  return layer.activation === 'relu'
    ? graph.node('Relu', `head/${index}/relu`, [y])
    : graph.node('Softmax', `head/${index}/softmax`, [y], { axis: 1 });
}

/**
 * Serialized ModelProto of the classifier: `image` uint8 [height, width, 3] (any size) in,
 * `probabilities` float32 [classes] out. Throws a UserError when the spec does not fit the
 * backbone (classifier-spec.ts, checkClassifierSpec).
 */
export function buildClassifierOnnx(weights: NetworkWeights, spec: ClassifierSpec): Uint8Array {
  const { arch } = weights;
  checkClassifierSpec(spec, arch.featureDim);
  const graph = new GraphWriter();

  const chw = graph.node('Transpose', 'image_chw', [CLASSIFIER_INPUT], { perm: [2, 0, 1] });
  const image = graph.node('Unsqueeze', 'image_nchw', [graph.node('Cast', 'image_float', [chw], { to: DataType.FLOAT }), int64s(graph, 'batch_axis', [0])]);
  graph.constant('levels/min', [], Float32Array.of(0));
  graph.constant('levels/max', [], Float32Array.of(255));
  const views = spec.views.map((view) => ({ view, pixels: applyView(graph, image, view) }));

  const blocks = spec.sizes.map((size) => {
    const sizeScope = `size_${formatSize(size)}/`;
    const resized = views.map(({ view, pixels }) => {
      const scope = `${sizeScope}${view}/`;
      return spec.resize === 'fill' ? resizeFill(graph, pixels, size, scope) : resizeCover(graph, pixels, size, scope);
    });
    const batch = graph.node('Concat', `${sizeScope}views`, resized, { axis: 0 });
    // The cached features were computed from 8-bit pixels; rounding and clipping here give the
    // backbone the same levels (cubic kernels overshoot a little at sharp edges).
    const levels = graph.node('Clip', `${sizeScope}levels`, [graph.node('Round', `${sizeScope}rounded`, [batch]), 'levels/min', 'levels/max']);
    return backboneFeatures(graph, weights, scalePixels(graph, levels, sizeScope), `${sizeScope}features`, sizeScope);
  });
  let x = graph.node('Concat', 'features', blocks, { axis: 1 });

  if (spec.standardize) {
    const dim = arch.featureDim * spec.sizes.length;
    const mean = graph.constant('standardize/mean', [dim], spec.standardize.mean);
    const std = graph.constant('standardize/std', [dim], spec.standardize.std);
    x = graph.node('Div', 'standardized', [graph.node('Sub', 'centred', [x, mean]), std]);
  }
  spec.layers.forEach((layer, index) => {
    x = dense(graph, x, layer, index);
  });
  graph.node('ReduceMean', CLASSIFIER_OUTPUT, [x, int64s(graph, 'batch_axis', [0])], { keepdims: 0 });

  return encodeModel(graph, {
    name: `${arch.name}_${arch.alpha}_classifier`,
    inputs: [valueInfo(CLASSIFIER_INPUT, DataType.UINT8, ['height', 'width', 3])],
    outputs: [valueInfo(CLASSIFIER_OUTPUT, DataType.FLOAT, [spec.labels.length])],
    ...OPSET_18,
  });
}

/** An ONNX Runtime session of a model from buildClassifierOnnx. */
export interface OnnxClassifierSession {
  /** Class probabilities of one decoded RGB image (row-major, 3 bytes per pixel). */
  classify(image: { readonly data: Uint8Array; readonly width: number; readonly height: number }): Promise<Float32Array>;
  release(): Promise<void>;
}

/** Opens a session on the model's bytes (CPU execution provider); throws ORT's error when they are not a valid model. */
export async function openClassifierSession(model: Uint8Array): Promise<OnnxClassifierSession> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(model);
  return {
    async classify(image) {
      const input = new ort.Tensor('uint8', image.data, [image.height, image.width, 3]);
      const outputs = await session.run({ [CLASSIFIER_INPUT]: input });
      const output = outputs[CLASSIFIER_OUTPUT];
      return Float32Array.from(output.data as Float32Array);
    },
    release: () => session.release(),
  };
}
