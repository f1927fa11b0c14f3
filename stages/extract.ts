/**
 * Stage one: run the frozen backbone once over the dataset and cache the pooled features.
 *
 * Flow: scan the folder -> hash every file -> record the listing -> for content hashes
 * with no vector yet, decode (sharp, p-limit) and run the engine batch by batch, the next
 * batch decoding while the engine works -> commit each batch in its own transaction.
 * A kill loses at most the batches in flight; a rerun computes only what is missing.
 */
import { readFile } from 'node:fs/promises';
import pLimit from 'p-limit';
import { type Engine, startEngine } from '../backbone/engine.js';
import { PREPROCESSING, type InputSize, type ResizeMode, formatSize } from '../backbone/preprocessing.js';
import { backboneWeights, readWeightFile } from '../backbone/weights.js';
import { openDatabase } from '../cache/database.js';
import {
  type FailureRow,
  type FeatureSet,
  ensureFeatureSet,
  extractedHashes,
  finishExtractRun,
  replaceItems,
  saveBatch,
  startExtractRun,
} from '../cache/features.js';
import { type Dataset, type DatasetItem, scanDataset } from '../data/dataset.js';
import { ensureDataset } from '../data/fetch-dataset.js';
import { sha256 } from '../data/hash.js';
import { decodeImage } from '../data/images.js';
import { type BackendRequest, resolveBackend } from '../backbone/backends.js';
import { messageOf } from '../core/errors.js';
import { type Log, type StartProgress, noProgress, quietLog } from '../core/log.js';

export interface ExtractOptions {
  readonly dataset: { root: string; url: string | null; sha256: string | null; splits: string | null };
  readonly model: { weights: string; size: InputSize; resize: ResizeMode };
  readonly db: string;
  readonly backend: BackendRequest;
  readonly batch: number;
  readonly concurrency: number;
  /** Polled between batches: true stops after the batches in flight are committed. */
  readonly shouldStop?: () => boolean;
  readonly log?: Log;
  readonly startProgress?: StartProgress;
}

export interface ExtractSummary {
  readonly featureSet: FeatureSet;
  readonly dataset: Dataset;
  readonly images: number;
  /** Distinct contents that needed the backbone this run. */
  readonly toExtract: number;
  readonly extracted: number;
  readonly cached: number;
  readonly failures: readonly FailureRow[];
  readonly seconds: number;
  readonly interrupted: boolean;
}

interface HashedItem extends DatasetItem {
  readonly sha256: string;
}

export async function runExtract(options: ExtractOptions): Promise<ExtractSummary> {
  const { log = quietLog, startProgress = noProgress } = options;
  await ensureDataset(options.dataset, log, startProgress);
  const dataset = await scanDataset(options.dataset.root, options.dataset.splits ?? undefined);
  const { skipped } = dataset;
  log(
    `dataset ${dataset.root}: ${dataset.items.length} images in ${dataset.classes.length} classes` +
      ` (${dataset.classes.join(', ')}); skipped ${skipped.hidden} hidden, ${skipped.nonImage} non-image, ${skipped.unreadable} unreadable` +
      (dataset.splitsFrom ? `; official splits from ${dataset.splitsFrom}` : '; no split lists'),
  );

  const backend = await resolveBackend(options.backend);
  log(`backend: ${backend.backend} (${backend.reason}), ${backend.workers} worker(s)`);
  const weights = await backboneWeights(await readWeightFile(options.model.weights, log));
  log(
    `model: MobileNetV2 alpha ${weights.arch.alpha} from ${options.model.weights}` +
      `${weights.foldedAtLoad ? ' (BatchNorm folded at load)' : ''}, input ${formatSize(options.model.size)} (${options.model.resize})`,
  );

  const db = openDatabase(options.db);
  try {
    const featureSet = ensureFeatureSet(db, {
      id: featureSetId(weights.sha256, weights.arch.name, weights.arch.alpha, options.model.size, options.model.resize, backend.backend),
      modelSource: options.model.weights,
      weightsSha256: weights.sha256,
      architecture: weights.arch.name,
      alpha: weights.arch.alpha,
      height: options.model.size.height,
      width: options.model.size.width,
      resize: options.model.resize,
      preprocessing: PREPROCESSING.id,
      backend: backend.backend,
      dim: weights.arch.featureDim,
    });
    const items = await hashItems(dataset.items, options.concurrency);
    replaceItems(db, featureSet.id, items);

    const done = extractedHashes(db, featureSet.id);
    const cached = items.filter((item) => done.has(item.sha256)).length;
    const pending = uniqueByContent(items).filter((item) => !done.has(item.sha256));
    log(`feature set ${featureSet.id}: ${cached} images cached, ${pending.length} distinct images to extract`);

    const runId = startExtractRun(db, featureSet.id, dataset.root, items.length);
    const started = performance.now();
    let extracted = 0;
    const failures: FailureRow[] = [];
    let interrupted = false;
    let aborted = false;
    let status: 'done' | 'interrupted' | 'failed' = 'failed';
    try {
      if (pending.length > 0) {
        const engine = await startEngine({ weights, backend, size: options.model.size, batchSize: options.batch });
        const progress = startProgress('extract', pending.length, 'images');
        try {
          const decodeLimit = pLimit(options.concurrency);
          // One batch per engine slot plus one decoding ahead keeps the engine busy.
          const batchLimit = pLimit(engine.parallelism + 1);
          // One pixel buffer per batch in flight, reused (and moved to the engine thread, not
          // copied): fresh memory is slow to touch on these VMs.
          const buffers: Uint8Array[] = Array.from({ length: engine.parallelism + 1 }, () => new Uint8Array(options.batch * imageBytes(options.model.size)));
          await Promise.all(
            chunk(pending, options.batch).map((batch) =>
              batchLimit(async () => {
                if (aborted) return;
                if (options.shouldStop?.()) {
                  interrupted = true;
                  return;
                }
                const result = await extractBatch(batch, options.model, decodeLimit, buffers.pop()!, engine, featureSet.dim).catch((error: unknown) => {
                  aborted = true; // queued batches return at once; committed ones stay
                  throw error;
                });
                buffers.push(result.buffer);
                saveBatch(db, featureSet.id, result);
                extracted += result.features.length;
                failures.push(...result.failures);
                progress.advance(batch.length);
              }),
            ),
          );
        } finally {
          progress.stop();
          await engine.close();
        }
      }
      status = interrupted ? 'interrupted' : 'done';
    } finally {
      const seconds = (performance.now() - started) / 1000;
      finishExtractRun(db, runId, { status, extracted, failed: failures.length, seconds });
    }
    // Failures are per content; report every path that has that content.
    const errorOf = new Map(failures.map((f) => [f.sha256, f.error]));
    const failedPaths = items.filter((item) => errorOf.has(item.sha256)).map((item) => ({ sha256: item.sha256, path: item.path, error: errorOf.get(item.sha256)! }));
    return {
      featureSet,
      dataset,
      images: items.length,
      toExtract: pending.length,
      extracted,
      cached,
      failures: failedPaths,
      seconds: (performance.now() - started) / 1000,
      interrupted,
    };
  } finally {
    db.close();
  }
}

