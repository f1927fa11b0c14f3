/**
 * The classifier of backbone/onnx-classifier.ts computed piece by piece outside its graph,
 * as the yardstick the ONNX model is checked against:
 * - views: plain index arithmetic on RGB bytes (checked against sharp's flip/flop/rotate);
 * - resize: ONNX Resize alone in a tiny ORT graph with the classifier's settings, to sizes
 *   and crop offsets computed here (cover: scale, round half up, centre crop);
 * - backbone: the project's ONNX engine (backbone/engine.ts) on the resized 8-bit pixels;
 * - standardisation, dense layers, softmax and the mean over views in float64 JS.
 */
import type { InferenceSession } from 'onnxruntime-node';
import { type ClassifierSpec, type VIEW_NAMES, type ViewName } from '../../backbone/classifier-spec.js';
import { type View, applyView, parseView } from '../../data/views.js';
import { type Engine, startEngine } from '../../backbone/engine.js';
import { RESIZE_ATTRIBUTES } from '../../backbone/onnx-classifier.js';
import { DataType, GraphWriter, OPSET_18, encodeModel, valueInfo } from '../../backbone/onnx-graph.js';
import type { InputSize, ResizeMode } from '../../backbone/preprocessing.js';
import { decodeImage } from '../../data/images.js';
import sharp from 'sharp';
import type { BackboneWeights } from '../../backbone/weights.js';
import { softmaxInto } from '../../stages/sweep/head.js';

/** Decoded RGB, row-major [height, width, 3]. */
export interface RgbImage {
  readonly data: Uint8Array;
  readonly height: number;
  readonly width: number;
}

/** A view of an RGB image by index arithmetic; rotations are clockwise. */
export function viewImage(image: RgbImage, view: ViewName): RgbImage {
  if (view.startsWith('crop:')) {
    // A window of the pixels: data/views.ts, which extraction uses, is the definition.
    const cropped = applyView(image, parseView(view) as View);
    return { data: cropped.data, height: cropped.height, width: cropped.width };
  }
  const { data, height: h, width: w } = image;
  const turned = view === 'rot90' || view === 'rot270';
  const [oh, ow] = turned ? [w, h] : [h, w];
  const out = new Uint8Array(data.length);
  for (let i = 0; i < oh; i++) {
    for (let j = 0; j < ow; j++) {
      // (y, x): the source pixel of output pixel (i, j).
      const [y, x] = {
        original: [i, j],
        hflip: [i, w - 1 - j],
        vflip: [h - 1 - i, j],
        rot180: [h - 1 - i, w - 1 - j],
        rot90: [h - 1 - j, i],
        rot270: [j, w - 1 - i],
      }[view as (typeof VIEW_NAMES)[number]];
      const from = (y * w + x) * 3;
      const to = (i * ow + j) * 3;
      out[to] = data[from];
      out[to + 1] = data[from + 1];
      out[to + 2] = data[from + 2];
    }
  }
  return { data: out, height: oh, width: ow };
}

/** What the cover resize does to an h x w image: the scaled size, then the crop's top-left corner. */
export function coverGeometry(height: number, width: number, size: InputSize) {
  // float32 throughout, as the graph computes it.
  const scale = Math.max(Math.fround(size.height / height), Math.fround(size.width / width));
  const round = (side: number) => Math.floor(Math.fround(Math.fround(side * scale) + 0.5));
  const scaled = { height: round(height), width: round(width) };
  return { scaled, top: Math.floor((scaled.height - size.height + 1) / 2), left: Math.floor((scaled.width - size.width + 1) / 2) };
}

/** ONNX Resize with the classifier's settings as a graph of its own; rounding to 8-bit levels happens in JS. */
export class OnnxResizer {
  private constructor(private readonly ort: typeof import('onnxruntime-node'), private readonly session: InferenceSession) {}

  static async create(): Promise<OnnxResizer> {
    const ort = await import('onnxruntime-node');
    const graph = new GraphWriter();
    graph.node('Resize', 'resized', ['pixels', '', '', 'sizes'], RESIZE_ATTRIBUTES);
    const model = encodeModel(graph, {
      name: 'resize',
      inputs: [valueInfo('pixels', DataType.FLOAT, [1, 3, 'height', 'width']), valueInfo('sizes', DataType.INT64, [2])],
      outputs: [valueInfo('resized', DataType.FLOAT, [1, 3, 'out_height', 'out_width'])],
      ...OPSET_18,
    });
    return new OnnxResizer(ort, await ort.InferenceSession.create(model));
  }

