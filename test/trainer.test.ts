import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { readFile } from 'node:fs/promises';
import { syntheticData } from '../bench/sweep.js';
import { assembleKernels } from '../scripts/assemble-kernels.js';
import { dropoutThreshold, glorotUniform, runStreams } from '../stages/sweep/random.js';
import { trainReferenceOnOrder } from '../stages/sweep/reference.js';
import { KERNELS_WASM, Kernels, kernelModule } from '../stages/sweep/simd.js';
import { type EarlyStopping, type HeadParams, type RunResult, type RunSpec, trainHeads } from '../stages/sweep/trainer.js';

// The tf.layers reference runs on the cpu backend: exact float32 and no native code.
await tf.setBackend('cpu');

const data = syntheticData({ train: 150, val: 40, test: 30 }, 64, 3);
const early: EarlyStopping = { monitor: 'val_loss', patience: 3 };
const base: HeadParams = {
  dropout: 0.3, learningRate: 0.01, epochs: 6, batchSize: 16, optimizer: 'adam',
  hiddenUnits: 0, weightDecay: 0, labelSmoothing: 0, classWeight: 'none',
};
const spec = (key: string, params: Partial<HeadParams> = {}, seed = 1): RunSpec => ({ key, seed, params: { ...base, ...params } });

const numbers = (r: RunResult) => [
  ...r.curves.trainLoss, ...r.curves.valLoss, r.test.loss, ...r.test.probabilities, ...r.weights.flatMap((w) => [...w.values]),
];

test.serial('same runs and seeds give bitwise identical results', async (t) => {
  const runs = [spec('a'), spec('b', { hiddenUnits: 16, optimizer: 'rmsprop', weightDecay: 1e-3 })];
  const [first, second] = [await trainHeads(data, runs, early), await trainHeads(data, runs, early)];
  t.deepEqual(first.map(numbers), second.map(numbers));
});

test.serial("a run's numbers do not depend on the runs trained beside it or on which worker trains it", async (t) => {
  const run = spec('target', { dropout: 0.4, classWeight: 'balanced', labelSmoothing: 0.1 }, 2);
  const [alone] = await trainHeads(data, [run], early);
  const batch = await trainHeads(data, [spec('x', { learningRate: 0.003 }), spec('y', { dropout: 0 }), run, spec('x', {}, 2)], early);
  const together = batch.find((r) => r.key === 'target')!;
  t.deepEqual(numbers(alone), numbers(together));
  t.is(alone.bestEpoch, together.bestEpoch);
});

for (const hiddenUnits of [0, 16]) {
  test.serial(`matches the tf.layers reference step for step with dropout 0 (hidden ${hiddenUnits})`, async (t) => {
    const run = spec('ref', { dropout: 0, hiddenUnits, epochs: 3 });
    const [result] = await trainHeads(data, [run], { monitor: 'val_loss', patience: 0 });
    const streams = runStreams(run);
    const widths = hiddenUnits ? [data.dim, hiddenUnits, data.classes] : [data.dim, data.classes];
    const kernels = widths.slice(1).map((units, i) => glorotUniform(streams.init, widths[i], units));
    const orders = [1, 2, 3].map(() => streams.shuffle.permutation(data.train.y.length));
    const reference = await trainReferenceOnOrder(tf, data, run.params, kernels, orders);
    for (const curve of ['trainLoss', 'valLoss'] as const) {
      reference[curve].forEach((v, i) => t.true(Math.abs(v - result.curves[curve][i]) < 1e-4, `${curve}[${i}]: ${v} vs ${result.curves[curve][i]}`));
    }
  });
}

test.serial('early stopping restores the best epoch and reports runs as they finish', async (t) => {
  const finished: string[] = [];
  const results = await trainHeads(data, [spec('fast', { learningRate: 0.05, epochs: 30 }), spec('slow', { learningRate: 1e-4, epochs: 4 })],
    { monitor: 'val_loss', patience: 2 }, { onRunFinished: (r) => { finished.push(r.key); } });
  t.deepEqual(finished.sort(), ['fast', 'slow']);
  for (const r of results) {
    t.is(r.val.loss, Math.min(...r.curves.valLoss));
    t.is(r.curves.valLoss.indexOf(r.val.loss) + 1, r.bestEpoch);
    t.is(r.test.predicted.length, data.test.y.length);
  }
  const slow = results.find((r) => r.key === 'slow')!;
  t.is(slow.epochsRun, 4);
});

