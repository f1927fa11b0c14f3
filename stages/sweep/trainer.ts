/**
 * The batched trainer behind `pipeline sweep`: many small dense heads over cached
 * embeddings, trained together.
 *
 * Runs that share a shape (hidden units, batch size, optimizer) form a group whose heads
 * are stacked in one WebAssembly memory (see stack.ts); each epoch advances every active
 * run of the group by one pass over its own shuffle with SIMD kernels, then evaluates all
 * of them on val with one tfjs matMul ([n, dim] x [dim, runs * units]: the shared input
 * makes this the efficient shape for tfjs). Runs that stop early leave the group, get
 * their best weights restored and their train/test scores, and are reported at once.
 *
 * Protocol: fit on train; after each epoch, train scores are the running average over the
 * epoch's batches (with dropout, like Keras' logs) and val is evaluated; the best epoch by
 * the monitored metric (strict improvement, so ties keep the earlier epoch) is restored
 * and test is evaluated once, with those weights. Nothing is selected on test.
 * Early stopping counts epochs without improvement like Keras' EarlyStopping (min_delta 0);
 * patience 0 disables stopping but the best epoch is still restored.
 */
import type * as tfjs from '@tensorflow/tfjs';
import { HeadStack, argmax, crossEntropy, softmaxInto, type StackRun } from './stack.js';

export interface HeadParams {
  dropout: number;
  learningRate: number;
  epochs: number;
  batchSize: number;
  optimizer: 'adam' | 'sgd' | 'rmsprop';
  /** 0 = no hidden layer; otherwise Dropout -> Dense(hidden, relu) -> Dropout -> Dense(classes), same rate twice. Multiple of 8. */
  hiddenUnits: number;
  /** Keras l2(weightDecay) on the kernels (not biases): weightDecay * sum(w^2) added to the training loss. */
  weightDecay: number;
  labelSmoothing: number;
  classWeight: 'none' | 'balanced';
}
export interface RunSpec { key: string; params: HeadParams; seed: number }
export interface SplitData { x: Float32Array /* n x dim, row-major */; y: Int32Array /* class index */ }
/** dim must be a multiple of 8 (the SIMD kernels' block). */
export interface TrainData { dim: number; classes: number; train: SplitData; val: SplitData; test: SplitData }
export interface EarlyStopping { monitor: 'val_loss' | 'val_accuracy'; patience: number } // patience 0 = off
export interface EpochCurves { trainLoss: number[]; trainAccuracy: number[]; valLoss: number[]; valAccuracy: number[] }
/** loss: mean categorical cross-entropy against the plain labels (no smoothing, no class weights). */
export interface SplitScores { loss: number; accuracy: number }
export interface RunResult {
  key: string; seed: number; bestEpoch: number /* 1-based */; epochsRun: number; curves: EpochCurves;
  train: SplitScores; val: SplitScores; test: SplitScores & { predicted: Int32Array; probabilities: Float32Array /* n x classes */ };
  /** the restored best weights, Keras names and layout: dense/kernel [dim, units], dense/bias, dense_1/... */
  weights: { name: string; shape: number[]; values: Float32Array }[];
  /** this run's own training steps plus its share of the group's evaluations */
  trainSeconds: number;
}
export interface TrainHooks {
  onRunFinished?: (result: RunResult) => void | Promise<void>;
  /** polled between epochs; when true, trainHeads returns the runs finished so far */
  shouldStop?: () => boolean;
}

type Tf = typeof tfjs;
type SplitName = 'train' | 'val' | 'test';

export async function trainHeads(tf: Tf, data: TrainData, runs: RunSpec[], early: EarlyStopping,
  hooks: TrainHooks = {}): Promise<RunResult[]> {
  validate(data, runs);
  const inputs = splitTensors(tf, data);
  const finished = new Map<RunSpec, RunResult>();
  try {
    for (const group of groupByShape(runs)) {
      if (hooks.shouldStop?.()) break;
      await trainGroup(tf, data, inputs, group, early, async (spec, result) => {
        finished.set(spec, result);
        await hooks.onRunFinished?.(result);
      }, hooks.shouldStop);
    }
  } finally {
    tf.dispose(Object.values(inputs));
  }
  return runs.flatMap((spec) => finished.get(spec) ?? []);
}

