/**
 * One tfjs model copy in its own thread. tfjs-backend-wasm runs single-threaded under
 * Node, so parallelism comes from one worker per core (../shared/notes/cpu-engines.md).
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { activateBackend, type TfjsBackend } from '../pipeline/backend.js';
import { mobilenetV2 } from './mobilenetv2.js';
import { createTfjsBackbone } from './tfjs-backbone.js';
import type { ConvWeights } from './weights.js';

export interface WorkerSetup {
  backend: TfjsBackend;
  alpha: number;
  layers: [string, ConvWeights][];
  height: number;
  width: number;
  batchSize: number;
}

export type WorkerRequest = { id: number; pixels: Uint8Array; count: number };
export type WorkerReply =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'features'; id: number; features: Float32Array }
  | { type: 'error'; id: number; message: string };

const setup = workerData as WorkerSetup;
const port = parentPort!;

try {
  await activateBackend(tf, setup.backend);
  const backbone = createTfjsBackbone(tf, mobilenetV2(setup.alpha), new Map(setup.layers));
  const run = (pixels: Uint8Array, count: number): Float32Array => {
    const input = tf.tensor4d(pixels, [count, setup.height, setup.width, 3], 'int32');
    const features = backbone.features(input);
    // A copy that owns its buffer, so it can be transferred without touching wasm memory.
    const values = (features.dataSync() as Float32Array).slice();
    tf.dispose([input, features]);
    return values;
  };
  // The first call at a new shape grows wasm memory and can take many seconds: pay it now.
  run(new Uint8Array(setup.batchSize * setup.height * setup.width * 3), setup.batchSize);
  port.on('message', ({ id, pixels, count }: WorkerRequest) => {
    try {
      const features = run(pixels, count);
      port.postMessage({ type: 'features', id, features } satisfies WorkerReply, [features.buffer as ArrayBuffer]);
    } catch (error) {
      port.postMessage({ type: 'error', id, message: (error as Error).message } satisfies WorkerReply);
    }
  });
  port.postMessage({ type: 'ready' } satisfies WorkerReply);
} catch (error) {
  port.postMessage({ type: 'failed', message: (error as Error).message } satisfies WorkerReply);
}
