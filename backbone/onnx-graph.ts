/**
 * The ONNX form of the backbone, built in memory from the same layer list (mobilenetv2.ts)
 * and the same folded weights (weights.ts) the tfjs engine uses, so no outside converter
 * ever stands between the definition and what ONNX Runtime runs.
 *
 * The graph takes the decoded pixels as they are (uint8 NHWC, any batch, height and
 * width) and does PREPROCESSING's scaling itself, so an engine only wraps its bytes.
 */
import protobuf from 'protobufjs';
import { type ConvLayer, kernelShape } from './mobilenetv2.js';
import { PREPROCESSING } from './preprocessing.js';
import type { NetworkWeights } from './weights.js';

export const INPUT_NAME = 'pixels';
export const OUTPUT_NAME = 'features';

/**
 * Opset 13 has everything used here (Clip takes its bounds as inputs since 11) and every
 * ONNX Runtime since 1.6 runs it; IR version 7 is the one that goes with it.
 */
const OPSET = 13;
const IR_VERSION = 7;

/**
 * The part of onnx.proto (github.com/onnx/onnx, onnx/onnx.proto) this file writes, with
 * its field numbers unchanged. The npm package that ships the whole schema (onnx-proto)
 * pins protobufjs 6; eleven messages are not worth a second, older protobuf library.
 */
const ONNX_SUBSET = `
syntax = "proto2";
package onnx;
message AttributeProto {
  optional string name = 1;
  optional int64 i = 3;
  optional bytes s = 4;
  repeated int64 ints = 8;
  optional int32 type = 20;
}
message ValueInfoProto {
  optional string name = 1;
  optional TypeProto type = 2;
}
message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  optional string name = 3;
  optional string op_type = 4;
  repeated AttributeProto attribute = 5;
}
message ModelProto {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  optional GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
}
message GraphProto {
  repeated NodeProto node = 1;
  optional string name = 2;
  repeated TensorProto initializer = 5;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
}
message TensorProto {
  repeated int64 dims = 1;
  optional int32 data_type = 2;
  optional string name = 8;
  optional bytes raw_data = 9;
}
message TensorShapeProto {
  message Dimension {
    optional int64 dim_value = 1;
    optional string dim_param = 2;
  }
  repeated Dimension dim = 1;
}
message TypeProto {
  message Tensor {
    optional int32 elem_type = 1;
    optional TensorShapeProto shape = 2;
  }
  optional Tensor tensor_type = 1;
}
message OperatorSetIdProto {
  optional string domain = 1;
  optional int64 version = 2;
}
`;

/** TensorProto.DataType and AttributeProto.AttributeType values of onnx.proto. */
const DataType = { FLOAT: 1, UINT8: 2 } as const;
const AttributeType = { INT: 2, STRING: 3, INTS: 7 } as const;

/** Every attribute this graph needs is an integer, a list of integers or a string. */
type Attribute = number | readonly number[] | string;

interface TensorProto {
  name: string;
  dims: number[];
  data_type: number;
  raw_data: Uint8Array;
}

interface NodeProto {
  name: string;
  op_type: string;
  input: string[];
  output: string[];
  attribute: { name: string; type: number; i?: number; ints?: readonly number[]; s?: Uint8Array }[];
}

/** A dimension is fixed (a number) or named and left to run time (a string). */
type Dim = number | string;

/** Scalar initializers shared by every Clip that implements ReLU6. */
const RELU6_MIN = 'relu6/min';
const RELU6_MAX = 'relu6/max';

/** The ModelProto message type; keepCase: objects use onnx.proto's own snake_case field names. */
export const ModelProto = protobuf.parse(ONNX_SUBSET, { keepCase: true }).root.lookupType('onnx.ModelProto');

/** Appends nodes in execution order; each node's single output is named after the node. */
class GraphWriter {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];

  node(opType: string, name: string, inputs: string[], attributes: Record<string, Attribute> = {}): string {
    const attribute = Object.entries(attributes).map(([key, value]) => toAttribute(key, value));
    this.nodes.push({ name, op_type: opType, input: inputs, output: [name], attribute });
    return name;
  }

  /** raw_data is little-endian by ONNX's definition, as Float32Array is on every platform Node runs ORT on. */
  constant(name: string, dims: number[], values: Float32Array): string {
    const raw_data = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    this.initializers.push({ name, dims, data_type: DataType.FLOAT, raw_data });
    return name;
  }
}

function toAttribute(name: string, value: Attribute): NodeProto['attribute'][number] {
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'number') return { name, type: AttributeType.INT, i: value };
  return { name, type: AttributeType.INTS, ints: value };
}

function valueInfo(name: string, elemType: number, dims: readonly Dim[]) {
  const dim = dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d }));
  return { name, type: { tensor_type: { elem_type: elemType, shape: { dim } } } };
}

