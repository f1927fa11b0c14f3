/**
 * What the extract stage's engine threads say to each other. Every engine runs in worker
 * threads: tfjs-wasm needs one model copy per core to use more than one, and
 * onnxruntime-node runs a batch synchronously, which on the main thread would stall the
 * event loop and with it the decoding of the next batch.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { Backend } from './backends.js';
import type { ConvWeights } from './weights.js';

export interface WorkerSetup {
  backend: Backend;
  alpha: number;
  layers: [string, ConvWeights][];
  height: number;
  width: number;
  batchSize: number;
  /** Threads the engine may use inside this worker: the cores shared out among the workers. */
  threads: number;
}

/** `pixels` arrives transferred and goes back with the reply, so batch buffers are reused, never copied. */
export type WorkerRequest = { id: number; pixels: Uint8Array; count: number; height: number; width: number };
export type WorkerReply =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'features'; id: number; features: Float32Array; pixels: Uint8Array }
  | { type: 'error'; id: number; message: string; pixels: Uint8Array };

/** `count` images of uint8 RGB (height x width) in, `count x featureDim` float32 out. */
export type RunBatch = (pixels: Uint8Array, count: number, height: number, width: number) => Promise<Float32Array>;

/**
 * The worker side: builds the engine from the setup, warms it up with the real batch
 * shape (the first call at a new shape plans memory and can take seconds), then answers
 * batches until terminated.
 */
export async function serveBatches(start: (setup: WorkerSetup) => Promise<RunBatch>): Promise<void> {
  const setup = workerData as WorkerSetup;
  const port = parentPort!;
  try {
    const run = await start(setup);
    await run(new Uint8Array(setup.batchSize * setup.height * setup.width * 3), setup.batchSize, setup.height, setup.width);
    port.on('message', ({ id, pixels, count, height, width }: WorkerRequest) => {
      const giveBack = [pixels.buffer as ArrayBuffer];
      run(pixels.subarray(0, count * height * width * 3), count, height, width).then(
        (result) => {
          // A copy that owns its buffer, so it can be transferred without touching engine memory.
          const features = result.slice();
          port.postMessage({ type: 'features', id, features, pixels } satisfies WorkerReply, [features.buffer as ArrayBuffer, ...giveBack]);
        },
        (error: Error) => port.postMessage({ type: 'error', id, message: error.message, pixels } satisfies WorkerReply, giveBack),
      );
    });
    port.postMessage({ type: 'ready' } satisfies WorkerReply);
  } catch (error) {
    port.postMessage({ type: 'failed', message: (error as Error).message } satisfies WorkerReply);
  }
}
