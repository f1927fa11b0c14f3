/**
 * The ONNX Runtime engine in its own thread: the backbone graph of onnx-graph.ts on ORT's
 * CPU execution provider, 2-3x the throughput of tfjs-wasm on the machines measured
 * (README, "Measured here"). On the CPU there is one such worker per core, each
 * session with `setup.threads` (1) intra-op thread: see workersFor in backends.ts.
 * onnx-cuda is the same graph on ORT's CUDA execution provider, in one worker.
 */
import { ONNX_EXECUTION_PROVIDER, type OnnxBackend } from './backends.js';
import { mobilenetV2 } from './mobilenetv2.js';
import { INPUT_NAME, OUTPUT_NAME, buildOnnxModel } from './onnx-graph.js';
import { serveBatches } from './worker-protocol.js';

await serveBatches(async (setup) => {
  const ort = await import('onnxruntime-node');
  const weights = { arch: mobilenetV2(setup.alpha), layers: new Map(setup.layers) };
  const session = await ort.InferenceSession.create(buildOnnxModel(weights), {
    executionProviders: [ONNX_EXECUTION_PROVIDER[setup.backend as OnnxBackend]],
    intraOpNumThreads: setup.threads,
    // The graph is a single chain of convolutions: nothing for a second pool to run in parallel.
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  return async (pixels, count, height, width) => {
    const input = new ort.Tensor('uint8', pixels, [count, height, width, 3]);
    const outputs = await session.run({ [INPUT_NAME]: input });
    return outputs[OUTPUT_NAME].data as Float32Array;
  };
});
