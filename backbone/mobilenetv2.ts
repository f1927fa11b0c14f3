/**
 * MobileNetV2 (Sandler et al. 2018) as Keras applications defines it, without the
 * classifier: Conv1 -> 17 inverted-residual blocks -> Conv_1 (1x1, 1280) -> ReLU6
 * ("out_relu") -> global average pooling.
 *
 * This file is the single definition of the network's shape. Weight files only
 * carry numbers; every renderer of the network (the tfjs engine, the tf.layers model
 * that export writes, the ONNX graph) goes through walkNetwork below and supplies only
 * how one convolution and one residual add look in its library.
 */

/** One convolution of the network after BatchNorm folding: conv + bias (+ ReLU6). */
export interface ConvLayer {
  /** Keras layer name, which is also the weight name prefix (`Conv1`, `block_3_expand`, ...). */
  readonly name: string;
  /** Keras name of the BatchNorm layer that follows it in the unfolded layout. */
  readonly bnName: string;
  readonly kind: 'conv' | 'depthwise';
  readonly kernel: 1 | 3;
  readonly stride: 1 | 2;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly relu6: boolean;
}

/** An inverted-residual block: optional 1x1 expand, 3x3 depthwise, 1x1 linear project. */
export interface Block {
  /** Keras' name prefix of the block's layers: `expanded_conv`, `block_1`, ... */
  readonly name: string;
  readonly expand?: ConvLayer;
  readonly depthwise: ConvLayer;
  readonly project: ConvLayer;
  /** Stride 1 and same width in and out: the block's input is added to its output. */
  readonly residual: boolean;
}

export interface Architecture {
  readonly name: string;
  readonly alpha: number;
  readonly stem: ConvLayer;
  readonly blocks: readonly Block[];
  readonly head: ConvLayer;
  readonly featureDim: number;
}

/** (expansion t, base channels c, repeats n, first stride s), from the paper's Table 2. */
const STAGES: ReadonlyArray<readonly [number, number, number, 1 | 2]> = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

/** Keras builds every BatchNormalization of MobileNetV2 with this epsilon. */
export const BN_EPSILON = 1e-3;

/** The width multipliers Keras publishes ImageNet weights for. */
export const PUBLISHED_ALPHAS = [0.35, 0.5, 0.75, 1.0, 1.3, 1.4] as const;

/** Keras' `_make_divisible`: round to a multiple of 8, never dropping more than 10%. */
export function makeDivisible(value: number, divisor = 8): number {
  let rounded = Math.max(divisor, Math.floor((value + divisor / 2) / divisor) * divisor);
  if (rounded < 0.9 * value) rounded += divisor;
  return rounded;
}

function conv(
  name: string,
  bnName: string,
  kind: ConvLayer['kind'],
  kernel: 1 | 3,
  stride: 1 | 2,
  inChannels: number,
  outChannels: number,
  relu6: boolean,
): ConvLayer {
  return { name, bnName, kind, kernel, stride, inChannels, outChannels, relu6 };
}

export function mobilenetV2(alpha: number): Architecture {
  const stemChannels = makeDivisible(32 * alpha);
  const stem = conv('Conv1', 'bn_Conv1', 'conv', 3, 2, 3, stemChannels, true);
  const blocks: Block[] = [];
  let channels = stemChannels;
  let index = 0;
  for (const [expansion, baseChannels, repeats, firstStride] of STAGES) {
    const outChannels = makeDivisible(baseChannels * alpha);
    for (let r = 0; r < repeats; r++) {
      const stride = r === 0 ? firstStride : 1;
      // Keras names the first block `expanded_conv` and the rest `block_N`.
      const prefix = index === 0 ? 'expanded_conv' : `block_${index}`;
      const bn = (layer: string) => `${prefix}_${layer}_BN`;
      const hidden = channels * expansion;
      const expand =
        expansion === 1 ? undefined : conv(`${prefix}_expand`, bn('expand'), 'conv', 1, 1, channels, hidden, true);
      blocks.push({
        name: prefix,
        expand,
        depthwise: conv(`${prefix}_depthwise`, bn('depthwise'), 'depthwise', 3, stride, hidden, hidden, true),
        project: conv(`${prefix}_project`, bn('project'), 'conv', 1, 1, hidden, outChannels, false),
        residual: stride === 1 && channels === outChannels,
      });
      channels = outChannels;
      index++;
    }
  }
  const featureDim = alpha > 1 ? makeDivisible(1280 * alpha) : 1280;
  const head = conv('Conv_1', 'Conv_1_bn', 'conv', 1, 1, channels, featureDim, true);
  return { name: 'mobilenet_v2', alpha, stem, blocks, head, featureDim };
}

/** How one library renders the network: a convolution (+ its ReLU6), and a block's residual add. */
export interface NetworkRenderer<T> {
  conv(layer: ConvLayer, x: T): T;
  /** `x` (the block's input) + `y` (its projection); Keras names the add `${block.name}_add`. */
  add(x: T, y: T, block: Block): T;
}

/**
 * The one walk of the network: stem, each block (expand, depthwise, project, residual
 * add) and the head conv, from `input` to the last feature map (before pooling).
 */
export function walkNetwork<T>(arch: Architecture, input: T, render: NetworkRenderer<T>): T {
  let x = render.conv(arch.stem, input);
  for (const block of arch.blocks) {
    let y = block.expand ? render.conv(block.expand, x) : x;
    y = render.conv(block.depthwise, y);
    y = render.conv(block.project, y);
    x = block.residual ? render.add(x, y, block) : y;
  }
  return render.conv(arch.head, x);
}

/** Every convolution in execution order. */
export function convLayers(arch: Architecture): ConvLayer[] {
  const layers: ConvLayer[] = [arch.stem];
  for (const block of arch.blocks) {
    if (block.expand) layers.push(block.expand);
    layers.push(block.depthwise, block.project);
  }
  layers.push(arch.head);
  return layers;
}

/** Shape of a layer's kernel as TF/Keras stores it (HWIO; depthwise HW C 1). */
export function kernelShape(layer: ConvLayer): [number, number, number, number] {
  return layer.kind === 'depthwise'
    ? [layer.kernel, layer.kernel, layer.inChannels, 1]
    : [layer.kernel, layer.kernel, layer.inChannels, layer.outChannels];
}

/** Multiply-accumulates per image at a given input size: used to report GFLOP in benchmarks. */
export function macsPerImage(arch: Architecture, height: number, width: number): number {
  let h = height;
  let w = width;
  let macs = 0;
  for (const layer of convLayers(arch)) {
    h = Math.ceil(h / layer.stride);
    w = Math.ceil(w / layer.stride);
    const perPixel =
      layer.kind === 'depthwise' ? layer.kernel * layer.kernel * layer.outChannels : layer.inChannels * layer.outChannels * layer.kernel * layer.kernel;
    macs += h * w * perPixel;
  }
  return macs;
}
