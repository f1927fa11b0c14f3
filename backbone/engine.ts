/**
 * An engine turns batches of decoded pixels into features. The extract stage only sees
 * this interface; which library computes the numbers is the engine's business.
 */
import type { InputSize } from './preprocessing.js';
import type { BackboneWeights } from './weights.js';
import type { Backend, ResolvedBackend, TfjsBackend } from '../pipeline/backend.js';
import { startOnnxEngine } from './onnx-engine.js';
import { startTfjsEngine } from './tfjs-engine.js';

export interface Engine {
  /** Batches it can work on at once: the extract stage keeps this many (+1) in flight. */
  readonly parallelism: number;
  /** `count` images of uint8 RGB (H x W x 3 each) in, `count x featureDim` float32 out. */
  run(pixels: Uint8Array, count: number): Promise<Float32Array>;
  close(): Promise<void>;
}

export interface EngineOptions<B extends Backend = Backend> {
  readonly weights: BackboneWeights;
  readonly backend: ResolvedBackend<B>;
  readonly size: InputSize;
  readonly batchSize: number;
}

export function startEngine(options: EngineOptions): Promise<Engine> {
  return runsOnTfjs(options) ? startTfjsEngine(options) : startOnnxEngine(options);
}

const runsOnTfjs = (options: EngineOptions): options is EngineOptions<TfjsBackend> => options.backend.backend !== 'onnx';
