/**
 * The default sweep (dropout {0,.2,.4,.6} x lr {3e-4,1e-3,3e-3,1e-2} x seeds {1,2,3} = 48
 * runs, up to 50 epochs, batch 32, adam, early stopping on val_loss with patience 5)
 * through the batched trainer, and run by run through the tf.layers reference.
 *
 * Features: PIPELINE_BENCH_FEATURES=/path/features.npy (float32 N x dim, .npy v1) with
 * index.csv (path,label,split,sha256) beside it; otherwise synthetic TrashNet-shaped ones.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { RandomStream } from '../stages/sweep/random.js';
import { trainReference } from '../stages/sweep/reference.js';
import { type EarlyStopping, type HeadParams, type RunResult, type RunSpec, type TrainData, trainHeads } from '../stages/sweep/trainer.js';
import { median } from './machine.js';

const DEFAULTS: HeadParams = {
  dropout: 0, learningRate: 0.001, epochs: 50, batchSize: 32, optimizer: 'adam',
  hiddenUnits: 0, weightDecay: 0, labelSmoothing: 0, classWeight: 'none',
};
const EARLY: EarlyStopping = { monitor: 'val_loss', patience: 5 };
/** wasm is the default backend and gets the repeats; cpu is timed once for comparison. */
const REPEATS = { wasm: 3, cpu: 1 };
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

/** TrashNet's class proportions (cardboard, glass, metal, paper, plastic, trash) of 2527 images. */
const TRASHNET_COUNTS = [403, 501, 410, 594, 482, 137];

/**
 * Seeded gaussian clusters shaped like pooled ReLU6 features: nonnegative, mean ~0.5,
 * class centres apart by enough that a linear head reaches roughly 80-90% accuracy.
 */
export function syntheticData(sizes = { train: 1768, val: 328, test: 431 }, dim = 1280, seed = 7): TrainData {
  const classes = TRASHNET_COUNTS.length;
  const random = new RandomStream('bench:synthetic-features', seed, 'init');
  const gaussians = (n: number) => {
    const u = random.uint32s(2 * n);
    return Float64Array.from({ length: n }, (_, i) =>
      Math.sqrt(-2 * Math.log((u[2 * i] + 1) / 2 ** 32)) * Math.cos(2 * Math.PI * u[2 * i + 1] / 2 ** 32));
  };
  const centres = gaussians(classes * dim).map((g) => 0.45 + 0.04 * g);
  const total = TRASHNET_COUNTS.reduce((a, b) => a + b, 0);
  const split = (n: number) => {
    const y = new Int32Array(n);
    let row = 0;
    TRASHNET_COUNTS.forEach((count, c) => { for (const end = Math.round((row + count * n / total)); row < Math.min(end, n); row++) y[row] = c; });
    const noise = gaussians(n * dim);
    const x = Float32Array.from(noise, (g, i) => Math.max(0, centres[y[Math.floor(i / dim)] * dim + (i % dim)] + 0.45 * g));
    return { x, y };
  };
  return { dim, classes, train: split(sizes.train), val: split(sizes.val), test: split(sizes.test) };
}

/** A v1 .npy float32 little-endian C-order 2-d array. */
function readNpy(path: string): { values: Float32Array; rows: number; cols: number } {
  const bytes = readFileSync(path);
  if (bytes.toString('latin1', 0, 6) !== '\x93NUMPY' || bytes[6] !== 1) throw new Error(`${path}: not a v1 .npy file`);
  const headerLength = bytes.readUInt16LE(8);
  const header = bytes.toString('latin1', 10, 10 + headerLength);
  const shape = /'shape':\s*\((\d+),\s*(\d+)\)/.exec(header);
  if (!header.includes("'descr': '<f4'") || !header.includes("'fortran_order': False") || !shape) {
    throw new Error(`${path}: expected a C-order little-endian float32 2-d array, got ${header.trim()}`);
  }
  const [rows, cols] = [Number(shape[1]), Number(shape[2])];
  const start = 10 + headerLength;
  const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + rows * cols * 4));
  return { values, rows, cols };
}

