/**
 * Stage one: run the frozen backbone once over the dataset and cache the pooled features.
 *
 * Flow: scan the folder -> hash every file -> record the listing (one feature set per
 * input size) -> for content hashes missing a vector of some (size, view), decode the
 * image once (sharp, p-limit), make every missing view at every size from the decoded
 * pixels, and run the engine (one engine serves all sizes), the next group decoding
 * while the engine works -> commit each group. A kill loses at most the groups in
 * flight; a rerun computes only what is missing. Each decoded image without a perceptual
 * hash gets one from the same pixels (for `pipeline audit`), stored with its group.
 *
 * On a server store (a postgres:// --db) the same work is cut into shards that any number
 * of processes claim, and each shard commits whole with its completion (extractByShards).
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import pLimit from 'p-limit';
import { type Engine, startEngine } from '../backbone/engine.js';
import { PREPROCESSING, type InputSize, type ResizeMode, formatSize } from '../backbone/preprocessing.js';
import { backboneWeights, readWeightFile } from '../backbone/weights.js';
import type { FailureRow, FeatureSet } from '../cache/features.js';
import { type ShardProgress, type ShardQueue, openStore } from '../cache/store.js';
import type { Dataset } from '../data/dataset.js';
import type { FetchOptions } from '../data/manifest.js';
import { isRemote, openDataset, readImageBytes } from '../data/open-dataset.js';
import { type HashedItem, hashItems } from './dataset-hashes.js';
import { ensureDataset } from '../data/fetch-dataset.js';
import { sha256 } from '../data/hash.js';
import { decodeSources, renderInput } from '../data/images.js';
import { perceptualHash } from '../data/phash.js';
import { ORIGINAL, type View, parseViews } from '../data/views.js';
import { type BackendRequest, resolveBackend } from '../backbone/backends.js';
import { UserError, messageOf } from '../core/errors.js';
import { type Log, type StartProgress, noProgress, quietLog } from '../core/log.js';

export interface ExtractOptions {
  /** `root`: a dataset folder, or a .csv / .jsonl manifest of paths and http(s) URLs (data/manifest.ts). */
  readonly dataset: { root: string; url: string | null; sha256: string | null; splits: string | null };
  /** How a manifest's URLs are fetched (data/manifest.ts FETCH_DEFAULTS when absent). */
  readonly fetch?: FetchOptions;
  /** One size or several (one feature set each); views default to ['original'] (data/views.ts). */
  readonly model: { weights: string; size: InputSize | readonly InputSize[]; resize: ResizeMode; views?: readonly string[] };
  /** A SQLite file, or a postgres:// URL: then the work is shared with every other process extracting the same feature set. */
  readonly db: string;
  /** With a server store: images per shard (default 1000) and the seconds a claimed shard may take before another worker gets it (default 900). */
  readonly shards?: { readonly size?: number; readonly timeoutSeconds?: number };
  readonly backend: BackendRequest;
  readonly batch: number;
  readonly concurrency: number;
  /** Polled between batches: true stops after the batches in flight are committed. */
  readonly shouldStop?: () => boolean;
  readonly log?: Log;
  readonly startProgress?: StartProgress;
}

export interface ExtractSummary {
  /** The feature set of the first size. */
  readonly featureSet: FeatureSet;
  /** One per size, in the order asked for. */
  readonly featureSets: readonly FeatureSet[];
  readonly views: readonly string[];
  readonly dataset: Dataset;
  readonly images: number;
  /** Distinct contents that needed the backbone this run. */
  readonly toExtract: number;
  /** Vectors computed (images x views x sizes). */
  readonly extracted: number;
  /** Image decodes: one per image (per distinct JPEG shrink factor among the sizes). */
  readonly decoded: number;
  /** Images with every vector already cached. */
  readonly cached: number;
  readonly failures: readonly FailureRow[];
  readonly seconds: number;
  readonly interrupted: boolean;
  /** With a server store: this worker's shards, and the whole feature set's progress (of the first size). */
  readonly cluster?: { readonly shardsDone: number; readonly progress: ShardProgress };
}

/** One vector to compute: a view at a size. */
interface Output {
  readonly set: FeatureSet;
  readonly size: InputSize;
  readonly view: View;
}