  /** The image resized to exactly `size` (fill), or to cover it and centre-cropped (cover). */
  async resize(image: RgbImage, size: InputSize, mode: ClassifierSpec['resize']): Promise<RgbImage> {
    const geometry = mode === 'cover' ? coverGeometry(image.height, image.width, size) : { scaled: size, top: 0, left: 0 };
    const { height: h, width: w } = image;
    const planar = new Float32Array(h * w * 3);
    for (let p = 0; p < h * w; p++) for (let c = 0; c < 3; c++) planar[c * h * w + p] = image.data[p * 3 + c];
    const { resized } = await this.session.run({
      pixels: new this.ort.Tensor('float32', planar, [1, 3, h, w]),
      sizes: new this.ort.Tensor('int64', BigInt64Array.of(BigInt(geometry.scaled.height), BigInt(geometry.scaled.width)), [2]),
    });
    const out = resized.data as Float32Array;
    const [sh, sw] = [geometry.scaled.height, geometry.scaled.width];
    // Assigning to a Uint8ClampedArray clips to 0..255 and rounds half to even, as the graph's Clip(Round(x)).
    const data = new Uint8ClampedArray(size.height * size.width * 3);
    for (let y = 0; y < size.height; y++) {
      for (let x = 0; x < size.width; x++) {
        for (let c = 0; c < 3; c++) {
          data[(y * size.width + x) * 3 + c] = out[(c * sh + y + geometry.top) * sw + x + geometry.left];
        }
      }
    }
    return { data: new Uint8Array(data.buffer), height: size.height, width: size.width };
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

/** The project's ONNX engine, one per input size (started when first needed), for up to `batchSize` images a call. */
export class EngineBySize {
  private readonly engines = new Map<string, Promise<Engine>>();

  constructor(private readonly weights: BackboneWeights, private readonly batchSize: number) {}

  /** Pooled features of same-size images: one Float32Array per image. */
  async features(images: readonly RgbImage[]): Promise<Float32Array[]> {
    const size = { height: images[0].height, width: images[0].width };
    const key = `${size.height}x${size.width}`;
    if (!this.engines.has(key)) {
      const backend = { backend: 'onnx', reason: 'test', workers: 1 } as const;
      this.engines.set(key, startEngine({ weights: this.weights, backend, size, batchSize: this.batchSize }));
    }
    const engine = await this.engines.get(key)!;
    const pixels = new Uint8Array(images.length * size.height * size.width * 3);
    images.forEach((image, i) => pixels.set(image.data, i * image.data.length));
    const features = await engine.run(pixels, images.length);
    const dim = features.length / images.length;
    return images.map((_, i) => features.slice(i * dim, (i + 1) * dim));
  }

  async close(): Promise<void> {
    for (const engine of this.engines.values()) await (await engine).close();
    this.engines.clear();
  }
}

/** The head on one view's concatenated features: standardize, dense layers (relu / softmax), in float64. */
export function headProbabilities(spec: ClassifierSpec, features: Float32Array): Float64Array {
  let x = Float64Array.from(features);
  if (spec.standardize) {
    const { mean, std } = spec.standardize;
    x = x.map((v, i) => (v - mean[i]) / std[i]);
  }
  for (const layer of spec.layers) {
    const y = Float64Array.from(layer.bias);
    for (let i = 0; i < layer.inputs; i++) {
      if (x[i] === 0) continue;
      for (let u = 0; u < layer.units; u++) y[u] += x[i] * layer.kernel[i * layer.units + u];
    }
    if (layer.activation === 'relu') {
      x = y.map((v) => Math.max(0, v));
    } else {
      x = new Float64Array(layer.units);
      softmaxInto(x, y);
    }
  }
  return x;
}

export interface ReferenceResult {
  /** Mean over views: what the ONNX model's `probabilities` should be. */
  readonly probabilities: Float64Array;
  /** Each view's own probabilities, in spec.views order. */
  readonly perView: Float64Array[];
  /** Each view's concatenated features, before standardisation. */
  readonly features: Float32Array[];
}

/**
 * The classifier's output for one decoded image, piece by piece. `resized(view, size)` gives
 * the 8-bit input of one view at one size; the default is the ONNX resizer above.
 */
export async function referenceClassifier(
  backbone: EngineBySize,
  spec: ClassifierSpec,
  resized: (view: ViewName, size: InputSize) => Promise<RgbImage>,
): Promise<ReferenceResult> {
  const blocks: Float32Array[][] = [];
  for (const size of spec.sizes) {
    const inputs = [];
    for (const view of spec.views) inputs.push(await resized(view, size));
    blocks.push(await backbone.features(inputs));
  }
  const dim = blocks[0][0].length;
  const features = spec.views.map((_, v) => {
    const concatenated = new Float32Array(dim * spec.sizes.length);
    blocks.forEach((perView, s) => concatenated.set(perView[v], s * dim));
    return concatenated;
  });
  const perView = features.map((f) => headProbabilities(spec, f));
  const probabilities = new Float64Array(spec.labels.length);
  for (const p of perView) p.forEach((value, k) => (probabilities[k] += value / perView.length));
  return { probabilities, perView, features };
}

/** The default `resized` of referenceClassifier: JS views, then ONNX Resize alone. */
export function onnxResized(resizer: OnnxResizer, image: RgbImage, mode: ClassifierSpec['resize']) {
  return (view: ViewName, size: InputSize) => resizer.resize(viewImage(image, view), size, mode);
}

/** Decoded upright RGB at full size, as a predictor hands it to the model. */
export async function decodeFull(bytes: Uint8Array): Promise<RgbImage> {
  const { data, info } = await sharp(bytes).autoOrient().toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, height: info.height, width: info.width };
}

/**
 * A `resized` for referenceClassifier that makes each view's input the way `pipeline extract`
 * does: sharp's resize (decodeImage). The original goes in as the file itself, exactly as
 * extract reads it; other views as lossless PNGs of their pixels.
 */
export function sharpResized(bytes: Uint8Array, image: RgbImage, mode: ResizeMode) {
  return async (view: ViewName, size: InputSize): Promise<RgbImage> => {
    const viewed = viewImage(image, view);
    const input = view === 'original' ? bytes : await sharp(viewed.data, { raw: { width: viewed.width, height: viewed.height, channels: 3 } }).png().toBuffer();
    return { data: await decodeImage(input, size, mode), ...size };
  };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}