/** Real features: rows of features.npy in the order of index.csv (path,label,split,sha256); labels sorted by name. */
function readFeatureCache(npyPath: string): TrainData {
  const { values, rows, cols } = readNpy(npyPath);
  const lines = readFileSync(join(dirname(npyPath), 'index.csv'), 'utf8').trim().split(/\r?\n/);
  const header = lines[0].split(',');
  const [labelAt, splitAt] = [header.indexOf('label'), header.indexOf('split')];
  // label and split never contain commas; counting from the end tolerates commas in paths
  const records = lines.slice(1).map((line) => {
    const fields = line.split(',');
    const fromEnd = (index: number) => fields[fields.length - (header.length - index)];
    return { label: fromEnd(labelAt), split: fromEnd(splitAt) };
  });
  if (records.length !== rows) throw new Error(`index.csv has ${records.length} rows, features.npy ${rows}`);
  const labels = [...new Set(records.map((r) => r.label))].sort();
  const part = (name: string) => {
    const picked = records.flatMap((r, i) => (r.split === name ? [i] : []));
    const x = new Float32Array(picked.length * cols);
    picked.forEach((row, i) => x.set(values.subarray(row * cols, (row + 1) * cols), i * cols));
    return { x, y: Int32Array.from(picked, (row) => labels.indexOf(records[row].label)) };
  };
  return { dim: cols, classes: labels.length, train: part('train'), val: part('val'), test: part('test') };
}

function loadData(): { data: TrainData; source: string } {
  const path = process.env.PIPELINE_BENCH_FEATURES;
  if (path) return { data: readFeatureCache(path), source: `real features from ${path}` };
  return { data: syntheticData(), source: 'synthetic features (seeded gaussian clusters; set PIPELINE_BENCH_FEATURES for real ones)' };
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

async function timeBatched(data: TrainData, runs: RunSpec[], repeats: number): Promise<{ seconds: number[]; results: RunResult[] }> {
  const seconds: number[] = [];
  let results: RunResult[] = [];
  for (let i = 0; i < repeats; i++) {
    const started = performance.now();
    results = await trainHeads(tf, data, runs, EARLY);
    seconds.push((performance.now() - started) / 1000);
  }
  return { seconds, results };
}

/** Times REFERENCE_SAMPLE runs spread over the grid, extrapolates by epochs run to the whole sweep. */
async function timeReference(data: TrainData, runs: RunSpec[], batched: RunResult[]): Promise<{ seconds: number; note: string }> {
  const stride = Math.floor(runs.length / REFERENCE_SAMPLE);
  const sample = Array.from({ length: REFERENCE_SAMPLE }, (_, i) => runs[i * stride + (i % 3)]);
  let seconds = 0;
  let epochs = 0;
  for (const run of sample) {
    const result = await trainReference(tf, data, run, EARLY);
    seconds += result.seconds;
    epochs += result.epochsRun;
  }
  const sweepEpochs = batched.reduce((sum, r) => sum + r.epochsRun, 0);
  const estimate = seconds / epochs * sweepEpochs;
  return {
    seconds: estimate,
    note: `extrapolated: ${sample.length} runs timed (${seconds.toFixed(1)} s for ${epochs} epochs), ` +
      `x ${sweepEpochs} epochs the batched sweep ran`,
  };
}

export async function run(): Promise<void> {
  const { data, source } = loadData();
  const runs = defaultSweep();
  console.log(`${source}; ${data.train.y.length}/${data.val.y.length}/${data.test.y.length} rows, dim ${data.dim}, ${runs.length} runs`);
  for (const backend of ['wasm', 'cpu'] as const) {
    await tf.setBackend(backend);
    const { seconds, results } = await timeBatched(data, runs, REPEATS[backend]);
    const epochs = results.reduce((sum, r) => sum + r.epochsRun, 0);
    console.log(`batched [${backend}]: median ${median(seconds).toFixed(2)} s of ${seconds.map((s) => s.toFixed(2)).join(', ')} ` +
      `(${epochs} run-epochs)`);
    console.log(`  ${winner(results)}`);
    if (backend !== 'wasm') continue;
    const reference = await timeReference(data, runs, results);
    console.log(`reference run by run [${backend}]: ${reference.seconds.toFixed(1)} s (${reference.note})`);
    console.log(`ratio reference / batched: ${(reference.seconds / median(seconds)).toFixed(1)}x`);
  }
}