interface Work {
  readonly item: HashedItem;
  readonly outputs: readonly Output[];
  /** The content has no perceptual hash stored yet: make one from the decoded pixels. */
  readonly needsHash: boolean;
}

export async function runExtract(options: ExtractOptions): Promise<ExtractSummary> {
  const { log = quietLog, startProgress = noProgress } = options;
  const sizes: readonly InputSize[] = Array.isArray(options.model.size) ? options.model.size : [options.model.size as InputSize];
  const views = parseViews(options.model.views ?? ['original']);
  if (typeof views === 'string') throw new UserError(`--views / model.views: ${views}`);
  await ensureDataset(options.dataset, log, startProgress);
  const dataset = await openDataset(options.dataset.root, options.dataset.splits ?? undefined);
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
      `${weights.foldedAtLoad ? ' (BatchNorm folded at load)' : ''}, input ${sizes.map(formatSize).join(', ')} (${options.model.resize}), ` +
      `views ${views.map((v) => v.name).join(', ')}`,
  );

  const db = await openStore(options.db);
  return db.guard(async () => {
    try {
      const featureSets = await Promise.all(sizes.map((size) =>
        db.ensureFeatureSet({
          id: featureSetId(weights.sha256, weights.arch.name, weights.arch.alpha, size, options.model.resize, backend.backend),
          modelSource: options.model.weights,
          weightsSha256: weights.sha256,
          architecture: weights.arch.name,
          alpha: weights.arch.alpha,
          height: size.height,
          width: size.width,
          resize: options.model.resize,
          preprocessing: PREPROCESSING.id,
          backend: backend.backend,
          dim: weights.arch.featureDim,
        }),
      ));
      const failed = new Set((await Promise.all(featureSets.map((set) => db.listFailures(set.id)))).flat().map((f) => f.sha256));
      const { items, unfetched } = await hashItems(dataset, options, db, failed, log);
      for (const set of featureSets) await db.replaceItems(set.id, items);
      // Images whose URL gave nothing have no content to extract: they fail now, in every
      // feature set, and a rerun fetches them again.
      const unfetchable = new Set(unfetched.map((f) => f.sha256));
      if (unfetched.length) for (const set of featureSets) await db.saveBatch(set.id, { features: [], failures: unfetched });
      const reachable = items.filter((item) => !unfetchable.has(item.sha256));

      const allOutputs = await Promise.all(
        featureSets.flatMap((set, i) => views.map(async (view) => ({ set, size: sizes[i], view, done: await db.extractedHashes(set.id, view.name) }))),
      );
      const missing = (item: HashedItem) => allOutputs.filter((o) => !o.done.has(item.sha256));
      const cached = items.filter((item) => missing(item).length === 0).length;
      const toDecode = uniqueByContent(reachable).filter((item) => missing(item).length > 0);
      const hashed = await db.loadPerceptualHashes(toDecode.map((item) => item.sha256));
      const pending: Work[] = toDecode.map((item) => ({ item, outputs: missing(item), needsHash: !hashed.has(item.sha256) }));
      for (const set of featureSets) log(`feature set ${set.id} (${set.height}x${set.width})`);
      log(`${cached} images fully cached, ${pending.length} distinct images to extract (${pending.reduce((n, w) => n + w.outputs.length, 0)} vectors)`);

      const runIds = await Promise.all(featureSets.map((set) => db.startExtractRun(set.id, dataset.root, items.length)));
      const started = performance.now();
      const extractedPer = new Map(featureSets.map((set) => [set.id, 0]));
      let decoded = 0;
      /** By content: a failure is recorded in every feature set, reported once. */
      const failures = new Map<string, FailureRow>(unfetched.map((f) => [f.sha256, f]));
      let interrupted = false;
      let status: 'done' | 'interrupted' | 'failed' = 'failed';
      let cluster: ExtractSummary['cluster'];
      // One engine for every size, started only when some image needs it (a worker joining a
      // finished feature set never pays for it).
      let engine: Promise<Engine> | undefined;
      const engineOf = () => (engine ??= startEngine({ weights, backend, size: sizes[0], batchSize: options.batch }));
      const record = (result: GroupResult) => {
        decoded += result.decoded;
        for (const { sha256, path, error } of result.failures) failures.set(sha256, { sha256, path, error });
      };
      try {
        try {
          if (db.shards) {
            // Shared work: the listing is cut into shards that every process extracting this
            // feature set claims one at a time; each shard's vectors commit with its completion.
            const hashed = new Set((await db.loadPerceptualHashes(uniqueByContent(reachable).map((item) => item.sha256))).keys());
            const outcome = await extractByShards(db.shards, featureSets, allOutputs, reachable, hashed, options, engineOf, log, startProgress, async (set, result) => {
              extractedPer.set(set.id, extractedPer.get(set.id)! + result.features.filter((f) => f.set === set).length);
              record(result);
              // Idempotent rows keyed by content: outside the shard's transaction is harmless.
              await db.savePerceptualHashes(result.hashes);
              for (const { sha256 } of result.hashes) hashed.add(sha256);
            });
            interrupted = outcome.interrupted;
            cluster = outcome.cluster;
          } else if (pending.length > 0) {
            const progress = startProgress('extract', pending.length, 'images');
            try {
              const result = await extractWorks(pending, options, await engineOf(), weights.arch.featureDim, views.length, async (group, result) => {
                await db.savePerceptualHashes(result.hashes);
                for (const set of featureSets) {
                  const features = result.features.filter((f) => f.set === set);
                  await db.saveBatch(set.id, { features, failures: result.failures.filter((f) => f.set === set) });
                  extractedPer.set(set.id, extractedPer.get(set.id)! + features.length);
                }
                record(result);
                progress.advance(group.length);
              });
              interrupted = result.interrupted;
            } finally {
              progress.stop();
            }
          }
        } finally {
          if (engine) await (await engine).close();
        }
        status = interrupted ? 'interrupted' : 'done';
      } finally {
        const seconds = (performance.now() - started) / 1000;
        for (const [i, set] of featureSets.entries()) {
          await db.finishExtractRun(runIds[i], { status, extracted: extractedPer.get(set.id)!, failed: failures.size, seconds });
        }
      }
      // Failures are per content; report every path that has that content.
      const failedPaths = items.filter((item) => failures.has(item.sha256)).map((item) => ({ sha256: item.sha256, path: item.path, error: failures.get(item.sha256)!.error }));
      return {
        featureSet: featureSets[0],
        featureSets,
        views: views.map((v) => v.name),
        dataset,
        images: items.length,
        toExtract: pending.length,
        extracted: [...extractedPer.values()].reduce((a, b) => a + b, 0),
        decoded,
        cached,
        failures: failedPaths,
        seconds: (performance.now() - started) / 1000,
        interrupted,
        ...(cluster ? { cluster } : {}),
      };
    } finally {
      await db.close();
    }
  });
}

