import test, { type ExecutionContext } from 'ava';
import * as tf from '@tensorflow/tfjs';
import { readFile } from 'node:fs/promises';
import { syntheticData } from './helpers/synthetic.js';
import { assembleKernels } from '../scripts/assemble-kernels.js';
import { dropoutThreshold, glorotUniform, runStreams } from '../stages/sweep/random.js';
import { trainReferenceOnOrder } from '../stages/sweep/reference.js';
import { KERNELS_WASM, Kernels, kernelModule } from '../stages/sweep/simd.js';
import { type EarlyStopping, type HeadParams, type RunResult, type RunSpec, type SplitData, type TrainData, trainHeads } from '../stages/sweep/trainer.js';

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

/** Largest |a - b| over two equally long lists. */
const maxDifference = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  if (a.length !== b.length) return Infinity;
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
};

/**
 * Trains `run` (dropout 0) with the sweep trainer and the tf.layers reference from the same
 * initial kernels and batch order; compares val loss per epoch, the restored best epoch's
 * weights, and the training loss where tf.layers reports the same number (no smoothing,
 * class weights or L2 penalty in its loss).
 */
async function compareWithReference(t: ExecutionContext, run: RunSpec, trainData: TrainData = data): Promise<void> {
  const epochs = run.params.epochs;
  const [result] = await trainHeads(trainData, [run], { monitor: 'val_loss', patience: 0 });
  const streams = runStreams(run);
  const { hiddenUnits } = run.params;
  const widths = hiddenUnits ? [trainData.dim, hiddenUnits, trainData.classes] : [trainData.dim, trainData.classes];
  const kernels = widths.slice(1).map((units, i) => glorotUniform(streams.init, widths[i], units));
  const orders = Array.from({ length: epochs }, () => streams.shuffle.permutation(trainData.train.y.length));
  const reference = await trainReferenceOnOrder(tf, trainData, run.params, kernels, orders);
  const curves = ['valLoss', ...(plainLoss(run.params) ? ['trainLoss'] as const : [])] as const;
  for (const curve of curves) {
    reference[curve].forEach((v, i) => t.true(Math.abs(v - result.curves[curve][i]) < 1e-4, `${curve}[${i}]: ${v} vs ${result.curves[curve][i]}`));
  }
  const best = reference.weights[result.bestEpoch - 1];
  t.is(result.weights.length, best.length);
  result.weights.forEach((w, i) => {
    const difference = maxDifference(w.values, best[i]);
    t.true(difference < 1e-4, `${w.name} at epoch ${result.bestEpoch}: max |difference| ${difference}`);
  });
}

const plainLoss = (p: HeadParams) => !p.labelSmoothing && p.classWeight === 'none' && !p.weightDecay;

const referenceCases: [string, Partial<HeadParams>][] = [
  ['adam', {}],
  ['adam, hidden layer', { hiddenUnits: 16 }],
  ['sgd', { optimizer: 'sgd', learningRate: 0.1 }],
  ['sgd, hidden layer', { optimizer: 'sgd', learningRate: 0.1, hiddenUnits: 16 }],
  ['rmsprop', { optimizer: 'rmsprop', learningRate: 0.003 }],
  ['rmsprop, hidden layer', { optimizer: 'rmsprop', learningRate: 0.003, hiddenUnits: 16 }],
  ['adam, L2 weight decay', { weightDecay: 0.01 }],
  ['sgd, L2 weight decay, hidden layer', { optimizer: 'sgd', learningRate: 0.1, weightDecay: 0.01, hiddenUnits: 16 }],
  ['adam, label smoothing', { labelSmoothing: 0.2 }],
  ['adam, balanced class weights', { classWeight: 'balanced' }],
  ['rmsprop, hidden layer, L2, smoothing, balanced class weights',
    { optimizer: 'rmsprop', learningRate: 0.003, hiddenUnits: 16, weightDecay: 0.001, labelSmoothing: 0.1, classWeight: 'balanced' }],
];
for (const [name, params] of referenceCases) {
  test.serial(`matches the tf.layers reference step for step with dropout 0: ${name}`, (t) =>
    compareWithReference(t, spec('ref', { ...params, dropout: 0, epochs: 3 })));
}

