/**
 * The default sweep (dropout {0,.2,.4,.6} x lr {3e-4,1e-3,3e-3,1e-2} x seeds {1,2,3} = 48
 * runs, up to 50 epochs, batch 32, adam, early stopping on val_loss with patience 5)
 * through the sweep trainer (worker threads running SIMD kernels, on 2 and on 1 thread), through
 * a batched tfjs head (all runs stepped together as batched matmuls, bench/trainer-batched.ts)
 * on tfjs-node when it loads and on tfjs-wasm, and run by run through the tf.layers reference.
 *
 * Features: real TrashNet ones when ../shared exists, extracted by the extract stage (224x224,
 * onnx, else wasm) into runs/bench/trashnet-224.sqlite, which later runs reuse; otherwise
 * synthetic TrashNet-shaped ones.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { openDatabase } from '../cache/database.js';
import { type ExtractSummary, runExtract } from '../stages/extract.js';
import { loadSweepData } from '../stages/sweep.js';
import { trainReference } from '../stages/sweep/reference.js';
import { SweepSchema } from '../stages/sweep/config.js';
import { headParams, planRuns } from '../stages/sweep/plan.js';
import { trainBatched } from './trainer-batched.js';
import { type EarlyStopping, type RunResult, type RunSpec, type TrainData, trainHeads, workerCount } from '../stages/sweep/trainer.js';
import { syntheticData } from '../test/helpers/synthetic.js';
import { median } from './machine.js';

/** The checkout (this file runs as dist/bench/sweep.js). */
const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SHARED = resolve(REPO_ROOT, '..', 'shared');
const FEATURE_CACHE = join(REPO_ROOT, 'runs/bench/trashnet-224.sqlite');

/** The sweep `pipeline sweep` trains when the config has no `sweep:` section. */
const DEFAULT_SWEEP = SweepSchema.parse({});
const EARLY: EarlyStopping = DEFAULT_SWEEP.early_stopping;
const REPEATS = 3;
/** Reference runs actually timed; the rest is extrapolated per epoch. */
const REFERENCE_SAMPLE = 4;
/** Epochs of the batched tfjs head actually timed per repeat; the rest is extrapolated per run-epoch. */
const BATCHED_EPOCHS = 2;

/** The default sweep's runs, keyed as `pipeline sweep` keys them (so each run draws the same random streams). */
export function defaultSweep(): RunSpec[] {
  return planRuns(DEFAULT_SWEEP).map((run) => ({ key: run.runKey, seed: run.seed, params: headParams(run) }));
}

/** Real TrashNet features through the project's own extract stage, cached so later runs reuse them. */
async function realData(): Promise<{ data: TrainData; source: string }> {
  const log = () => {};
  let summary: ExtractSummary | undefined;
  for (const backend of ['onnx', 'wasm'] as const) {
    try {
      summary = await runExtract({
        dataset: { root: join(SHARED, 'datasets/trashnet'), url: null, sha256: null, splits: null },
        model: { weights: join(SHARED, 'models/mobilenet_v2_1.00_224_no_top/model.json'), size: { height: 224, width: 224 }, resize: 'fill' },
        db: FEATURE_CACHE, backend, batch: 8, concurrency: 4, log,
      });
      break;
    } catch (error) {
      if (backend === 'wasm') throw error;
      console.log(`extract with onnx failed (${(error as Error).message.split('\n')[0]}); falling back to wasm`);
    }
  }
  const { featureSet, extracted, seconds } = summary!;
  const db = openDatabase(FEATURE_CACHE);
  try {
    const data = await loadSweepData(db, featureSet, log);
    const work = extracted ? `extracted ${extracted} images in ${seconds.toFixed(1)} s` : 'all cached';
    return { data, source: `real TrashNet features, 224x224 ${featureSet.backend} (feature set ${featureSet.id} in ${FEATURE_CACHE}, ${work}; split ${data.splitSource})` };
  } finally {
    db.close();
  }
}

async function loadData(): Promise<{ data: TrainData; source: string }> {
  if (existsSync(SHARED)) return realData();
  return { data: syntheticData(), source: `synthetic features (seeded gaussian clusters: ${SHARED} not found)` };
}

