/**
 * The default sweep (dropout {0,.2,.4,.6} x lr {3e-4,1e-3,3e-3,1e-2} x seeds {1,2,3} = 48
 * runs, up to 50 epochs, batch 32, adam, early stopping on val_loss with patience 5)
 * through the sweep trainer (worker threads running SIMD kernels), and run by run through
 * the tf.layers reference.
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
import { type EarlyStopping, type HeadParams, type RunResult, type RunSpec, type TrainData, trainHeads, workerCount } from '../stages/sweep/trainer.js';
import { syntheticData } from '../test/helpers/synthetic.js';
import { median } from './machine.js';

/** The checkout (this file runs as dist/bench/sweep.js). */
const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SHARED = resolve(REPO_ROOT, '..', 'shared');
const FEATURE_CACHE = join(REPO_ROOT, 'runs/bench/trashnet-224.sqlite');

const DEFAULTS: HeadParams = {
  dropout: 0, learningRate: 0.001, epochs: 50, batchSize: 32, optimizer: 'adam',
  hiddenUnits: 0, weightDecay: 0, labelSmoothing: 0, classWeight: 'none',
};
const EARLY: EarlyStopping = { monitor: 'val_loss', patience: 5 };
const REPEATS = 3;
/** Reference runs actually timed; the rest is extrapolated per epoch. */
const REFERENCE_SAMPLE = 4;

export function defaultSweep(): RunSpec[] {
  const runs: RunSpec[] = [];
  for (const dropout of [0, 0.2, 0.4, 0.6]) {
    for (const learningRate of [0.0003, 0.001, 0.003, 0.01]) {
      for (const seed of [1, 2, 3]) {
        runs.push({ key: `dropout=${dropout},lr=${learningRate}`, seed, params: { ...DEFAULTS, dropout, learningRate } });
      }
    }
  }
  return runs;
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
    const data = loadSweepData(db, featureSet, log);
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
  const byKey = new Map<string, RunResult[]>();
  for (const r of results) byKey.set(r.key, [...(byKey.get(r.key) ?? []), r]);
  const mean = (rs: RunResult[], f: (r: RunResult) => number) => rs.reduce((s, r) => s + f(r), 0) / rs.length;
  const [key, runs] = [...byKey].sort(([, a], [, b]) => mean(a, (r) => r.val.loss) - mean(b, (r) => r.val.loss))[0];
  return `winner ${key}: val loss ${mean(runs, (r) => r.val.loss).toFixed(4)}, val acc ${(100 * mean(runs, (r) => r.val.accuracy)).toFixed(2)}%, ` +
    `test acc ${(100 * mean(runs, (r) => r.test.accuracy)).toFixed(2)}% (mean of ${runs.length} seeds)`;
}

async function timeSweep(data: TrainData, runs: RunSpec[], repeats: number): Promise<{ seconds: number[]; results: RunResult[] }> {
  const seconds: number[] = [];
  let results: RunResult[] = [];
  for (let i = 0; i < repeats; i++) {
    const started = performance.now();
    results = await trainHeads(data, runs, EARLY);
    seconds.push((performance.now() - started) / 1000);
  }
  return { seconds, results };
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
  const { seconds, results } = await timeSweep(data, runs, REPEATS);
  const epochs = results.reduce((sum, r) => sum + r.epochsRun, 0);
  console.log(`sweep trainer [${workerCount(runs.length)} worker threads, SIMD kernels; no tfjs]: median ${median(seconds).toFixed(2)} s ` +
    `of ${seconds.map((s) => s.toFixed(2)).join(', ')} (${epochs} run-epochs)`);
  console.log(`  ${winner(results)}`);
  // The sweep's tfjs backend when libtensorflow is absent.
  await tf.setBackend('wasm');
  const reference = await timeReference(data, runs, results);
  console.log(`reference run by run [tf.layers model.fit, tfjs wasm]: ${reference.seconds.toFixed(1)} s (${reference.note})`);
  console.log(`ratio reference / sweep trainer: ${(reference.seconds / median(seconds)).toFixed(1)}x`);
}
