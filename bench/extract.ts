/**
 * The whole `pipeline extract` (scan + hash + decode + backbone + SQLite) over TrashNet,
 * into a fresh database each time, beside a bare ONNX Runtime session on the same graph
 * and batch measured in the same run, and a profile of where the time goes:
 *   - each stage alone (read + hash, decode, engine, SQLite): wall time and CPU per image;
 *   - the full extract: CPU per thread group (bench/threads.ts), so the overlap shows.
 * Then the same extract over large photos (TrashNet upscaled to 4000x3000 in a temp dir).
 * Needs ../shared.
 *
 * BENCH_IMAGES=N limits the images per class folder (default: all 2527);
 * BENCH_REPEATS=N runs each full extract N times and prints medians (default 3);
 * BENCH_SIZES=HxW,... picks the input sizes (default 224x224,384x512);
 * BENCH_BACKENDS=onnx,wasm picks the engines of the full extract (default onnx);
 * BENCH_LARGE=N large photos (default 48; 0 skips them).
 */
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pLimit from 'p-limit';
import sharp from 'sharp';
import type { BackendRequest } from '../backbone/backends.js';
import { resolveBackend } from '../backbone/backends.js';
import { startEngine } from '../backbone/engine.js';
import { INPUT_NAME, buildOnnxModel } from '../backbone/onnx-graph.js';
import { type InputSize, formatSize, parseSize } from '../backbone/preprocessing.js';
import { type BackboneWeights, backboneWeights, readWeightFile } from '../backbone/weights.js';
import { openDatabase } from '../cache/database.js';
import { ensureFeatureSet, saveBatch } from '../cache/features.js';
import { type DatasetItem, scanDataset } from '../data/dataset.js';
import { sha256 } from '../data/hash.js';
import { decodeImage } from '../data/images.js';
import { runExtract } from '../stages/extract.js';
import { median } from './machine.js';
import { type ThreadGroup, startThreadCpu } from './threads.js';

const SHARED = resolve(process.env.PIPELINE_SHARED ?? '../shared');
export const DATASET = join(SHARED, 'datasets/trashnet');
export const MODEL = join(SHARED, 'models/mobilenet_v2_1.00_224_no_top/model.json');
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const SIZES = (process.env.BENCH_SIZES ?? '224x224,384x512').split(',').map((s) => parseSize(s)!);
const BACKENDS = (process.env.BENCH_BACKENDS ?? 'onnx').split(',') as BackendRequest[];
const LARGE = Number(process.env.BENCH_LARGE ?? 48);
/** The extract defaults (pipeline/config.ts). */
const BATCH = 8;
const CONCURRENCY = 4;
/** Images the engine-alone and bare-ORT measurements run over (pre-decoded, in memory). */
const SAMPLE = 200;
/** The bare session: what onnxruntime-node gives with no pipeline around it. */
const BARE_THREADS = 2;