test.serial('matches the tf.layers reference with 2560-d inputs (two concatenated 1280-d sizes), hidden layer', (t) =>
  compareWithReference(t, spec('ref-2560', { dropout: 0, epochs: 2, hiddenUnits: 16 }), syntheticData({ train: 100, val: 30, test: 20 }, 2560, 5)));

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

/** `split` with `views` rows per image: view 0 the image's own row, view v its row shifted by `shift(v)` (0 = a copy). */
function withViews(split: SplitData, dim: number, views: number, shift: (v: number) => number): SplitData {
  const images = split.y.length;
  const x = new Float32Array(images * views * dim);
  for (let i = 0; i < images; i++) {
    for (let v = 0; v < views; v++) {
      const row = split.x.subarray(i * dim, (i + 1) * dim);
      x.set(row.map((value, k) => value + shift(v) * Math.sin(i + v * 7 + k)), (i * views + v) * dim);
    }
  }
  return { x, y: split.y, views };
}

test.serial('val and test views that copy the image give exactly the one-view results', async (t) => {
  const run = spec('views', { hiddenUnits: 16 });
  const [one] = await trainHeads(data, [run], early);
  const copies = { ...data, val: withViews(data.val, data.dim, 3, () => 0), test: withViews(data.test, data.dim, 3, () => 0) };
  const [three] = await trainHeads(copies, [run], early);
  t.deepEqual(numbers(three), numbers(one));
  t.is(three.test.probabilities.length, data.test.y.length * data.classes);
  t.is(three.test.firstViewAccuracy, three.test.accuracy);
});

test.serial('with several views, val and test score the mean of the views\' probabilities; firstViewAccuracy scores view 0 alone', async (t) => {
  const views = 4;
  const viewed = { ...data, val: withViews(data.val, data.dim, views, (v) => 0.3 * v), test: withViews(data.test, data.dim, views, (v) => 0.3 * v) };
  const [result] = await trainHeads(viewed, [spec('views', { dropout: 0.2 })], early);
  const [kernel, bias] = result.weights.map((w) => w.values);
  const { dim, classes } = data;
  /** the linear head's softmax of row r of x, in float64 */
  const softmax = (x: Float32Array, r: number) => {
    const logits = Array.from({ length: classes }, (_, c) => {
      let sum = bias[c];
      for (let k = 0; k < dim; k++) sum += x[r * dim + k] * kernel[k * classes + c];
      return sum;
    });
    const max = Math.max(...logits);
    const e = logits.map((z) => Math.exp(z - max));
    const total = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / total);
  };
  const averaged = (split: SplitData, i: number) => {
    const p = new Array<number>(classes).fill(0);
    for (let v = 0; v < views; v++) softmax(split.x, i * views + v).forEach((q, c) => { p[c] += q / views; });
    return p;
  };
  const argmaxOf = (p: number[]) => p.indexOf(Math.max(...p));
  let firstViewHits = 0;
  let hits = 0;
  viewed.test.y.forEach((label, i) => {
    const p = averaged(viewed.test, i);
    t.true(maxDifference(p, result.test.probabilities.subarray(i * classes, (i + 1) * classes)) < 1e-5, `test image ${i}`);
    if (argmaxOf(p) === label) hits++;
    if (argmaxOf(softmax(viewed.test.x, i * views)) === label) firstViewHits++;
  });
  t.is(result.test.accuracy, hits / viewed.test.y.length);
  t.is(result.test.firstViewAccuracy, firstViewHits / viewed.test.y.length);
  t.not(result.test.firstViewAccuracy, result.test.accuracy, 'views this different should change some prediction');
  const valLoss = viewed.val.y.reduce((sum, label, i) => sum - Math.log(averaged(viewed.val, i)[label]), 0) / viewed.val.y.length;
  t.true(Math.abs(valLoss - result.val.loss) < 1e-5, `val loss ${valLoss} vs ${result.val.loss}`);
});

test.serial('views are checked: train has one view per row, x must hold images x views rows', async (t) => {
  const run = [spec('bad')];
  await t.throwsAsync(trainHeads({ ...data, train: { ...data.train, views: 2 } }, run, early), { message: /train: views must be 1/ });
  await t.throwsAsync(trainHeads({ ...data, test: { ...data.test, views: 2 } }, run, early), { message: /test: x has .* images x 2 views/ });
});
