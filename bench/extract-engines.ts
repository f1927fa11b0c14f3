/**
 * Where extraction time goes, per engine: sharp decoding alone, the backbone alone, and
 * both pipelined as the extract stage runs them (the next batch decoding while the engine
 * works), on the same real TrashNet photos with the real MobileNetV2 1.0 weights from
 * ../shared. SQLite is left out: the full extract is benchmarked on its own.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import pLimit from 'p-limit';
import { type Engine, startEngine } from '../backbone/engine.js';
import { macsPerImage } from '../backbone/mobilenetv2.js';
import { type InputSize, formatSize } from '../backbone/preprocessing.js';
import { type BackboneWeights, backboneWeights, readWeightFile } from '../backbone/weights.js';
import { scanDataset } from '../data/dataset.js';
import { decodeImage } from '../data/images.js';
import { resolveBackend } from '../backbone/backends.js';
import { median } from './machine.js';

// As in bench/extract.ts: run from the checkout, or point PIPELINE_SHARED elsewhere.
const SHARED = resolve(process.env.PIPELINE_SHARED ?? '../shared');
const MODEL = join(SHARED, 'models/mobilenet_v2_1.00_224_no_top/model.json');
const DATASET = join(SHARED, 'datasets/trashnet');
const IMAGES = 400;
const REPEATS = 3;
/** 8 is as fast as 32 on every engine, measured with this bench. */
const BATCH = 8;
const SIZES: InputSize[] = [
  { height: 224, width: 224 },
  { height: 384, width: 512 },
];
const ENGINES = ['wasm', 'onnx'] as const;
type EngineName = (typeof ENGINES)[number];
/** The extract stage's default `engine.concurrency` (pipeline/config.ts). */
const DECODE_CONCURRENCY = 4;

/** `IMAGES` photos spread evenly over the sorted dataset, so every class is in. */
async function loadPhotos(): Promise<Buffer[]> {
  const { items } = await scanDataset(DATASET);
  const step = items.length / IMAGES;
  return Promise.all(Array.from({ length: IMAGES }, (_, i) => readFile(items[Math.floor(i * step)].absolutePath)));
}

/** Images per second of `work` over all photos, median of REPEATS. */
async function rate(work: () => Promise<void>): Promise<number> {
  const rates: number[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const started = performance.now();
    await work();
    rates.push(IMAGES / ((performance.now() - started) / 1000));
  }
  return median(rates);
}

/** Photo indices in batches of BATCH. */
const BATCHES: readonly number[][] = Array.from({ length: Math.ceil(IMAGES / BATCH) }, (_, b) =>
  Array.from({ length: Math.min(BATCH, IMAGES - b * BATCH) }, (_, i) => b * BATCH + i),
);

/**
 * Decodes one batch into `target` (a buffer reused across batches: first touches of fresh
 * memory are slow on these VMs). The decode limit is shared by all batches in flight.
 */
async function decodeBatch(photos: Buffer[], indices: number[], size: InputSize, limit: ReturnType<typeof pLimit>, target: Uint8Array) {
  const imageBytes = size.height * size.width * 3;
  await Promise.all(
    indices.map((photo, slot) => limit(async () => target.set(await decodeImage(photos[photo], size, 'fill'), slot * imageBytes))),
  );
  return target.subarray(0, indices.length * imageBytes);
}

/** The extract stage's shape: parallelism + 1 batches in flight, decodes bounded by p-limit. */
async function pipelined(photos: Buffer[], size: InputSize, engine: Engine | null): Promise<void> {
  const slots = (engine?.parallelism ?? 1) + 1;
  const free = Array.from({ length: slots }, () => new Uint8Array(BATCH * size.height * size.width * 3));
  const decodeLimit = pLimit(DECODE_CONCURRENCY);
  const batchLimit = pLimit(slots);
  await Promise.all(
    BATCHES.map((indices) =>
      batchLimit(async () => {
        const buffer = free.pop()!;
        const pixels = await decodeBatch(photos, indices, size, decodeLimit, buffer);
        if (engine) await engine.run(pixels, indices.length);
        free.push(buffer);
      }),
    ),
  );
}

/** Pre-decoded batches, as many at once as the engine runs (the wasm engine has one worker per core). */
async function backboneAlone(engine: Engine, batchPixels: Uint8Array[]): Promise<void> {
  const limit = pLimit(engine.parallelism);
  await Promise.all(BATCHES.map((indices, b) => limit(() => engine.run(batchPixels[b], indices.length))));
}

interface EngineRates {
  backbone: number;
  pipelined: number;
}

async function measureEngine(name: EngineName, weights: BackboneWeights, size: InputSize, photos: Buffer[], batchPixels: Uint8Array[]) {
  const engine = await startEngine({ weights, backend: await resolveBackend(name), size, batchSize: BATCH });
  try {
    const backbone = await rate(() => backboneAlone(engine, batchPixels));
    const withDecode = await rate(() => pipelined(photos, size, engine));
    return { backbone, pipelined: withDecode } satisfies EngineRates;
  } finally {
    await engine.close();
  }
}

async function measureSize(weights: BackboneWeights, size: InputSize, photos: Buffer[]) {
  const decode = await rate(() => pipelined(photos, size, null));
  // Decoded once up front, so "backbone alone" measures nothing but the engine.
  const limit = pLimit(DECODE_CONCURRENCY);
  const batchPixels = await Promise.all(
    BATCHES.map((indices) => decodeBatch(photos, indices, size, limit, new Uint8Array(indices.length * size.height * size.width * 3))),
  );
  const engines = {} as Record<EngineName, EngineRates>;
  for (const name of ENGINES) engines[name] = await measureEngine(name, weights, size, photos, batchPixels);
  return { decode, engines };
}

function report(size: InputSize, weights: BackboneWeights, { decode, engines }: Awaited<ReturnType<typeof measureSize>>) {
  const gflop = (2 * macsPerImage(weights.arch, size.height, size.width)) / 1e9;
  const fmt = (value: number) => value.toFixed(1).padStart(8);
  console.log(`\n${formatSize(size)} (${gflop.toFixed(2)} GFLOP/image), images/s, median of ${REPEATS}:`);
  console.log(`                     ${ENGINES.map((e) => e.padStart(8)).join('')}  onnx/wasm`);
  console.log(`decode alone         ${fmt(decode)}`);
  for (const key of ['backbone', 'pipelined'] as const) {
    const label = key === 'backbone' ? 'backbone alone' : 'decode + backbone';
    console.log(`${label.padEnd(21)}${ENGINES.map((e) => fmt(engines[e][key])).join('')}  ${(engines.onnx[key] / engines.wasm[key]).toFixed(2)}x`);
  }
  console.log(`backbone GFLOP/s     ${ENGINES.map((e) => fmt(engines[e].backbone * gflop)).join('')}`);
}

export async function run(): Promise<void> {
  const weights = await backboneWeights(await readWeightFile(MODEL));
  const photos = await loadPhotos();
  console.log(`${IMAGES} TrashNet photos (in memory), MobileNetV2 ${weights.arch.alpha}, batch ${BATCH}, ${DECODE_CONCURRENCY} decodes at once`);
  for (const size of SIZES) report(size, weights, await measureSize(weights, size, photos));
}
