/**
 * An engine turns batches of decoded pixels into features. The extract stage only sees
 * this interface; which library computes the numbers, in which threads, is the engine's
 * business. Every engine runs in worker threads of the project's one worker pool
 * (core/worker-pool.ts), speaking worker-protocol.ts (which says why).
 */
import { cpus } from 'node:os';
import type { InputSize } from './preprocessing.js';
import type { BackboneWeights } from './weights.js';
import { type ResolvedBackend, isOnnx } from './backends.js';
import type { WorkerReply, WorkerRequest, WorkerSetup } from './worker-protocol.js';
import { startWorkerPool } from '../core/worker-pool.js';
import { UserError, messageOf } from '../core/errors.js';

export interface Engine {
  /** Batches it can work on at once: the extract stage keeps this many (+1) in flight. */
  readonly parallelism: number;
  /** `count` images of uint8 RGB (H x W x 3 each) in, `count x featureDim` float32 out. Copies the pixels. */
  run(pixels: Uint8Array, count: number): Promise<Float32Array>;
  /**
   * The same without a copy: `buffer` (a whole ArrayBuffer, the first `count` images
   * filled) moves to the engine thread and comes back with the features, for the caller
   * to reuse. `size` (default: the engine's) lets one engine serve several input sizes.
   * Copying a batch between threads costs as much as decoding it on small VMs, because
   * the copy lands in fresh memory, which is slow to touch.
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

/** Starts the backend's worker threads and resolves once every one is warmed up. */
export async function startEngine({ weights, backend, size, batchSize }: EngineOptions): Promise<Engine> {
  const setup: WorkerSetup = {
    backend: backend.backend, alpha: weights.arch.alpha, layers: [...weights.layers], height: size.height, width: size.width, batchSize,
    threads: Math.max(1, Math.floor(cpus().length / backend.workers)),
  };
  const pool = await startWorkerPool<WorkerRequest, WorkerReply>({
    script: new URL(isOnnx(backend.backend) ? 'onnx-worker.js' : 'tfjs-worker.js', import.meta.url),
    workerData: setup,
    size: backend.workers,
    ready: (reply) => {
      const { type } = reply as WorkerReply;
      if (type !== 'ready') throw new Error(type === 'failed' ? (reply as { message: string }).message : `unexpected ${type}`);
    },
  }).catch((error: unknown) => {
    throw new UserError(`backend ${setup.backend} failed to start: ${messageOf(error).split('\n')[0]}`);
  });

  let nextId = 0;
  let closed = false;
  const runInPlace: Engine['runInPlace'] = async (buffer, count, { height, width } = size) => {
    if (closed) throw new Error('the engine is closed');
    if (buffer.byteOffset !== 0 || buffer.byteLength !== buffer.buffer.byteLength) {
      throw new Error('runInPlace needs a buffer that is a whole ArrayBuffer');
    }
    const reply = await pool.run({ id: nextId++, pixels: buffer, count, height, width }, [buffer.buffer as ArrayBuffer]).catch((error: unknown) => {
      throw new Error(`backbone worker crashed: ${messageOf(error)}`);
    });
    if (reply.type === 'features') return { features: reply.features, buffer: reply.pixels };
    throw new Error(`backbone failed: ${reply.type === 'error' ? reply.message : `unexpected ${reply.type}`}`);
  };
  return {
    parallelism: pool.size,
    runInPlace,
    run: (pixels, count) => runInPlace(pixels.slice(), count).then(({ features }) => features),
    async close() {
      closed = true;
      await pool.close();
    },
  };
}
