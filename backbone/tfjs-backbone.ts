/**
 * The tfjs engine: walks the architecture's layer list with fused ops, so each
 * convolution, its folded-BatchNorm bias and ReLU6 run as one kernel (tf.layers cannot
 * fuse ReLU6, and keeping BN unfolded costs another ~2x).
 */
import type * as tfType from '@tensorflow/tfjs';
import { type Architecture, type ConvLayer, convLayers, kernelShape, walkNetwork } from './mobilenetv2.js';
import type { ConvWeights } from './weights.js';
import { PREPROCESSING } from './preprocessing.js';

type Tf = typeof tfType;

export interface TfjsBackbone {
  /** uint8 RGB NHWC pixels in, [batch, featureDim] float32 features out. */
  features(pixels: tfType.Tensor4D): tfType.Tensor2D;
  dispose(): void;
}

interface LayerTensors {
  kernel: tfType.Tensor4D;
  bias: tfType.Tensor1D;
}

export function createTfjsBackbone(tf: Tf, arch: Architecture, layers: ReadonlyMap<string, ConvWeights>): TfjsBackbone {
  const tensors = new Map<string, LayerTensors>();
  for (const layer of convLayers(arch)) {
    const { kernel, bias } = layers.get(layer.name)!;
    tensors.set(layer.name, { kernel: tf.tensor4d(kernel, kernelShape(layer)), bias: tf.tensor1d(bias) });
  }

  const apply = (layer: ConvLayer, x: tfType.Tensor4D): tfType.Tensor4D => {
    const { kernel, bias } = tensors.get(layer.name)!;
    const activation = layer.relu6 ? 'relu6' : 'linear';
    // 'same' padding equals Keras' ZeroPadding2D((0,1),(0,1)) + 'valid' on even sizes
    // and ((1,1),(1,1)) on odd ones, so one definition serves both weight layouts.
    return layer.kind === 'depthwise'
      ? tf.fused.depthwiseConv2d({ x, filter: kernel, strides: layer.stride, pad: 'same', bias, activation })
      : tf.fused.conv2d({ x, filter: kernel, strides: layer.stride, pad: 'same', bias, activation });
  };

  return {
    features(pixels) {
      return tf.tidy(() => {
        let x = tf.sub(tf.div(tf.cast(pixels, 'float32'), PREPROCESSING.scale), PREPROCESSING.offset) as tfType.Tensor4D;
        x = walkNetwork(arch, x, { conv: apply, add: (a, b) => tf.add(a, b) });
        return tf.mean(x, [1, 2]) as tfType.Tensor2D;
      });
    },
    dispose() {
      for (const { kernel, bias } of tensors.values()) {
        kernel.dispose();
        bias.dispose();
      }
      tensors.clear();
    },
  };
}
