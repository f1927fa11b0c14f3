import test from 'ava';
import { INPUT_NAME, ModelProto, OUTPUT_NAME, buildOnnxModel } from '../backbone/onnx-graph.js';
import { type Architecture, convLayers, kernelShape, mobilenetV2 } from '../backbone/mobilenetv2.js';
import type { BackboneWeights, ConvWeights } from '../backbone/weights.js';

interface Tensor {
  name: string;
  dims: number[];
  raw_data: Uint8Array;
}
interface Dimension {
  dim_value?: number;
  dim_param?: string;
}
interface ValueInfo {
  name: string;
  type: { tensor_type: { elem_type: number; shape: { dim: Dimension[] } } };
}
interface Model {
  opset_import: { version: number }[];
  graph: { node: { op_type: string; input: string[] }[]; initializer: Tensor[]; input: ValueInfo[]; output: ValueInfo[] };
}

/** Every kernel holds its own flat index, so a test can tell where each weight moved. */
function indexWeights(arch: Architecture): BackboneWeights {
  const layers = new Map<string, ConvWeights>();
  for (const layer of convLayers(arch)) {
    const length = kernelShape(layer).reduce((a, b) => a * b);
    layers.set(layer.name, { kernel: Float32Array.from({ length }, (_, i) => i), bias: new Float32Array(layer.outChannels) });
  }
  return { arch, layers, sha256: 'index', source: 'test', foldedAtLoad: false };
}

function decode(weights: BackboneWeights): Model {
  return ModelProto.toObject(ModelProto.decode(buildOnnxModel(weights)), { longs: Number, defaults: true }) as Model;
}

const arch = mobilenetV2(1.0);
const model = decode(indexWeights(arch));
const initializer = (name: string) => model.graph.initializer.find((t) => t.name === name)!;
// A copy: decoded bytes are a Buffer view into a shared pool, at any alignment.
const floats = (tensor: Tensor) => new Float32Array(Uint8Array.from(tensor.raw_data).buffer);
const dims = (info: ValueInfo) => info.type.tensor_type.shape.dim.map((d) => d.dim_param || d.dim_value);

test('one node per operation of MobileNetV2: 52 convs, 35 ReLU6, 10 residual adds, preprocessing and pooling', (t) => {
  const counts: Record<string, number> = {};
  for (const node of model.graph.node) counts[node.op_type] = (counts[node.op_type] ?? 0) + 1;
  // The paper's network: stem + 16 blocks of 3 convs + the first block's 2 + the 1x1 head.
  t.deepEqual(counts, { Transpose: 1, Cast: 1, Div: 1, Sub: 1, Conv: 52, Clip: 35, Add: 10, GlobalAveragePool: 1, Flatten: 1 });
  t.is(counts.Conv, convLayers(arch).length);
  t.is(model.opset_import[0].version, 13);
});

test('input is uint8 NHWC with free batch, height and width; output is [batch, featureDim] float', (t) => {
  const [input] = model.graph.input;
  const [output] = model.graph.output;
  t.is(input.name, INPUT_NAME);
  t.is(input.type.tensor_type.elem_type, 2); // UINT8
  t.deepEqual(dims(input), ['batch', 'height', 'width', 3]);
  t.is(output.name, OUTPUT_NAME);
  t.is(output.type.tensor_type.elem_type, 1); // FLOAT
  t.deepEqual(dims(output), ['batch', 1280]);
});

test('kernels are OIHW, depthwise ones [C, 1, kh, kw], and every initializer holds exactly its dims', (t) => {
  t.deepEqual(initializer('Conv1/kernel').dims, [32, 3, 3, 3]);
  t.deepEqual(initializer('expanded_conv_depthwise/kernel').dims, [32, 1, 3, 3]);
  t.deepEqual(initializer('block_16_project/kernel').dims, [320, 960, 1, 1]);
  t.deepEqual(initializer('Conv_1/kernel').dims, [1280, 320, 1, 1]);
  t.deepEqual(initializer('Conv_1/bias').dims, [1280]);
  for (const tensor of model.graph.initializer) {
    t.is(tensor.raw_data.length, 4 * tensor.dims.reduce((a, b) => a * b, 1), tensor.name);
  }
});

test('HWIO weights land at their OIHW positions', (t) => {
  // Conv1 is HWIO [3, 3, 3, 32]: the weight at (h, w, i, o) holds ((h * 3 + w) * 3 + i) * 32 + o.
  const conv1 = floats(initializer('Conv1/kernel'));
  const [h, w, i, o] = [2, 1, 0, 17];
  t.is(conv1[((o * 3 + i) * 3 + h) * 3 + w], ((h * 3 + w) * 3 + i) * 32 + o);
  // Depthwise [3, 3, 32, 1] -> [32, 1, 3, 3]: channel c at (h, w) held (h * 3 + w) * 32 + c.
  const depthwise = floats(initializer('expanded_conv_depthwise/kernel'));
  const c = 5;
  t.is(depthwise[(c * 3 + h) * 3 + w], (h * 3 + w) * 32 + c);
});

test('residual adds join a block input with its projection, as the architecture marks them', (t) => {
  const adds = model.graph.node.filter((node) => node.op_type === 'Add');
  t.deepEqual(
    adds.map((node) => node.input[1]),
    arch.blocks.filter((block) => block.residual).map((block) => block.project.name),
  );
});
