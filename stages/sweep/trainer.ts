/**
 * The trainer behind `pipeline sweep`: many small dense heads over cached embeddings.
 *
 * Runs are independent, so they are spread over worker threads (one per core), each of
 * which trains whole runs one at a time with the SIMD kernels (worker.ts, head.ts) and
 * takes the next pending run when it is done: the cores stay busy until the last run,
 * however early the others stop. A run's numbers depend only on its spec and the data:
 * its randomness comes from its own streams and every kernel reduces in a fixed order, so
 * results are bitwise the same whichever worker trains it, alone or among others. No
 * tfjs is involved, so they do not depend on the tfjs backend either.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { kernelModule } from './simd.js';
import type { WorkerSetup } from './worker.js';

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
/**
 * One split: x holds `views` rows per image, image-major (image i's views are rows
 * i * views .. i * views + views - 1, view 0 the original), y one class index per image.
 * With views > 1 (val and test only; train's views are simply more rows), a split is scored
 * on each image's probabilities averaged over its views.
 */
export interface SplitData { x: Float32Array /* n * views x dim, row-major */; y: Int32Array /* class index per image */; views?: number /* default 1 */ }
/** dim: any multiple of 8 (the SIMD kernels' block), e.g. 2560 for two concatenated 1280-d sizes. */
export interface TrainData { dim: number; classes: number; train: SplitData; val: SplitData; test: SplitData }
export interface EarlyStopping { monitor: 'val_loss' | 'val_accuracy'; patience: number } // patience 0 = off
export interface EpochCurves { trainLoss: number[]; trainAccuracy: number[]; valLoss: number[]; valAccuracy: number[] }
/** loss: mean categorical cross-entropy against the plain labels (no smoothing, no class weights). */
export interface SplitScores { loss: number; accuracy: number }
/** A split's scores over its images, with per-image predictions and probabilities averaged over views. */
export interface TestScores extends SplitScores {
  predicted: Int32Array; probabilities: Float32Array /* images x classes */;
  /** accuracy of view 0 alone (no test-time averaging); equals accuracy with one view */
  firstViewAccuracy: number;
}
export interface RunResult {
  key: string; seed: number; bestEpoch: number /* 1-based */; epochsRun: number; curves: EpochCurves;
  train: SplitScores; val: SplitScores; test: TestScores;
  /** the restored best weights, Keras names and layout: dense/kernel [dim, units], dense/bias, dense_1/... */
  weights: { name: string; shape: number[]; values: Float32Array }[];
  /** wall time of this run in its worker */
  trainSeconds: number;
}
export interface TrainOptions {
  onRunFinished?: (result: RunResult) => void | Promise<void>;
  /** polled while training; when true, runs in progress are abandoned and trainHeads returns the runs finished so far */
  shouldStop?: () => boolean;
  /** worker threads (default: one per core, never more than there are runs) */
  workers?: number;
}

/** How often shouldStop is polled while the workers train. */
const STOP_POLL_MS = 50;

export async function trainHeads(data: TrainData, runs: RunSpec[], early: EarlyStopping, options: TrainOptions = {}): Promise<RunResult[]> {
  validate(data, runs);
  if (!runs.length) return [];
  const setup: WorkerSetup = { module: await kernelModule(), data, early };
  const workers = Array.from({ length: Math.min(options.workers ?? workerCount(runs.length), runs.length) },
    () => new Worker(new URL('./worker.js', import.meta.url), { workerData: setup }));
  const finished = new Map<RunSpec, RunResult>();
  let stopped = false;
  const stop = () => {
    stopped ||= options.shouldStop?.() ?? false;
    return stopped;
  };
  const poll = setInterval(() => { if (stop()) for (const worker of workers) void worker.terminate(); }, STOP_POLL_MS);
  let next = 0;
  try {
    await Promise.all(workers.map(async (worker) => {
      while (next < runs.length && !stop()) {
        const spec = runs[next++];
        const result = await train(worker, spec);
        if (!result || stop()) return; // terminated, or finished after the stop: not reported
        finished.set(spec, result);
        await options.onRunFinished?.(result);
      }
    }));
  } finally {
    clearInterval(poll);
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  return runs.flatMap((spec) => finished.get(spec) ?? []);
}

/** One worker thread per core, never more than there are runs. */
export function workerCount(runs: number): number {
  return Math.min(availableParallelism(), runs);
}

/** The worker's result for `spec`, or null if the worker was terminated first. */
function train(worker: Worker, spec: RunSpec): Promise<RunResult | null> {
  return new Promise((resolve, reject) => {
    const settle = (finish: () => void) => {
      worker.off('message', onMessage).off('error', onError).off('exit', onExit);
      finish();
    };
    const onMessage = (result: RunResult) => settle(() => resolve(result));
    const onError = (error: Error) => settle(() => reject(new Error(`sweep worker failed on ${spec.key} seed ${spec.seed}: ${error.message}`)));
    const onExit = () => settle(() => resolve(null));
    worker.on('message', onMessage).on('error', onError).on('exit', onExit);
    worker.postMessage(spec);
  });
}

function validate(data: TrainData, runs: RunSpec[]): void {
  const { dim, classes } = data;
  if (dim % 8) throw new RangeError(`feature dim must be a multiple of 8, got ${dim}`);
  if ((data.train.views ?? 1) !== 1) throw new RangeError('train: views must be 1 (give each view its own row and label)');
  for (const [name, split] of Object.entries({ train: data.train, val: data.val, test: data.test })) {
    const views = split.views ?? 1;
    if (!(Number.isInteger(views) && views >= 1)) throw new RangeError(`${name}: views must be a positive integer, got ${views}`);
    if (split.x.length !== split.y.length * views * dim) {
      throw new RangeError(`${name}: x has ${split.x.length} values for ${split.y.length} images x ${views} views x ${dim}`);
    }
    if (split.y.some((label) => label < 0 || label >= classes)) throw new RangeError(`${name}: label outside 0..${classes - 1}`);
  }
  if (!data.train.y.length || !data.val.y.length) throw new RangeError('train and val must not be empty');
  for (const { key, params } of runs) {
    if (params.hiddenUnits % 8) throw new RangeError(`${key}: hiddenUnits must be a multiple of 8`);
    if (!(params.batchSize >= 1 && params.epochs >= 1)) throw new RangeError(`${key}: batchSize and epochs must be >= 1`);
  }
}
