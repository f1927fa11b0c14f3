import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { syntheticData } from '../bench/sweep.js';
import { dropoutThreshold, glorotUniform, runStreams } from '../stages/sweep/random.js';
import { trainReferenceOnOrder } from '../stages/sweep/reference.js';
import { instantiateKernels, kernelModule } from '../stages/sweep/simd.js';
import { type EarlyStopping, type HeadParams, type RunResult, type RunSpec, trainHeads } from '../stages/sweep/trainer.js';

// Tests are serial: the leak check counts tf.memory() tensors, which concurrent tests would share.
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

test.serial('same runs and seeds give bitwise identical results, and no tensor leaks', async (t) => {
  const runs = [spec('a'), spec('b', { hiddenUnits: 16, optimizer: 'rmsprop', weightDecay: 1e-3 })];
  const before = tf.memory().numTensors;
  const [first, second] = [await trainHeads(data, runs, early), await trainHeads(data, runs, early)];
  t.is(tf.memory().numTensors, before);
  t.deepEqual(first.map(numbers), second.map(numbers));
});

test.serial("a run's numbers do not depend on the runs batched with it", async (t) => {
  const run = spec('target', { dropout: 0.4, classWeight: 'balanced', labelSmoothing: 0.1 }, 2);
  const [alone] = await trainHeads(data, [run], early);
  const batch = await trainHeads(data, [spec('x', { learningRate: 0.003 }), run, spec('y', { dropout: 0 }), spec('x', {}, 2)], early);
  const together = batch.find((r) => r.key === 'target')!;
  const [a, b] = [numbers(alone), numbers(together)];
  t.is(a.length, b.length);
  t.true(a.every((v, i) => Math.abs(v - b[i]) <= 1e-5));
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

test.serial('shouldStop between epochs returns only finished runs', async (t) => {
  let polls = 0;
  const results = await trainHeads(data, [spec('short', { epochs: 1 }), spec('long', { epochs: 5 })], early,
    { shouldStop: () => ++polls > 2 });
  t.deepEqual(results.map((r) => r.key), ['short']);
});

test.serial('the dropout kernel keeps Bernoulli(1 - p) of the elements, scaled by 1 / (1 - p)', async (t) => {
  const memory = new WebAssembly.Memory({ initial: 4 });
  const kernels = instantiateKernels(await kernelModule(), memory);
  const n = 32768;
  const floats = new Float32Array(memory.buffer, 0, n).fill(1);
  runStreams({ key: 'mask', seed: 1 }).dropout.fill(new Uint8Array(memory.buffer), n * 4, n * 2);
  const { threshold, scale } = dropoutThreshold(0.2);
  kernels.mask(0, n * 4, n * 4, threshold, scale);
  const kept = floats.filter((v) => v !== 0);
  t.true(kept.every((v) => v === Math.fround(scale)));
  t.true(Math.abs(kept.length / n - 0.8) < 0.01, `kept ${kept.length / n}`);
});
