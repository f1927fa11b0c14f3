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
import { HeadTrainer, argmax, crossEntropy, softmaxInto } from './head.js';
import type { EarlyStopping, EpochCurves, RunResult, RunSpec, SplitScores, TrainData } from './trainer.js';

export interface WorkerSetup { module: WebAssembly.Module; data: TrainData; early: EarlyStopping }

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
    const { loss, accuracy } = scoreLogits(trainer.logits('val'), data.val.y, data.classes);
    curves.valLoss.push(loss);
    curves.valAccuracy.push(accuracy);
    const score = early.monitor === 'val_loss' ? -loss : accuracy;
    if (!best || score > best.score) best = { epoch, score, params: trainer.snapshot() };
    else if (early.patience > 0 && epoch - best.epoch >= early.patience) break;
  }
  best = best!; // epochs >= 1, so the loop ran
  trainer.restore(best.params);
  const test = scoreLogits(trainer.logits('test'), data.test.y, data.classes);
  return {
    key: spec.key, seed: spec.seed, bestEpoch: best.epoch, epochsRun: curves.valLoss.length, curves,
    train: scores(scoreLogits(trainer.logits('train'), data.train.y, data.classes)),
    val: { loss: curves.valLoss[best.epoch - 1], accuracy: curves.valAccuracy[best.epoch - 1] },
    test: { ...scores(test), predicted: test.predicted, probabilities: test.probabilities },
    weights: trainer.weights(),
    trainSeconds: (performance.now() - started) / 1000,
  };
}

function classCounts(labels: Int32Array, classes: number): Int32Array {
  const counts = new Int32Array(classes);
  for (const label of labels) counts[label]++;
  return counts;
}

interface Scored extends SplitScores { predicted: Int32Array; probabilities: Float32Array }

const scores = ({ loss, accuracy }: Scored): SplitScores => ({ loss, accuracy });

/** loss: mean categorical cross-entropy against the plain labels. */
function scoreLogits(logits: Float32Array, labels: Int32Array, classes: number): Scored {
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
  return { loss: lossSum / n, accuracy: correct / n, predicted, probabilities };
}