type GroupResult = Awaited<ReturnType<typeof extractGroup>>;

/**
 * Runs `pending` through the engine in groups of `batch` images (each image's vectors of
 * every view and size together), one group per engine slot plus one decoding ahead, and
 * hands each group's result to `onGroup` as it completes. Stops starting groups once
 * `options.shouldStop` says so (with `stoppable`); a failing group stops the rest.
 */
async function extractWorks(
  pending: readonly Work[],
  options: ExtractOptions,
  engine: Engine,
  dim: number,
  views: number,
  onGroup: (group: readonly Work[], result: GroupResult) => Promise<void>,
  stoppable = true,
): Promise<{ interrupted: boolean }> {
  let interrupted = false;
  let aborted = false;
  const decodeLimit = pLimit(options.concurrency);
  const groupLimit = pLimit(engine.parallelism + 1);
  // Pixel buffers per size, reused (and moved to the engine thread, not copied):
  // fresh memory is slow to touch on these VMs.
  const buffers = new Map<string, Uint8Array[]>();
  const engineRun = async (size: InputSize, inputs: readonly Buffer[]) => {
    const free = buffers.get(formatSize(size)) ?? [];
    buffers.set(formatSize(size), free);
    const buffer = free.pop() ?? new Uint8Array(options.batch * imageBytes(size));
    inputs.forEach((pixels, i) => buffer.set(pixels, i * imageBytes(size)));
    const result = await engine.runInPlace(buffer, inputs.length, size);
    free.push(result.buffer);
    return result.features;
  };
  const groupSize = Math.max(1, Math.floor(options.batch / views));
  await Promise.all(
    chunk(pending, groupSize).map((group) =>
      groupLimit(async () => {
        if (aborted) return;
        if (stoppable && options.shouldStop?.()) {
          interrupted = true;
          return;
        }
        const result = await extractGroup(group, options, decodeLimit, engineRun, dim).catch((error: unknown) => {
          aborted = true; // queued groups return at once; committed ones stay
          throw error;
        });
        await onGroup(group, result);
      }),
    ),
  );
  return { interrupted };
}

