/**
 * The ONNX form of the backbone, built in memory from the same layer list (mobilenetv2.ts)
 * and the same folded weights (weights.ts) the tfjs engine uses, so no outside converter
 * ever stands between the definition and what ONNX Runtime runs.
 *
 * The graph takes the decoded pixels as they are (uint8 NHWC, any batch, height and
 * width) and does PREPROCESSING's scaling itself, so an engine only wraps its bytes.
 */
import protobuf from 'protobufjs';
import { type ConvLayer, kernelShape, walkNetwork } from './mobilenetv2.js';
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
 * Graphs that need Resize with `antialias` (the classifier of onnx-classifier.ts) use
 * opset 18, whose IR version is 8; ONNX Runtime runs it since 1.14.
 */
export const OPSET_18 = { opset: 18, irVersion: 8 } as const;

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
export const DataType = { FLOAT: 1, UINT8: 2, INT64: 7, DOUBLE: 11 } as const;
const AttributeType = { INT: 2, STRING: 3, INTS: 7 } as const;

/** Every attribute these graphs need is an integer, a list of integers or a string. */
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
export class GraphWriter {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private readonly initializerNames = new Set<string>();

  /** Whether an initializer of this name exists: graphs that run the backbone more than once share its weights. */
  has(name: string): boolean {
    return this.initializerNames.has(name);
  }

  node(opType: string, name: string, inputs: string[], attributes: Record<string, Attribute> = {}): string {
    const attribute = Object.entries(attributes).map(([key, value]) => toAttribute(key, value));
    this.nodes.push({ name, op_type: opType, input: inputs, output: [name], attribute });
    return name;
  }

  /** raw_data is little-endian by ONNX's definition, as Float32Array is on every platform Node runs ORT on. */
  constant(name: string, dims: number[], values: Float32Array): string {
    return this.tensor(name, dims, DataType.FLOAT, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  }

  /** int64 initializers: the shapes, axes and indices that Slice, Resize and ReduceMean take as inputs. */
  int64(name: string, dims: number[], values: readonly number[]): string {
    const longs = BigInt64Array.from(values, (v) => BigInt(v));
    return this.tensor(name, dims, DataType.INT64, new Uint8Array(longs.buffer));
  }

  /** float64 initializers: for arithmetic that must round as JavaScript numbers do (crop windows). */
  float64(name: string, dims: number[], values: readonly number[]): string {
    const doubles = Float64Array.from(values);
    return this.tensor(name, dims, DataType.DOUBLE, new Uint8Array(doubles.buffer));
  }

  private tensor(name: string, dims: number[], data_type: number, raw_data: Uint8Array): string {
    if (this.initializerNames.has(name)) throw new Error(`initializer ${name} is defined twice`);
    this.initializerNames.add(name);
    this.initializers.push({ name, dims, data_type, raw_data });
    return name;
  }
}

function toAttribute(name: string, value: Attribute): NodeProto['attribute'][number] {
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'number') return { name, type: AttributeType.INT, i: value };
  return { name, type: AttributeType.INTS, ints: value };
}

