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
import type { Engine } from './engine-interface.js';

export type { Engine };

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