/**
 * A feature set is everything that changes the numbers: the weights' bytes, the network
 * definition, input size, resize mode, preprocessing and the engine computing them.
 */
export function featureSetId(
  weightsSha256: string,
  architecture: string,
  alpha: number,
  size: InputSize,
  resize: ResizeMode,
  backend: string,
): string {
  const identity = { weightsSha256, architecture, alpha, size: formatSize(size), resize, preprocessing: PREPROCESSING.id, backend };
  return sha256(JSON.stringify(identity)).slice(0, 16);
}

async function hashItems(items: readonly DatasetItem[], concurrency: number): Promise<HashedItem[]> {
  const limit = pLimit(concurrency);
  return Promise.all(items.map((item) => limit(async () => ({ ...item, sha256: sha256(await readFile(item.absolutePath)) }))));
}

/** Byte-identical files share one vector: extract each content once. */
function uniqueByContent(items: readonly HashedItem[]): HashedItem[] {
  const seen = new Set<string>();
  return items.filter((item) => !seen.has(item.sha256) && seen.add(item.sha256));
}

const imageBytes = (size: InputSize) => size.height * size.width * 3;

function chunk<T>(items: readonly T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

async function extractBatch(
  batch: readonly HashedItem[],
  model: ExtractOptions['model'],
  decodeLimit: ReturnType<typeof pLimit>,
  buffer: Uint8Array,
  engine: Engine,
  dim: number,
) {
  const bytesPerImage = imageBytes(model.size);
  const decoded = await Promise.all(
    batch.map((item) =>
      decodeLimit(async () => {
        try {
          const bytes = await readFile(item.absolutePath);
          // The file may have changed since it was hashed; its vector must match its hash.
          if (sha256(bytes) !== item.sha256) throw new Error('file changed during extraction; rerun to pick it up');
          return { item, pixels: await decodeImage(bytes, model.size, model.resize) };
        } catch (error) {
          return { item, error: messageOf(error).split('\n')[0] };
        }
      }),
    ),
  );
  const good = decoded.filter((d): d is { item: HashedItem; pixels: Buffer } => 'pixels' in d);
  const failures = decoded
    .filter((d): d is { item: HashedItem; error: string } => 'error' in d)
    .map(({ item, error }) => ({ sha256: item.sha256, path: item.path, error }));
  if (good.length === 0) return { features: [], failures, buffer };
  good.forEach((d, i) => buffer.set(d.pixels, i * bytesPerImage));
  const { features: vectors, buffer: returned } = await engine.runInPlace(buffer, good.length);
  const features = good.map((d, i) => ({ sha256: d.item.sha256, vector: vectors.slice(i * dim, (i + 1) * dim) }));
  return { features, failures, buffer: returned };
}