/** The variant with the lowest mean best-epoch val loss over its seeds, and its mean val/test accuracy. */
function winner(results: RunResult[]): string {
  const variantOf = new Map(planRuns(DEFAULT_SWEEP).map((run) => [run.runKey, run.variantKey]));
  const byKey = new Map<string, RunResult[]>();
  for (const r of results) {
    const variant = variantOf.get(r.key) ?? r.key;
    byKey.set(variant, [...(byKey.get(variant) ?? []), r]);
  }
  const mean = (rs: RunResult[], f: (r: RunResult) => number) => rs.reduce((s, r) => s + f(r), 0) / rs.length;
  const [key, runs] = [...byKey].sort(([, a], [, b]) => mean(a, (r) => r.val.loss) - mean(b, (r) => r.val.loss))[0];
  return `winner ${key}: val loss ${mean(runs, (r) => r.val.loss).toFixed(4)}, val acc ${(100 * mean(runs, (r) => r.val.accuracy)).toFixed(2)}%, ` +
    `test acc ${(100 * mean(runs, (r) => r.test.accuracy)).toFixed(2)}% (mean of ${runs.length} seeds)`;
}

/**
 * Wall seconds and CPU seconds (all threads of the process, user + system) of `work`. On a
 * machine shared with other jobs, CPU seconds say what the work costs; wall seconds also
 * count the time other processes held the cores.
 */
export async function measure<T>(work: () => Promise<T>): Promise<{ result: T; wall: number; cpu: number }> {
  const [wallStart, cpuStart] = [performance.now(), process.cpuUsage()];
  const result = await work();
  const cpu = process.cpuUsage(cpuStart);
  return { result, wall: (performance.now() - wallStart) / 1000, cpu: (cpu.user + cpu.system) / 1e6 };
}

const list = (values: number[]) => values.map((s) => s.toFixed(2)).join(', ');

async function timeSweep(data: TrainData, runs: RunSpec[], repeats: number, workers?: number): Promise<{ seconds: number[]; cpu: number[]; results: RunResult[] }> {
  const seconds: number[] = [];
  const cpu: number[] = [];
  let results: RunResult[] = [];
  for (let i = 0; i < repeats; i++) {
    const timed = await measure(() => trainHeads(data, runs, EARLY, { workers }));
    results = timed.result;
    seconds.push(timed.wall);
    cpu.push(timed.cpu);
  }
  return { seconds, cpu, results };
}

/**
 * The batched tfjs head (bench/trainer-batched.ts) on `backend`: all 48 runs stepped together
 * for BATCHED_EPOCHS epochs (no early stopping, so every epoch computes all runs), REPEATS
 * times; seconds per run-epoch, to scale to the run-epochs the sweep trainer ran.
 */
async function timeBatched(data: TrainData, runs: RunSpec[]): Promise<{ secondsPerRunEpoch: number; cpuPerRunEpoch: number; note: string }> {
  const short = runs.map((r) => ({ ...r, params: { ...r.params, epochs: BATCHED_EPOCHS } }));
  const perRunEpoch: number[] = [];
  const cpuPerRunEpoch: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const { result, wall, cpu } = await measure(() => trainBatched(tf, data, short, { monitor: 'val_loss', patience: 0 }));
    perRunEpoch.push(wall / result.runEpochs);
    cpuPerRunEpoch.push(cpu / result.runEpochs);
  }
  return {
    secondsPerRunEpoch: median(perRunEpoch),
    cpuPerRunEpoch: median(cpuPerRunEpoch),
    note: `${runs.length} runs x ${BATCHED_EPOCHS} epochs, ${REPEATS} times: ${list(perRunEpoch.map((s) => s * runs.length))} s ` +
      `(CPU ${list(cpuPerRunEpoch.map((s) => s * runs.length))} s) per epoch of all runs`,
  };
}