export async function run(): Promise<void> {
  if (!existsSync(DATASET)) {
    console.log(`skipped: ${DATASET} not found`);
    return;
  }
  const work = await mkdtemp(join(tmpdir(), 'pipeline-bench-extract-'));
  try {
    const dataset = await datasetSlice(work, Number(process.env.BENCH_IMAGES ?? 0));
    const weights = await backboneWeights(await readWeightFile(MODEL));
    const { items } = await scanDataset(dataset);
    console.log(`${items.length} TrashNet photos, MobileNetV2 ${weights.arch.alpha}, batch ${BATCH}, ${CONCURRENCY} decodes at once, ${REPEATS} repeat(s)`);
    for (const size of SIZES) {
      const sample = await decodeSample(items, size);
      await profileStages(items, size, weights, sample, work);
      for (const backend of BACKENDS) await compareWithBare(dataset, size, backend, weights, sample, work);
    }
    if (LARGE > 0) await largePhotos(items, work);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

interface Cost {
  readonly seconds: number;
  /** Process CPU (all threads) per image. */
  readonly cpuMsPerImage: number;
  readonly imagesPerSecond: number;
}

async function measure(images: number, work: () => Promise<void>): Promise<Cost> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await work();
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  return { seconds, cpuMsPerImage: (used.user + used.system) / 1000 / images, imagesPerSecond: images / seconds };
}

const fmtCost = (c: Cost) => `${c.imagesPerSecond.toFixed(1).padStart(7)} images/s ${c.cpuMsPerImage.toFixed(2).padStart(6)} core-ms/image`;

/** SAMPLE photos spread over the sorted dataset, decoded: the input of the engine-alone and bare runs. */
async function decodeSample(items: readonly DatasetItem[], size: InputSize): Promise<Uint8Array[]> {
  const count = Math.min(SAMPLE, items.length) - (Math.min(SAMPLE, items.length) % BATCH) || items.length;
  const step = items.length / count;
  const picked = Array.from({ length: count }, (_, i) => items[Math.floor(i * step)]);
  const limit = pLimit(CONCURRENCY);
  const pixels = await Promise.all(picked.map((item) => limit(async () => decodeImage(await readFile(item.absolutePath), size, 'fill'))));
  const bytes = size.height * size.width * 3;
  const batches: Uint8Array[] = [];
  for (let i = 0; i < pixels.length; i += BATCH) {
    const batch = new Uint8Array(Math.min(BATCH, pixels.length - i) * bytes);
    pixels.slice(i, i + BATCH).forEach((p, j) => batch.set(p, j * bytes));
    batches.push(batch);
  }
  return batches;
}

const countOf = (batches: Uint8Array[], size: InputSize) => batches.reduce((n, b) => n + b.length / (size.height * size.width * 3), 0);

/** Each stage of the extract alone, no overlap. */
async function profileStages(items: readonly DatasetItem[], size: InputSize, weights: BackboneWeights, sample: Uint8Array[], work: string) {
  const limit = pLimit(CONCURRENCY);
  const files: Buffer[] = [];
  const readHash = await measure(items.length, async () => {
    await Promise.all(
      items.map((item, i) =>
        limit(async () => {
          files[i] = await readFile(item.absolutePath);
          sha256(files[i]);
        }),
      ),
    );
  });
  const decode = await measure(items.length, async () => {
    await Promise.all(files.map((bytes) => limit(() => decodeImage(bytes, size, 'fill'))));
  });
  const sampled = countOf(sample, size);
  const engine = await startEngine({ weights, backend: await resolveBackend('onnx'), size, batchSize: BATCH });
  let engineCost: Cost;
  try {
    const inFlight = pLimit(engine.parallelism);
    engineCost = await measure(sampled, async () => {
      await Promise.all(sample.map((batch) => inFlight(() => engine.run(batch, batch.length / (size.height * size.width * 3)))));
    });
  } finally {
    await engine.close();
  }
  const dbPath = join(work, `profile-${formatSize(size)}.sqlite`);
  const db = openDatabase(dbPath);
  let sqlite: Cost;
  try {
    const set = ensureFeatureSet(db, {
      id: 'bench', modelSource: 'bench', weightsSha256: 'bench', architecture: 'bench', alpha: 1,
      height: size.height, width: size.width, resize: 'fill', preprocessing: 'bench', backend: 'onnx', dim: 1280,
    });
    const vector = new Float32Array(1280).fill(0.5);
    sqlite = await measure(items.length, async () => {
      for (let i = 0; i < items.length; i += BATCH) {
        const features = items.slice(i, i + BATCH).map((_, j) => ({ sha256: sha256(`${i + j}`), vector }));
        saveBatch(db, set.id, { features, failures: [] });
      }
    });
  } finally {
    db.close();
    await rm(dbPath, { force: true });
  }
  console.log(`\n${formatSize(size)}: each stage alone (read + hash and decode over all ${items.length} photos, engine over ${sampled}, SQLite ${items.length} rows in batches of ${BATCH})`);
  console.log(`  read + hash          ${fmtCost(readHash)}`);
  console.log(`  decode (sharp)       ${fmtCost(decode)}`);
  console.log(`  engine (onnx)        ${fmtCost(engineCost)}`);
  console.log(`  SQLite               ${fmtCost(sqlite)}`);
  const total = readHash.cpuMsPerImage * 2 + decode.cpuMsPerImage + engineCost.cpuMsPerImage + sqlite.cpuMsPerImage;
  console.log(`  sum (read + hash twice): ${total.toFixed(2)} core-ms/image`);
}

/** Full extracts and bare ORT, alternately, REPEATS times; the ratio per repeat and their median. */
async function compareWithBare(dataset: string, size: InputSize, backend: BackendRequest, weights: BackboneWeights, sample: Uint8Array[], work: string) {
  const extractRates: number[] = [];
  const bareRates: number[] = [];
  const ratios: number[] = [];
  for (let repeat = 0; repeat < REPEATS; repeat++) {
    const full = await fullExtract(dataset, size, backend, join(work, `${backend}-${formatSize(size)}-${repeat}.sqlite`));
    const bare = await bareOrt(weights, size, sample);
    extractRates.push(full.imagesPerSecond);
    bareRates.push(bare);
    ratios.push(full.imagesPerSecond / bare);
    console.log(
      `  extract ${backend} run ${repeat + 1}: ${full.images} images in ${full.seconds.toFixed(1)} s = ${full.imagesPerSecond.toFixed(1)} images/s` +
        ` (engine start-up included); bare ORT ${bare.toFixed(1)} images/s; ratio ${(full.imagesPerSecond / bare).toFixed(2)}`,
    );
    console.log(`    CPU per thread group: ${[...full.threads].map(([g, { ms, threads }]) => `${g} ${(ms / full.images).toFixed(2)} core-ms/image (${threads} threads)`).join(', ')}`);
    console.log(`    total ${full.cpuMsPerImage.toFixed(2)} core-ms/image, cores busy ${((full.cpuMsPerImage * full.imagesPerSecond) / 1000).toFixed(2)} of 2`);
  }
  console.log(
    `  ${formatSize(size)} ${backend}: median extract ${median(extractRates).toFixed(1)} images/s, bare ORT (1 session x ${BARE_THREADS} threads, batch ${BATCH}) ` +
      `${median(bareRates).toFixed(1)} images/s, median ratio ${median(ratios).toFixed(2)} (runs: ${ratios.map((r) => r.toFixed(2)).join(', ')})`,
  );
}

async function fullExtract(dataset: string, size: InputSize, backend: BackendRequest, db: string) {
  const cpu = startThreadCpu();
  const cpuBefore = process.cpuUsage();
  const summary = await runExtract({
    dataset: { root: dataset, url: null, sha256: null, splits: null },
    model: { weights: MODEL, size, resize: 'fill' },
    db,
    backend,
    batch: BATCH,
    concurrency: CONCURRENCY,
  });
  const used = process.cpuUsage(cpuBefore);
  const threads = cpu.stop() as Map<ThreadGroup, { ms: number; threads: number }>;
  await rm(db, { force: true });
  return {
    images: summary.extracted,
    seconds: summary.seconds,
    imagesPerSecond: summary.extracted / summary.seconds,
    cpuMsPerImage: (used.user + used.system) / 1000 / summary.extracted,
    threads,
  };
}

/** One ORT session in this thread, the extract engine's graph, nothing else: images/s. */
async function bareOrt(weights: BackboneWeights, size: InputSize, sample: Uint8Array[]): Promise<number> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(buildOnnxModel(weights), {
    executionProviders: ['cpu'],
    intraOpNumThreads: BARE_THREADS,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  try {
    const shape = (batch: Uint8Array) => [batch.length / (size.height * size.width * 3), size.height, size.width, 3];
    await session.run({ [INPUT_NAME]: new ort.Tensor('uint8', sample[0], shape(sample[0])) });
    const started = performance.now();
    for (const batch of sample) await session.run({ [INPUT_NAME]: new ort.Tensor('uint8', batch, shape(batch)) });
    return countOf(sample, size) / ((performance.now() - started) / 1000);
  } finally {
    await session.release();
  }
}

/** TrashNet photos upscaled to 4000x3000 JPEGs (temp dir): decode with shrink-on-load, then the full extract at 384x512. */
async function largePhotos(items: readonly DatasetItem[], work: string) {
  const root = join(work, 'large');
  const perClass = Math.max(1, Math.floor(LARGE / 6));
  const byClass = new Map<string, DatasetItem[]>();
  for (const item of items) byClass.set(item.label, [...(byClass.get(item.label) ?? []), item]);
  let made = 0;
  for (const [label, classItems] of byClass) {
    await mkdir(join(root, label), { recursive: true });
    for (const item of classItems.slice(0, perClass)) {
      const big = await sharp(item.absolutePath).resize(4000, 3000, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer();
      await writeFile(join(root, label, `${made++}.jpg`), big);
    }
  }
  const files = await Promise.all((await scanDataset(root)).items.map((i) => readFile(i.absolutePath)));
  const mb = files.reduce((n, f) => n + f.length, 0) / 2 ** 20;
  console.log(`\nlarge photos: ${made} TrashNet photos upscaled to 4000x3000 JPEG (${mb.toFixed(0)} MiB)`);
  for (const size of SIZES) {
    const limit = pLimit(CONCURRENCY);
    const decode = await measure(files.length, async () => {
      await Promise.all(files.map((bytes) => limit(() => decodeImage(bytes, size, 'fill'))));
    });
    const rates: number[] = [];
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      rates.push((await fullExtract(root, size, 'onnx', join(work, `large-${repeat}.sqlite`))).imagesPerSecond);
    }
    console.log(`  ${formatSize(size)}: decode alone ${fmtCost(decode)}; extract onnx median ${median(rates).toFixed(1)} images/s (${rates.map((r) => r.toFixed(1)).join(', ')})`);
  }
}

/** The full dataset, or the first N files of each class linked into a temp folder. */
export async function datasetSlice(work: string, perClass: number): Promise<string> {
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
