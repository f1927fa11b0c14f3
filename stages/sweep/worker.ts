/**
 * A sweep worker thread: trains whole runs, one at a time, as the main thread hands them
 * out (see trainer.ts), each in its own HeadTrainer memory.
 *
 * Protocol per run: fit on train; after each epoch, train scores are the running average
 * over the epoch's batches (with dropout, like Keras' logs) and val is evaluated; the best
 * epoch by the monitored metric (strict improvement, so ties keep the earlier epoch) is
 * restored and train and test are evaluated once, with those weights. Nothing is selected
 * on test. Early stopping counts epochs without improvement like Keras' EarlyStopping
 * (min_delta 0); patience 0 disables stopping but the best epoch is still restored.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { HeadTrainer, crossEntropy, softmaxInto } from './head.js';
import { argmax } from '../../core/arrays.js';
import { classCounts } from './class-weights.js';
import type { EpochCurves, RunResult, RunSpec, SplitData, SplitScores, TestScores, WorkerSetup } from './types.js';

const { module, data, early } = workerData as WorkerSetup;
const counts = classCounts(data.train.y, data.classes);
/** one trainer per memory layout: runs of the same shape reuse its memory */
const trainers = new Map<string, HeadTrainer>();

parentPort!.on('message', (spec: RunSpec) => parentPort!.postMessage(fitRun(spec) satisfies RunResult));

function trainerFor({ params: { hiddenUnits, batchSize, optimizer } }: RunSpec): HeadTrainer {
  const key = JSON.stringify([hiddenUnits, batchSize, optimizer]);
  let trainer = trainers.get(key);
  if (!trainer) trainers.set(key, (trainer = new HeadTrainer(module, { hiddenUnits, batchSize, optimizer }, data)));
  return trainer;
}

function fitRun(spec: RunSpec): RunResult {
  const started = performance.now();
  const trainer = trainerFor(spec);
  const run = trainer.startRun(spec, counts);
  const rows = data.train.y.length;
  const curves: EpochCurves = { trainLoss: [], trainAccuracy: [], valLoss: [], valAccuracy: [] };
  let best: { epoch: number; score: number; params: Float32Array } | undefined;
  for (let epoch = 1; epoch <= spec.params.epochs; epoch++) {
    const { lossSum, correct } = trainer.trainEpoch(run);
    curves.trainLoss.push(lossSum / rows);
    curves.trainAccuracy.push(correct / rows);
    const { loss, accuracy } = scoreLogits(trainer.logits('val'), data.val, data.classes);
    curves.valLoss.push(loss);
    curves.valAccuracy.push(accuracy);
    const score = early.monitor === 'val_loss' ? -loss : accuracy;
    if (!best || score > best.score) best = { epoch, score, params: trainer.snapshot() };
    else if (early.patience > 0 && epoch - best.epoch >= early.patience) break;
  }
  best = best!; // epochs >= 1, so the loop ran
  trainer.restore(best.params);
  const test = scoreLogits(trainer.logits('test'), data.test, data.classes);
  return {
    key: spec.key, seed: spec.seed, bestEpoch: best.epoch, epochsRun: curves.valLoss.length, curves,
    train: scores(scoreLogits(trainer.logits('train'), data.train, data.classes)),
    val: { loss: curves.valLoss[best.epoch - 1], accuracy: curves.valAccuracy[best.epoch - 1] },
    test,
    weights: trainer.weights(),
    trainSeconds: (performance.now() - started) / 1000,
  };
}

const scores = ({ loss, accuracy }: TestScores): SplitScores => ({ loss, accuracy });

/**
 * A split's scores from its logits: each image's probabilities are the mean of its views'
 * softmaxes (one view: its own softmax), and loss is the mean categorical cross-entropy of
 * those against the plain labels. firstViewAccuracy scores view 0 of each image alone.
 */
function scoreLogits(logits: Float32Array, split: SplitData, classes: number): TestScores {
  const { y: labels } = split;
  const views = split.views ?? 1;
  const predicted = new Int32Array(labels.length);
  const probabilities = new Float32Array(labels.length * classes);
  const sum = new Float64Array(classes);
  const view = new Float64Array(classes);
  let lossSum = 0;
  let correct = 0;
  let firstViewCorrect = 0;
  for (let i = 0; i < labels.length; i++) {
    sum.fill(0);
    for (let v = 0; v < views; v++) {
      const row = i * views + v;
      softmaxInto(view, logits.subarray(row * classes, (row + 1) * classes));
      if (v === 0 && argmax(view) === labels[i]) firstViewCorrect++;
      for (let c = 0; c < classes; c++) sum[c] += view[c];
    }
    for (let c = 0; c < classes; c++) sum[c] /= views;
    probabilities.set(sum, i * classes);
    predicted[i] = argmax(sum);
    lossSum += crossEntropy(sum, labels[i]);
    if (predicted[i] === labels[i]) correct++;
  }
  const n = Math.max(labels.length, 1);
  return { loss: lossSum / n, accuracy: correct / n, predicted, probabilities, firstViewAccuracy: firstViewCorrect / n };
}