/** tfjs-node (libtensorflow) cannot install on machines without its binary host; say why when it is missing. */
async function tfjsNodeBackend(): Promise<string | null> {
  const name = '@tensorflow/tfjs-node';
  try {
    await import(name);
    return tf.getBackend() === 'tensorflow' || (await tf.setBackend('tensorflow')) ? 'tensorflow' : null;
  } catch (error) {
    console.log(`batched tfjs head on tfjs-node: not available (${(error as Error).message.split('\n')[0]})`);
    return null;
  }
}

/** Times REFERENCE_SAMPLE runs spread over the grid, extrapolates by epochs run to the whole sweep. */
async function timeReference(data: TrainData, runs: RunSpec[], sweep: RunResult[]): Promise<{ seconds: number; note: string }> {
  const stride = Math.floor(runs.length / REFERENCE_SAMPLE);
  const sample = Array.from({ length: REFERENCE_SAMPLE }, (_, i) => runs[i * stride + (i % 3)]);
  let seconds = 0;
  let epochs = 0;
  for (const run of sample) {
    const result = await trainReference(tf, data, run, EARLY);
    seconds += result.seconds;
    epochs += result.epochsRun;
  }
  const sweepEpochs = sweep.reduce((sum, r) => sum + r.epochsRun, 0);
  const estimate = seconds / epochs * sweepEpochs;
  return {
    seconds: estimate,
    note: `extrapolated: ${sample.length} runs timed (${seconds.toFixed(1)} s for ${epochs} epochs), ` +
      `x ${sweepEpochs} epochs the sweep ran`,
  };
}

export async function run(): Promise<void> {
  const { data, source } = await loadData();
  const runs = defaultSweep();
  console.log(`${source}; ${data.train.y.length}/${data.val.y.length}/${data.test.y.length} rows, dim ${data.dim}, ${runs.length} runs`);
  const { seconds, cpu, results } = await timeSweep(data, runs, REPEATS);
  const epochs = results.reduce((sum, r) => sum + r.epochsRun, 0);
  const simd = median(seconds);
  console.log(`sweep trainer [${workerCount(runs.length)} worker threads, SIMD kernels, one run per thread at a time; no tfjs]: median ${simd.toFixed(2)} s ` +
    `of ${list(seconds)}; CPU ${list(cpu)} s (${epochs} run-epochs)`);
  console.log(`  ${winner(results)}`);
  const single = await timeSweep(data, runs, REPEATS, 1);
  console.log(`sweep trainer [1 worker thread]: median ${median(single.seconds).toFixed(2)} s of ${list(single.seconds)}; CPU ${list(single.cpu)} s`);

  const batchedBackends = [await tfjsNodeBackend(), 'wasm'].filter((b): b is string => b !== null);
  for (const backend of batchedBackends) {
    await tf.setBackend(backend);
    const batched = await timeBatched(data, runs);
    const estimate = batched.secondsPerRunEpoch * epochs;
    const cpuEstimate = batched.cpuPerRunEpoch * epochs;
    console.log(`batched tfjs head [all runs as [runs, batch, dim] x [runs, dim, classes] matmuls, tfjs ${backend}, 1 thread]: ` +
      `${(batched.secondsPerRunEpoch * 1000).toFixed(1)} ms per run-epoch (${batched.note}); x ${epochs} run-epochs = ${estimate.toFixed(1)} s, CPU ${cpuEstimate.toFixed(1)} s`);
    console.log(`ratio batched tfjs ${backend} / sweep trainer: wall ${(estimate / simd).toFixed(1)}x (sweep trainer on 2 threads), ` +
      `${(estimate / median(single.seconds)).toFixed(1)}x (on 1 thread); CPU ${(cpuEstimate / median(cpu)).toFixed(1)}x`);
  }
  // The sweep's tfjs backend when libtensorflow is absent.
  await tf.setBackend('wasm');
  const reference = await timeReference(data, runs, results);
  console.log(`reference run by run [tf.layers model.fit, tfjs wasm]: ${reference.seconds.toFixed(1)} s (${reference.note})`);
  console.log(`ratio reference / sweep trainer: ${(reference.seconds / simd).toFixed(1)}x`);
}