function validate(data: TrainData, runs: RunSpec[]): void {
  const { dim, classes } = data;
  if (dim % 8) throw new RangeError(`feature dim must be a multiple of 8, got ${dim}`);
  for (const [name, split] of Object.entries({ train: data.train, val: data.val, test: data.test })) {
    if (split.x.length !== split.y.length * dim) throw new RangeError(`${name}: x has ${split.x.length} values for ${split.y.length} rows of ${dim}`);
    if (split.y.some((label) => label < 0 || label >= classes)) throw new RangeError(`${name}: label outside 0..${classes - 1}`);
  }
  if (!data.train.y.length || !data.val.y.length) throw new RangeError('train and val must not be empty');
  for (const { key, params } of runs) {
    if (params.hiddenUnits % 8) throw new RangeError(`${key}: hiddenUnits must be a multiple of 8`);
    if (!(params.batchSize >= 1 && params.epochs >= 1)) throw new RangeError(`${key}: batchSize and epochs must be >= 1`);
  }
}

function splitTensors(tf: Tf, data: TrainData): Record<SplitName, tfjs.Tensor2D> {
  const tensor = (split: SplitData) => tf.tensor2d(split.x, [split.y.length, data.dim]);
  return { train: tensor(data.train), val: tensor(data.val), test: tensor(data.test) };
}

/** Runs that can share one stack: the same parameter layout, step size and optimizer state. */
function groupByShape(runs: RunSpec[]): RunSpec[][] {
  const groups = new Map<string, RunSpec[]>();
  for (const run of runs) {
    const { hiddenUnits, batchSize, optimizer } = run.params;
    const key = JSON.stringify([hiddenUnits, batchSize, optimizer]);
    groups.set(key, [...(groups.get(key) ?? []), run]);
  }
  return [...groups.values()];
}

/** A run in training: its stack slot and everything recorded so far. */
interface Progress {
  readonly run: StackRun;
  readonly curves: EpochCurves;
  best: { epoch: number; score: number; params: Float32Array } | null;
  epochsWithoutImprovement: number;
  seconds: number;
}

async function trainGroup(tf: Tf, data: TrainData, inputs: Record<SplitName, tfjs.Tensor2D>, group: RunSpec[],
  early: EarlyStopping, finish: (spec: RunSpec, result: RunResult) => Promise<void>, shouldStop?: () => boolean): Promise<void> {
  const { hiddenUnits, batchSize, optimizer } = group[0].params;
  const stack = new HeadStack({ dim: data.dim, hiddenUnits, classes: data.classes, batchSize, optimizer }, data.train, group.length);
  const counts = classCounts(data.train.y, data.classes);
  let active: Progress[] = group.map((spec, slot) => ({
    run: stack.addRun(slot, spec, counts),
    curves: { trainLoss: [], trainAccuracy: [], valLoss: [], valAccuracy: [] },
    best: null, epochsWithoutImprovement: 0, seconds: 0,
  }));
  for (let epoch = 1; active.length && !shouldStop?.(); epoch++) {
    for (const progress of active) trainOneEpoch(stack, progress, data.train.y.length);
    timed(active, () => recordValidation(tf, stack, inputs.val, data.val.y, active, epoch, early));
    const done = active.filter((p) => epoch >= p.run.spec.params.epochs || (early.patience > 0 && p.epochsWithoutImprovement >= early.patience));
    if (!done.length) continue;
    active = active.filter((p) => !done.includes(p));
    for (const p of done) stack.restore(p.run, p.best!.params);
    const results = timed(done, () => finalScores(tf, stack, inputs, data, done));
    for (const [i, p] of done.entries()) await finish(p.run.spec, results[i]);
  }
}

function classCounts(labels: Int32Array, classes: number): Int32Array {
  const counts = new Int32Array(classes);
  for (const label of labels) counts[label]++;
  return counts;
}

function trainOneEpoch(stack: HeadStack, progress: Progress, rows: number): void {
  const started = performance.now();
  const { lossSum, correct } = stack.trainEpoch(progress.run);
  progress.curves.trainLoss.push(lossSum / rows);
  progress.curves.trainAccuracy.push(correct / rows);
  progress.seconds += (performance.now() - started) / 1000;
}

/** Runs `work` and charges its wall time to `runs` in equal shares. */
function timed<T>(runs: Progress[], work: () => T): T {
  const started = performance.now();
  const result = work();
  const share = (performance.now() - started) / 1000 / runs.length;
  for (const p of runs) p.seconds += share;
  return result;
}

