/**
 * An engine turns batches of decoded pixels into features. The extract stage only sees
 * this interface; which library computes the numbers, in which threads, is the engine's
 * business (worker-protocol.ts says why every engine runs in worker threads).
 */
import type { InputSize } from './preprocessing.js';
import type { BackboneWeights } from './weights.js';
import { type ResolvedBackend, isOnnx } from './backends.js';
import { cpus } from 'node:os';
import { startWorkerPool } from './worker-pool.js';

export interface Engine {
  /** Batches it can work on at once: the extract stage keeps this many (+1) in flight. */
  readonly parallelism: number;
  /** `count` images of uint8 RGB (H x W x 3 each) in, `count x featureDim` float32 out. Copies the pixels. */
  run(pixels: Uint8Array, count: number): Promise<Float32Array>;
  /**
   * The same without a copy: `buffer` (a whole ArrayBuffer, the first `count` images
   * filled) moves to the engine thread and comes back with the features, for the caller
   * to reuse. `size` (default: the engine's) lets one engine serve several input sizes. Copying a batch between threads costs as much as decoding it on these VMs,
   * because the copy lands in fresh memory (slow to touch: ../shared/notes/cpu-engines.md).
   */
  runInPlace(buffer: Uint8Array, count: number, size?: InputSize): Promise<{ features: Float32Array; buffer: Uint8Array }>;
  close(): Promise<void>;
}

export interface EngineOptions {
  readonly weights: BackboneWeights;
  readonly backend: ResolvedBackend;
  readonly size: InputSize;
  readonly batchSize: number;
}

export function startEngine({ weights, backend, size, batchSize }: EngineOptions): Promise<Engine> {
  const script = isOnnx(backend.backend) ? 'onnx-worker.js' : 'tfjs-worker.js';
  return startWorkerPool(
    new URL(script, import.meta.url),
    { backend: backend.backend, alpha: weights.arch.alpha, layers: [...weights.layers], height: size.height, width: size.width, batchSize,
      threads: Math.max(1, Math.floor(cpus().length / backend.workers)) },
    backend.workers,
  );
}
