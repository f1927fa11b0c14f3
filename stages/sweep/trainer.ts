/**
 * The trainer behind `pipeline sweep`: many small dense heads over cached embeddings.
 *
 * Runs are independent, so they are spread over worker threads (one per core, in the
 * project's worker pool, core/worker-pool.ts), each of which trains whole runs one at a time with the SIMD kernels (worker.ts, head.ts) and
 * takes the next pending run when it is done: the cores stay busy until the last run,
 * however early the others stop. A run's numbers depend only on its spec and the data:
 * its randomness comes from its own streams and every kernel reduces in a fixed order, so
 * results are bitwise the same whichever worker trains it, alone or among others. No
 * tfjs is involved, so they do not depend on the tfjs backend either.
 */
import { availableParallelism } from 'node:os';
import { kernelModule } from './simd.js';
import { PoolClosedError, startWorkerPool } from '../../core/worker-pool.js';
import { messageOf } from '../../core/errors.js';
import type { EarlyStopping, RunResult, RunSpec, TrainData, WorkerSetup } from './types.js';

export type { EarlyStopping, EpochCurves, HeadParams, RunResult, RunSpec, SplitData, SplitScores, TestScores, TrainData } from './types.js';

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
  const pool = await startWorkerPool<RunSpec, RunResult>({
    script: new URL('./worker.js', import.meta.url),
    workerData: setup,
    size: Math.min(options.workers ?? workerCount(runs.length), runs.length),
  });
  const finished = new Map<RunSpec, RunResult>();
  let stopped = false;
  const stop = () => {
    stopped ||= options.shouldStop?.() ?? false;
    return stopped;
  };
  const poll = setInterval(() => { if (stop()) void pool.close(); }, STOP_POLL_MS);
  let next = 0;
  try {
    // One lane per worker, each taking the next pending run as soon as its last one is done.
    await Promise.all(Array.from({ length: pool.size }, async () => {
      while (next < runs.length && !stop()) {
        const spec = runs[next++];
        let result: RunResult;
        try {
          result = await pool.run(spec);
        } catch (error) {
          if (error instanceof PoolClosedError) return; // stopped: the run in progress is abandoned
          throw new Error(`sweep worker failed on ${spec.key} seed ${spec.seed}: ${messageOf(error)}`);
        }
        if (stop()) return; // finished after the stop: not reported
        finished.set(spec, result);
        await options.onRunFinished?.(result);
      }
    }));
  } finally {
    clearInterval(poll);
    await pool.close();
  }
  return runs.flatMap((spec) => finished.get(spec) ?? []);
}

/** One worker thread per core, never more than there are runs. */
export function workerCount(runs: number): number {
  return Math.min(availableParallelism(), runs);
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