/**
 * The shard loop of a server store, one feature set (size) after another: plan the
 * listing's shards (once, whoever comes first), then claim shards until all are complete.
 * A shard is extracted whole (Ctrl-C is honoured between shards, so no shard is ever
 * half-committed), computing only the vectors this worker does not see stored already.
 */
async function extractByShards(
  queue: ShardQueue,
  featureSets: readonly FeatureSet[],
  outputs: ReadonlyArray<Output & { done: Set<string> }>,
  items: readonly HashedItem[],
  hashed: ReadonlySet<string>,
  options: ExtractOptions,
  engineOf: () => Promise<Engine>,
  log: Log,
  startProgress: StartProgress,
  onResult: (set: FeatureSet, result: GroupResult) => Promise<void>,
): Promise<{ interrupted: boolean; cluster: NonNullable<ExtractSummary['cluster']> }> {
  const shardSize = options.shards?.size ?? 1000;
  const expireInSeconds = options.shards?.timeoutSeconds ?? 900;
  const workerId = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
  const since = new Date();
  const byContent = new Map(uniqueByContent(items).map((item) => [item.sha256, item]));
  let shardsDone = 0;
  let first: NonNullable<ExtractSummary['cluster']> | undefined;
  for (const set of featureSets) {
    const plan = await queue.plan(set.id, [...byContent.values()].map(({ path, sha256 }) => ({ path, sha256 })), { shardSize, expireInSeconds });
    log(`feature set ${set.id}: ${plan.shards} shards of up to ${shardSize} images (${plan.created ? 'planned now' : 'planned by another worker or run'}); worker ${workerId}`);
    const setOutputs = outputs.filter((o) => o.set === set);
    const viewCount = setOutputs.length;
    // The bar shows the whole cluster's progress, refreshed at each commit and every few seconds.
    const start = await queue.progress(set.id);
    // Start the engine before claiming a shard: model loading takes seconds and would
    // otherwise count against the first shard's --shard-timeout, which then expires and is
    // redone by another worker although this one is alive.
    if (!start || start.imagesDone < start.images) await engineOf();
    const progress = startProgress(`extract ${set.height}x${set.width} (all workers)`, start?.images ?? byContent.size, 'images');
    let shown = 0;
    const refresh = async () => {
      const now = await queue.progress(set.id);
      if (now && now.imagesDone > shown) {
        progress.advance(now.imagesDone - shown);
        shown = now.imagesDone;
      }
    };
    const timer = setInterval(() => void refresh().catch(() => {}), 5000);
    timer.unref();
    try {
      await refresh();
      shardsDone += await queue.work(
        set.id,
        async (shard) => {
          const failures: FailureRow[] = [];
          const works: Work[] = [];
          for (const { path, sha256 } of shard.items) {
            const item = byContent.get(sha256);
            // A shard of an older listing may still be queued: its images that are gone
            // from this listing are none of this plan's business.
            if (!item && shard.plan !== plan.plan) continue;
            if (!item) {
              failures.push({ sha256, path, error: `not in the dataset this worker sees (${options.dataset.root}): do all workers read the same files?` });
              continue;
            }
            const missing = setOutputs.filter((o) => !o.done.has(sha256));
            if (missing.length) works.push({ item, outputs: missing, needsHash: !hashed.has(sha256) });
          }
          const features: { sha256: string; view: string; vector: Float32Array }[] = [];
          if (works.length) {
            await extractWorks(works, options, await engineOf(), set.dim, viewCount, async (_group, result) => {
              for (const f of result.features) features.push({ sha256: f.sha256, view: f.view, vector: f.vector });
              failures.push(...result.failures);
              await onResult(set, result);
            }, false);
          }
          return { features, failures };
        },
        { workerId, shouldStop: options.shouldStop, onCommit: () => void refresh().catch(() => {}) },
      );
    } finally {
      clearInterval(timer);
      progress.stop();
    }
    const now = await queue.progress(set.id, since);
    if (now && !first) first = { shardsDone, progress: now };
    if (options.shouldStop?.()) return { interrupted: true, cluster: first ?? { shardsDone, progress: now! } };
  }
  return { interrupted: false, cluster: { ...first!, shardsDone } };
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

/** Reads and decodes each image once, renders its missing outputs, runs them through the engine by size. */
async function extractGroup(
  group: readonly Work[],
  options: ExtractOptions,
  decodeLimit: ReturnType<typeof pLimit>,
  engineRun: (size: InputSize, inputs: readonly Buffer[]) => Promise<Float32Array>,
  dim: number,
) {
  let decoded = 0;
  const rendered = await Promise.all(
    group.map(({ item, outputs, needsHash }) =>
      decodeLimit(async () => {
        try {
          const bytes = await readImageBytes(item, options.fetch);
          // The file (or what its URL serves) may have changed since it was hashed; its vector must match its hash.
          if (sha256(bytes) !== item.sha256) {
            throw new Error(isRemote(item) ? 'the URL served other bytes than when it was hashed' : 'file changed during extraction; rerun to pick it up');
          }
          const sizes = [...new Map(outputs.map((o) => [formatSize(o.size), o.size])).values()];
          const { sources, decodes } = await decodeSources(bytes, sizes);
          decoded += decodes;
          const sourceOf = new Map(sizes.map((size, i) => [formatSize(size), sources[i]]));
          const inputs: Buffer[] = [];
          for (const o of outputs) inputs.push(await renderInput(sourceOf.get(formatSize(o.size))!, o.view, o.size, options.model.resize));
          // The hash is of the original view at the first size extracted, the pixels
          // decodeImage gives (what the audit hashes for images extracted before this):
          // usually rendered already, else made from the same decoded source.
          let phash: string | undefined;
          if (needsHash) {
            const size = outputs[0].size;
            const at = outputs.findIndex((o) => o.view.name === ORIGINAL.name && formatSize(o.size) === formatSize(size));
            const pixels = at >= 0 ? inputs[at] : await renderInput(sourceOf.get(formatSize(size))!, ORIGINAL, size, options.model.resize);
            phash = perceptualHash(pixels, size.width, size.height);
          }
          return { work: { item, outputs }, inputs, phash };
        } catch (error) {
          return { work: { item, outputs }, error: messageOf(error).split('\n')[0] };
        }
      }),
    ),
  );
  const features: { set: FeatureSet; sha256: string; view: string; vector: Float32Array }[] = [];
  const failures: (FailureRow & { set: FeatureSet })[] = [];
  const hashes: { sha256: string; phash: string }[] = [];
  const bySize = new Map<string, { size: InputSize; jobs: { output: Output; sha256: string; pixels: Buffer }[] }>();
  for (const r of rendered) {
    if ('error' in r) {
      for (const set of new Set(r.work.outputs.map((o) => o.set))) failures.push({ set, sha256: r.work.item.sha256, path: r.work.item.path, error: r.error! });
      continue;
    }
    if (r.phash !== undefined) hashes.push({ sha256: r.work.item.sha256, phash: r.phash });
    r.work.outputs.forEach((output, i) => {
      const key = formatSize(output.size);
      const entry = bySize.get(key) ?? { size: output.size, jobs: [] };
      entry.jobs.push({ output, sha256: r.work.item.sha256, pixels: r.inputs![i] });
      bySize.set(key, entry);
    });
  }
  await Promise.all(
    [...bySize.values()].flatMap(({ size, jobs }) =>
      chunk(jobs, options.batch).map(async (batch) => {
        const vectors = await engineRun(size, batch.map((j) => j.pixels));
        batch.forEach((j, i) => features.push({ set: j.output.set, sha256: j.sha256, view: j.output.view.name, vector: vectors.slice(i * dim, (i + 1) * dim) }));
      }),
    ),
  );
  return { features, failures, decoded, hashes };
}
