/**
 * The whole `pipeline extract` (scan + hash + decode + backbone + SQLite) over TrashNet,
 * per engine and input size, into a fresh database each time. Needs ../shared.
 * BENCH_IMAGES=N limits the images per class folder (default: all 2527);
 * BENCH_REPEATS=N runs each engine and size N times and prints the median (default 1);
 * BENCH_SIZES=HxW,... picks the input sizes (default 224x224,384x512).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, symlink, mkdir, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseSize } from '../backbone/preprocessing.js';
import { runExtract } from '../stages/extract.js';
import type { BackendRequest } from '../backbone/backends.js';
import { median } from './machine.js';

const SHARED = resolve(process.env.PIPELINE_SHARED ?? '../shared');
const DATASET = join(SHARED, 'datasets/trashnet');
const MODEL = join(SHARED, 'models/mobilenet_v2_1.00_224_no_top/model.json');
const REPEATS = Number(process.env.BENCH_REPEATS ?? 1);
const SIZES = (process.env.BENCH_SIZES ?? '224x224,384x512').split(',');

export async function run(): Promise<void> {
  if (!existsSync(DATASET)) {
    console.log(`skipped: ${DATASET} not found`);
    return;
  }
  const work = await mkdtemp(join(tmpdir(), 'pipeline-bench-extract-'));
  try {
    const dataset = await datasetSlice(work, Number(process.env.BENCH_IMAGES ?? 0));
    const rates = new Map<string, number>();
    for (const size of SIZES) {
      for (const backend of ['onnx', 'wasm'] as BackendRequest[]) {
        const runs: number[] = [];
        for (let repeat = 0; repeat < REPEATS; repeat++) {
          const db = join(work, `${backend}-${size}-${repeat}.sqlite`);
          const summary = await runExtract({
            dataset: { root: dataset, url: null, sha256: null, splits: null },
            model: { weights: MODEL, size: parseSize(size)!, resize: 'fill' },
            db,
            backend,
            batch: 8,
            concurrency: 4,
            log: () => {},
          });
          runs.push(summary.extracted / summary.seconds);
          console.log(
            `extract ${size} ${backend.padEnd(4)}: ${summary.extracted} images in ${summary.seconds.toFixed(1)} s = ${runs.at(-1)!.toFixed(1)} images/s ` +
              `(${summary.failures.length} failed; engine start-up included)`,
          );
          await rm(db, { force: true });
        }
        rates.set(`${backend} ${size}`, median(runs));
        if (REPEATS > 1) console.log(`extract ${size} ${backend.padEnd(4)}: median ${median(runs).toFixed(1)} images/s of ${REPEATS} runs`);
      }
      const ratio = rates.get(`onnx ${size}`)! / rates.get(`wasm ${size}`)!;
      console.log(`extract ${size}: onnx / wasm = ${ratio.toFixed(2)}x`);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The full dataset, or the first N files of each class linked into a temp folder. */
async function datasetSlice(work: string, perClass: number): Promise<string> {
  if (!perClass) return DATASET;
  const root = join(work, 'dataset');
  for (const entry of await readdir(DATASET, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === 'splits') continue;
    await mkdir(join(root, entry.name), { recursive: true });
    const files = (await readdir(join(DATASET, entry.name))).sort().slice(0, perClass);
    for (const file of files) await symlink(join(DATASET, entry.name, file), join(root, entry.name, file));
  }
  await cp(join(DATASET, 'splits'), join(root, 'splits'), { recursive: true });
  return root;
}
