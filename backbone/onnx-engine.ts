/**
 * The ONNX Runtime engine: the backbone graph of onnx-graph.ts on ORT's CPU execution
 * provider, which reaches 3-4x the throughput of tfjs-wasm on these machines
 * (../shared/notes/cpu-engines.md). ORT threads each convolution over all cores itself,
 * so one session runs one batch at a time.
 *
 * onnxruntime-node 1.30 runs a session synchronously on the calling thread (its promise
 * only defers the call), so the event loop stalls for a batch's duration; image decodes
 * already handed to libuv's pool keep going meanwhile.
 */
import { cpus } from 'node:os';
import type { Engine, EngineOptions } from './engine.js';
import { INPUT_NAME, OUTPUT_NAME, buildOnnxModel } from './onnx-graph.js';

export async function startOnnxEngine({ weights, size, batchSize }: EngineOptions): Promise<Engine> {
  // Loaded here, not at the top: a platform without ORT binaries must still run the tfjs engines.
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(buildOnnxModel(weights), {
    executionProviders: ['cpu'],
    intraOpNumThreads: cpus().length,
    // The graph is a single chain of convolutions: nothing for a second pool to run in parallel.
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const run = async (pixels: Uint8Array, count: number): Promise<Float32Array> => {
    const input = new ort.Tensor('uint8', pixels, [count, size.height, size.width, 3]);
    const outputs = await session.run({ [INPUT_NAME]: input });
    return outputs[OUTPUT_NAME].data as Float32Array;
  };
  // The first run at a shape plans memory and picks kernels: pay it before the first real batch.
  await run(new Uint8Array(batchSize * size.height * size.width * 3), batchSize);
  return {
    parallelism: 1,
    run,
    close: () => session.release(),
  };
}