/** ONNX Conv's weight shape: OIHW, and [C, 1, kh, kw] for a depthwise conv (group = C). */
function onnxKernelShape(layer: ConvLayer): [number, number, number, number] {
  const [kh, kw, inChannels, outChannels] = kernelShape(layer);
  return layer.kind === 'depthwise' ? [inChannels, 1, kh, kw] : [outChannels, inChannels, kh, kw];
}

/**
 * HWIO -> OIHW. A depthwise kernel [kh, kw, C, 1] read as HWIO with I = C, O = 1 becomes
 * [1, C, kh, kw], which has the same memory layout as the [C, 1, kh, kw] ONNX wants.
 */
function toOihw(layer: ConvLayer, kernel: Float32Array): Float32Array {
  const [kh, kw, inChannels, outChannels] = kernelShape(layer);
  const out = new Float32Array(kernel.length);
  for (let o = 0; o < outChannels; o++) {
    for (let i = 0; i < inChannels; i++) {
      for (let h = 0; h < kh; h++) {
        for (let w = 0; w < kw; w++) {
          out[((o * inChannels + i) * kh + h) * kw + w] = kernel[((h * kw + w) * inChannels + i) * outChannels + o];
        }
      }
    }
  }
  return out;
}

/** Input scaling of PREPROCESSING, in the same order of operations as the tfjs engine: x / scale - offset. */
function preprocess(graph: GraphWriter): string {
  const nchw = graph.node('Transpose', 'pixels_nchw', [INPUT_NAME], { perm: [0, 3, 1, 2] });
  const float = graph.node('Cast', 'pixels_float', [nchw], { to: DataType.FLOAT });
  const scale = graph.constant('preprocess/scale', [], Float32Array.of(PREPROCESSING.scale));
  const offset = graph.constant('preprocess/offset', [], Float32Array.of(PREPROCESSING.offset));
  return graph.node('Sub', 'preprocessed', [graph.node('Div', 'pixels_scaled', [float, scale]), offset]);
}

/** Conv + folded-BN bias (+ ReLU6 as Clip, which ONNX Runtime fuses into the conv). */
function conv(graph: GraphWriter, weights: NetworkWeights, layer: ConvLayer, x: string): string {
  const { kernel, bias } = weights.layers.get(layer.name)!;
  const w = graph.constant(`${layer.name}/kernel`, onnxKernelShape(layer), toOihw(layer, kernel));
  const b = graph.constant(`${layer.name}/bias`, [layer.outChannels], bias);
  const y = graph.node('Conv', layer.name, [x, w, b], {
    kernel_shape: [layer.kernel, layer.kernel],
    strides: [layer.stride, layer.stride],
    group: layer.kind === 'depthwise' ? layer.inChannels : 1,
    // TF 'same': the odd pixel of padding goes at the end, which is what SAME_UPPER means.
    auto_pad: 'SAME_UPPER',
  });
  return layer.relu6 ? graph.node('Clip', `${layer.name}/relu6`, [y, RELU6_MIN, RELU6_MAX]) : y;
}

/** Serialized ModelProto of the backbone: uint8 [batch, height, width, 3] in, float32 [batch, featureDim] out. */
export function buildOnnxModel(weights: NetworkWeights): Uint8Array {
  const { arch } = weights;
  const graph = new GraphWriter();
  graph.constant(RELU6_MIN, [], Float32Array.of(0));
  graph.constant(RELU6_MAX, [], Float32Array.of(6));
  let x = conv(graph, weights, arch.stem, preprocess(graph));
  arch.blocks.forEach((block, index) => {
    let y = block.expand ? conv(graph, weights, block.expand, x) : x;
    y = conv(graph, weights, block.depthwise, y);
    y = conv(graph, weights, block.project, y);
    // Keras' name for the residual add of block N.
    x = block.residual ? graph.node('Add', `block_${index}_add`, [x, y]) : y;
  });
  x = conv(graph, weights, arch.head, x);
  graph.node('Flatten', OUTPUT_NAME, [graph.node('GlobalAveragePool', 'pooled', [x])], { axis: 1 });

  const model = {
    ir_version: IR_VERSION,
    producer_name: 'pipeline',
    opset_import: [{ domain: '', version: OPSET }],
    graph: {
      name: `${arch.name}_${arch.alpha}`,
      node: graph.nodes,
      initializer: graph.initializers,
      input: [valueInfo(INPUT_NAME, DataType.UINT8, ['batch', 'height', 'width', 3])],
      output: [valueInfo(OUTPUT_NAME, DataType.FLOAT, ['batch', arch.featureDim])],
    },
  };
  // encode() reads plain objects directly; fromObject() would only copy the weight bytes.
  return ModelProto.encode(model).finish();
}