function recordValidation(tf: Tf, stack: HeadStack, x: tfjs.Tensor2D, y: Int32Array, active: Progress[],
  epoch: number, early: EarlyStopping): void {
  const logits = evaluateLogits(tf, stack, x, active.map((p) => p.run));
  for (const [i, p] of active.entries()) {
    const { loss, accuracy } = scoreLogits(logits[i], y, stack.shape.classes).scores;
    p.curves.valLoss.push(loss);
    p.curves.valAccuracy.push(accuracy);
    const score = early.monitor === 'val_loss' ? -loss : accuracy;
    if (!p.best || score > p.best.score) {
      p.best = { epoch, score, params: stack.snapshot(p.run) };
      p.epochsWithoutImprovement = 0;
    } else {
      p.epochsWithoutImprovement++;
    }
  }
}

/** Train and test scores of finished runs, whose best weights are already restored in the stack. */
function finalScores(tf: Tf, stack: HeadStack, inputs: Record<SplitName, tfjs.Tensor2D>, data: TrainData,
  done: Progress[]): RunResult[] {
  const runs = done.map((p) => p.run);
  const train = evaluateLogits(tf, stack, inputs.train, runs);
  const test = evaluateLogits(tf, stack, inputs.test, runs);
  return done.map((p, i) => {
    const best = p.best!.epoch;
    const testScores = scoreLogits(test[i], data.test.y, data.classes);
    return {
      key: p.run.spec.key, seed: p.run.spec.seed, bestEpoch: best, epochsRun: p.curves.valLoss.length, curves: p.curves,
      train: scoreLogits(train[i], data.train.y, data.classes).scores,
      val: { loss: p.curves.valLoss[best - 1], accuracy: p.curves.valAccuracy[best - 1] },
      test: { ...testScores.scores, predicted: testScores.predicted, probabilities: testScores.probabilities },
      weights: stack.weights(p.run),
      trainSeconds: p.seconds,
    };
  });
}

/**
 * Logits of every run on x, as one [n, runs * units] matMul for the first layer (kernels
 * concatenated by columns) and, with a hidden layer, one small matMul per run after it.
 */
function evaluateLogits(tf: Tf, stack: HeadStack, x: tfjs.Tensor2D, runs: StackRun[]): Float32Array[] {
  const weights = runs.map((run) => stack.weights(run));
  const [first, second] = stack.layout.layers;
  const out = tf.tidy(() => {
    const kernel = tf.tensor2d(concatColumns(weights.map((w) => w[0].values), first.inputs, first.units), [first.inputs, runs.length * first.units]);
    const bias = tf.tensor1d(concatArrays(weights.map((w) => w[1].values)));
    const layer1 = tf.add(tf.matMul(x, kernel), bias);
    if (!second) return layer1;
    return tf.concat(weights.map((w, i) => {
      const hidden = tf.relu(tf.slice(layer1, [0, i * first.units], [-1, first.units]));
      return tf.add(tf.matMul(hidden, tf.tensor2d(w[2].values, [second.inputs, second.units])), tf.tensor1d(w[3].values));
    }), 1);
  });
  const values = out.dataSync() as Float32Array;
  out.dispose();
  const classes = stack.shape.classes;
  const rows = x.shape[0];
  return runs.map((_, r) => {
    const logits = new Float32Array(rows * classes);
    for (let i = 0; i < rows; i++) logits.set(values.subarray((i * runs.length + r) * classes, (i * runs.length + r + 1) * classes), i * classes);
    return logits;
  });
}

/** [inputs, units] blocks side by side: [inputs, blocks * units]. */
function concatColumns(blocks: Float32Array[], inputs: number, units: number): Float32Array {
  const out = new Float32Array(inputs * units * blocks.length);
  for (const [b, block] of blocks.entries()) {
    for (let i = 0; i < inputs; i++) out.set(block.subarray(i * units, (i + 1) * units), (i * blocks.length + b) * units);
  }
  return out;
}

function concatArrays(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
}

function scoreLogits(logits: Float32Array, labels: Int32Array, classes: number):
  { scores: SplitScores; predicted: Int32Array; probabilities: Float32Array } {
  const predicted = new Int32Array(labels.length);
  const probabilities = new Float32Array(labels.length * classes);
  let lossSum = 0;
  let correct = 0;
  for (let i = 0; i < labels.length; i++) {
    const p = probabilities.subarray(i * classes, (i + 1) * classes);
    softmaxInto(p, logits.subarray(i * classes, (i + 1) * classes));
    predicted[i] = argmax(p);
    lossSum += crossEntropy(p, labels[i]);
    if (predicted[i] === labels[i]) correct++;
  }
  const n = Math.max(labels.length, 1);
  return { scores: { loss: lossSum / n, accuracy: correct / n }, predicted, probabilities };
}