export function valueInfo(name: string, elemType: number, dims: readonly Dim[]) {
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

/**
 * Input scaling of PREPROCESSING on float pixels 0..255 (NCHW), in the same order of
 * operations as the tfjs engine: x / scale - offset. `scope` prefixes the node names of
 * graphs that scale more than one tensor; the two constants are shared.
 */
export function scalePixels(graph: GraphWriter, pixels: string, scope = ''): string {
  const scale = graph.has('preprocess/scale') ? 'preprocess/scale' : graph.constant('preprocess/scale', [], Float32Array.of(PREPROCESSING.scale));
  const offset = graph.has('preprocess/offset') ? 'preprocess/offset' : graph.constant('preprocess/offset', [], Float32Array.of(PREPROCESSING.offset));
  return graph.node('Sub', `${scope}preprocessed`, [graph.node('Div', `${scope}pixels_scaled`, [pixels, scale]), offset]);
}

function preprocess(graph: GraphWriter): string {
  const nchw = graph.node('Transpose', 'pixels_nchw', [INPUT_NAME], { perm: [0, 3, 1, 2] });
  return scalePixels(graph, graph.node('Cast', 'pixels_float', [nchw], { to: DataType.FLOAT }));
}

/**
 * Conv + folded-BN bias (+ ReLU6 as Clip, which ONNX Runtime fuses into the conv). The
 * weights are added once per graph, however many times (scopes) the backbone runs.
 */
function conv(graph: GraphWriter, weights: NetworkWeights, layer: ConvLayer, x: string, scope: string): string {
  const kernelName = `${layer.name}/kernel`;
  const biasName = `${layer.name}/bias`;
  if (!graph.has(kernelName)) {
    const { kernel, bias } = weights.layers.get(layer.name)!;
    graph.constant(kernelName, onnxKernelShape(layer), toOihw(layer, kernel));
    graph.constant(biasName, [layer.outChannels], bias);
  }
  const y = graph.node('Conv', `${scope}${layer.name}`, [x, kernelName, biasName], {
    kernel_shape: [layer.kernel, layer.kernel],
    strides: [layer.stride, layer.stride],
    group: layer.kind === 'depthwise' ? layer.inChannels : 1,
    // TF 'same': the odd pixel of padding goes at the end, which is what SAME_UPPER means.
    auto_pad: 'SAME_UPPER',
  });
  return layer.relu6 ? graph.node('Clip', `${scope}${layer.name}/relu6`, [y, RELU6_MIN, RELU6_MAX]) : y;
}

/**
 * The network from preprocessed NCHW input to pooled features [batch, featureDim], named
 * `output`. Node names start with `scope`, so one graph can run it at several input
 * sizes on the same weights.
 */
export function backboneFeatures(graph: GraphWriter, weights: NetworkWeights, preprocessed: string, output: string, scope = ''): string {
  const { arch } = weights;
  if (!graph.has(RELU6_MIN)) {
    graph.constant(RELU6_MIN, [], Float32Array.of(0));
    graph.constant(RELU6_MAX, [], Float32Array.of(6));
  }
  const x = walkNetwork(arch, preprocessed, {
    conv: (layer, from) => conv(graph, weights, layer, from, scope),
    add: (a, b, block) => graph.node('Add', `${scope}${block.name}_add`, [a, b]),
  });
  return graph.node('Flatten', output, [graph.node('GlobalAveragePool', `${scope}pooled`, [x])], { axis: 1 });
}

export interface ModelDescription {
  readonly name: string;
  readonly inputs: ReturnType<typeof valueInfo>[];
  readonly outputs: ReturnType<typeof valueInfo>[];
  readonly opset?: number;
  readonly irVersion?: number;
}

/** Serializes the graph as a ModelProto (opset 13 unless told otherwise). */
export function encodeModel(graph: GraphWriter, { name, inputs, outputs, opset = OPSET, irVersion = IR_VERSION }: ModelDescription): Uint8Array {
  const model = {
    ir_version: irVersion,
    producer_name: 'pipeline',
    opset_import: [{ domain: '', version: opset }],
    graph: { name, node: graph.nodes, initializer: graph.initializers, input: inputs, output: outputs },
  };
  // encode() reads plain objects directly; fromObject() would only copy the weight bytes.
  return ModelProto.encode(model).finish();
}

/** Serialized ModelProto of the backbone: uint8 [batch, height, width, 3] in, float32 [batch, featureDim] out. */
export function buildOnnxModel(weights: NetworkWeights): Uint8Array {
  const { arch } = weights;
  const graph = new GraphWriter();
  backboneFeatures(graph, weights, preprocess(graph), OUTPUT_NAME);
  return encodeModel(graph, {
    name: `${arch.name}_${arch.alpha}`,
    inputs: [valueInfo(INPUT_NAME, DataType.UINT8, ['batch', 'height', 'width', 3])],
    outputs: [valueInfo(OUTPUT_NAME, DataType.FLOAT, ['batch', arch.featureDim])],
  });
}