test.serial('shouldStop abandons the runs in progress and returns the runs finished so far', async (t) => {
  const finished: string[] = [];
  const endless = { epochs: 1_000_000 }; // with patience 0 it would train for minutes
  const results = await trainHeads(data, [spec('short', { epochs: 1 }), spec('long', endless), spec('longer', endless)],
    { monitor: 'val_loss', patience: 0 }, { onRunFinished: (r) => { finished.push(r.key); }, shouldStop: () => finished.length > 0 });
  t.deepEqual(finished, ['short']);
  t.deepEqual(results.map((r) => r.key), ['short']);
});

test.serial('the dropout kernel keeps Bernoulli(1 - p) of the elements, scaled by 1 / (1 - p)', async (t) => {
  const memory = new WebAssembly.Memory({ initial: 4 });
  const kernels = new Kernels(await kernelModule(), memory);
  const n = 32768;
  const floats = new Float32Array(memory.buffer, 0, n).fill(1);
  runStreams({ key: 'mask', seed: 1 }).dropout.fill(new Uint8Array(memory.buffer), n * 4, n * 2);
  const { threshold, scale } = dropoutThreshold(0.2);
  kernels.mask({ data: 0, floats: n, random: n * 4, threshold, scale });
  const kept = floats.filter((v) => v !== 0);
  t.true(kept.every((v) => v === Math.fround(scale)));
  t.true(Math.abs(kept.length / n - 0.8) < 0.01, `kept ${kept.length / n}`);
});

/** float32 a + b, a * b: the kernels' arithmetic, one rounding per operation. */
const add = (a: number, b: number) => Math.fround(a + b);
const mul = (a: number, b: number) => Math.fround(a * b);

test.serial('dense and outer reduce every output in the documented order, however outputs are grouped', async (t) => {
  const memory = new WebAssembly.Memory({ initial: 1 });
  const kernels = new Kernels(await kernelModule(), memory);
  const f32 = new Float32Array(memory.buffer);
  const [inputs, rows] = [24, 3];
  const random = runStreams({ key: 'kernels', seed: 1 }).init.uint32s(4096);
  f32.set(Float32Array.from(random, (u) => u / 2 ** 31 - 1)); // [-1, 1): cancellation makes the order visible
  const [x, w, bias, out] = [0, 1024, 2048, 3072]; // float offsets
  for (const units of [1, 2, 3, 4, 5, 6, 7]) {
    kernels.dense({ out: out * 4, input: x * 4, kernel: w * 4, bias: bias * 4, rows, inputs, units });
    for (let r = 0; r < rows; r++) {
      for (let u = 0; u < units; u++) {
        // two f32x4 accumulators over alternate 4-float blocks, then (lane 0 + 1) + (lane 2 + 3), then the bias
        const acc = [0, 0, 0, 0, 0, 0, 0, 0];
        for (let i = 0; i < inputs; i++) acc[i % 8] = add(acc[i % 8], mul(f32[x + r * inputs + i], f32[w + u * inputs + i]));
        const lanes = [0, 1, 2, 3].map((l) => add(acc[l], acc[l + 4]));
        t.is(f32[out + r * units + u], add(add(add(lanes[0], lanes[1]), add(lanes[2], lanes[3])), f32[bias + u]), `dense ${units} units`);
      }
    }
    // the kernel gradient: g[u, i] = sum_r d[r, u] * x[r, i], summed over r in order
    kernels.kernelGradient({ out: out * 4, outGrad: w * 4, input: x * 4, rows, inputs, units });
    for (let u = 0; u < units; u++) {
      for (let i = 0; i < inputs; i++) {
        let sum = 0;
        for (let r = 0; r < rows; r++) sum = add(sum, mul(f32[w + r * units + u], f32[x + r * inputs + i]));
        t.is(f32[out + u * inputs + i], sum, `outer ${units} units`);
      }
    }
  }
});

test.serial('the kernels the build wrote are the assembly of the current WebAssembly text', async (t) => {
  t.deepEqual(new Uint8Array(await readFile(KERNELS_WASM)), await assembleKernels());
});
