/**
 * Stage two: train many dense heads from the cached features. Reads only the cache (never
 * images, never the backbone), trains every pending run of the sweep in one batched
 * computation (stages/sweep/trainer.ts), and stores each run as soon as it finishes, so
 * an interrupted sweep resumes with `--resume` without retraining anything.
 */
import { type Log, quietLog } from '../core/log.js';
import type { FeatureSet, ItemRow } from '../cache/features.js';
import { type Store, type StoreLike, storeOf } from '../cache/store.js';
import type { SplitRow, StoredRun, SweepMember } from '../cache/sweeps.js';
import type { Split } from '../data/dataset.js';
import { sha256 } from '../data/hash.js';
import { UserError } from '../core/errors.js';
import type { ParameterSpec, SweepConfig } from './sweep/config.js';
import { missingSize, selectSweepFeatureSet, sizeName, sizeSiblings } from './feature-set.js';
import { classificationReport } from './sweep/metrics.js';
import { type PlannedRun, headParams, planRuns } from './sweep/plan.js';
import { type VariantSummary, rankVariants } from './sweep/ranking.js';
import { makeSplit } from './sweep/split.js';
import { type RunResult, type SplitData, type TrainData, trainHeads, workerCount } from './sweep/trainer.js';

/**
 * The trainer's identity, stored with each sweep and part of its configuration hash: heads
 * train on the project's WebAssembly SIMD kernels on every machine (stages/sweep/simd.ts),
 * so the numbers depend on the sweep config alone, not on the extract backend.
 */
const TRAINER = 'wasm-simd';

export interface SweepOptions {
  readonly db: StoreLike;
  /** The feature set the sweep is anchored to (its listing and split); see sweepFeatureSet. */
  readonly featureSet: FeatureSet;
  readonly sweep: SweepConfig;
  readonly resume: boolean;
  readonly shouldStop?: () => boolean;
  readonly log?: Log;
}

export interface SweepOutcome {
  readonly sweepId: number;
  /** An identical sweep had already finished: nothing was trained. */
  readonly alreadyDone: boolean;
  readonly interrupted: boolean;
  readonly trainedNow: number;
  readonly planned: number;
  readonly ranking: VariantSummary[];
  /** Training wall time of the sweep over all its sessions (as stored). */
  readonly wallSeconds: number;
  /** Wall time of this call, loading the cache and storing runs included. */
  readonly sessionSeconds: number;
  readonly splitSource: string;
  /** What trained the heads, e.g. "wasm-simd x2". */
  readonly trainer: string;
}

/** The images a sweep uses, in row order, with their labels; no vectors. */
export interface SweepMembers {
  readonly labels: string[];
  readonly splitSource: string;
  /** Every image used, train then val then test, in row order. */
  readonly members: SweepMember[];
  readonly imagesLeftOut: number;
  /** Content hashes and class indices per split, in row order. */
  readonly parts: Record<Split, { hashes: string[]; y: Int32Array }>;
}

/** A training set assembled from the cache, with the row order every stored array follows. */
export interface SweepData extends TrainData, Omit<SweepMembers, 'parts'> {}

/** What a run's head sees: sizes concatenated in order, views (view 0 first), z-scored or not. */
export interface HeadInputs {
  readonly sizes: readonly string[];
  readonly views: readonly string[];
  readonly standardize: boolean;
}

/** Train statistics of a z-scored input, stored with the run's weights under these names. */
export const STANDARDIZE_MEAN = 'standardize/mean';
export const STANDARDIZE_STD = 'standardize/std';

/**
 * The feature set a sweep is anchored to: `--feature-set`, else the one at the first size
 * the sweep concatenates (when the cache holds one family of sizes), else the only one.
 */
export function sweepFeatureSet(db: StoreLike, id: string | undefined, sweep: SweepConfig): Promise<FeatureSet> {
  const spec = sweep.parameters.sizes as ParameterSpec;
  const first = 'value' in spec ? spec.value : 'values' in spec ? spec.values[0] : undefined;
  return selectSweepFeatureSet(db, id, Array.isArray(first) && first.length > 0 ? first[0] : undefined);
}

export async function runSweep(options: SweepOptions): Promise<SweepOutcome> {
  const begun = performance.now();
  const log = options.log ?? quietLog;
  const { featureSet } = options;
  const db = storeOf(options.db);
  const sweep = withDefaultSize(options.sweep, sizeName(featureSet));
  const planned = planRuns(sweep);
  const inputsOf = (run: PlannedRun): HeadInputs => ({
    sizes: run.variant.sizes as string[],
    views: run.variant.views as string[],
    standardize: run.variant.standardize as boolean,
  });
  const sizesUsed = unique(planned.flatMap((run) => inputsOf(run).sizes));
  const viewsUsed = unique(planned.flatMap((run) => inputsOf(run).views));
  const sets = await sizeSets(db, featureSet, sizesUsed, viewsUsed);
  const cache = await loadCachedInputs(db, featureSet, sets, viewsUsed, log);
  const data = cache.members;
  const trainer = TRAINER;
  const configJson = JSON.stringify({ sweep, trainer });
  const configHash = sha256(configJson);
  const dataHash = membersHash(inputsIdentity(featureSet, sets, viewsUsed), data.members);

  const previous = await db.findSweep(featureSet.id, configHash, dataHash);
  if (previous?.status === 'done' && !options.resume) {
    log(`sweep ${previous.id} already ran this exact configuration on this exact data (feature set ${featureSet.id}): nothing to train`);
    return await outcome(previous.id, true, false, 0);
  }
  if (previous && previous.status !== 'done' && !options.resume) {
    log(`note: sweep ${previous.id} with this configuration and data was interrupted; \`--resume\` continues it. Starting a new sweep.`);
  }
  if (options.resume && !previous) {
    const other = await db.findSweep(featureSet.id, configHash);
    log(
      other
        ? `--resume: sweep ${other.id} has this configuration but was trained on other data (${describeChange(await db.loadSweepMembers(other.id), data.members)}): it cannot be resumed; starting a new sweep`
        : '--resume: no earlier sweep with this configuration; starting a new one',
    );
  }
  const sweepId =
    options.resume && previous
      ? previous.id
      : await db.createSweep(
          {
            featureSet: featureSet.id,
            configHash,
            configJson,
            splitSource: data.splitSource,
            trainer,
            plannedRuns: planned.length,
            dataHash,
            labels: data.labels,
            datasetRoot: (await db.latestExtractRun(featureSet.id))?.datasetRoot ?? null,
            imagesLeftOut: data.imagesLeftOut,
            sizeSets: Object.fromEntries([...sets].map(([size, set]) => [size, set.id])),
          },
          data.members,
        );

  const finished = await db.finishedRunKeys(sweepId);
  const pending = planned.filter((run) => !finished.has(run.runKey));
  // Runs that see the same inputs share one assembled (and z-scored) copy of them.
  const groups = new Map<string, PlannedRun[]>();
  for (const run of pending) {
    const key = JSON.stringify(inputsOf(run));
    groups.set(key, [...(groups.get(key) ?? []), run]);
  }
  log(
    `sweep ${sweepId}: ${planned.length} runs (${planned.length / sweep.seeds.length} variants x ${sweep.seeds.length} seeds), ` +
      `${finished.size} already done, ${pending.length} to train in ${groups.size} input groups (${trainer}, ${workerCount(pending.length)} worker threads); ` +
      `split ${data.parts.train.y.length}/${data.parts.val.y.length}/${data.parts.test.y.length} (${data.splitSource})`,
  );

  const started = performance.now();
  let trainedNow = 0;
  // Runs are saved in the order they finish; a server store answers later, so the saves
  // are chained and all awaited before the sweep is closed. SQLite saves at once.
  let saved: Promise<void> = Promise.resolve();
  for (const runs of groups.values()) {
    if (options.shouldStop?.()) break;
    const inputs = inputsOf(runs[0]);
    const assembled = assembleInputs(cache, inputs);
    const byKey = new Map(runs.map((run) => [run.runKey, run]));
    await trainHeads(
      assembled.data,
      runs.map((run) => ({ key: run.runKey, params: headParams(run), seed: run.seed })),
      { monitor: sweep.early_stopping.monitor, patience: sweep.early_stopping.patience },
      {
        onRunFinished(result) {
          const run = storedRun(byKey.get(result.key)!, result, data, assembled.standardization);
          // Promise.all handles a failed save at once (no unhandled rejection) and keeps the first error.
          saved = Promise.all([saved, db.saveRun(sweepId, run)]).then(() => undefined);
          trainedNow++;
        },
        shouldStop: options.shouldStop,
      },
    );
  }
  await saved;
  const interrupted = (await db.finishedRunKeys(sweepId)).size < planned.length;
  await db.finishSweep(sweepId, interrupted ? 'interrupted' : 'done', (performance.now() - started) / 1000);
  return await outcome(sweepId, false, interrupted, trainedNow);

  async function outcome(id: number, alreadyDone: boolean, stopped: boolean, trained: number): Promise<SweepOutcome> {
    return {
      sweepId: id,
      alreadyDone,
      interrupted: stopped,
      trainedNow: trained,
      planned: planned.length,
      ranking: rankVariants(await db.loadRuns(id), sweep.metric),
      wallSeconds: (await db.getSweep(id))?.wallSeconds ?? 0,
      sessionSeconds: (performance.now() - begun) / 1000,
      splitSource: data.splitSource,
      trainer,
    };
  }
}

const unique = <T>(values: readonly T[]): T[] => [...new Set(values)];

/** `sizes` left at its default (an empty list) means the anchor feature set's own size. */
function withDefaultSize(sweep: SweepConfig, size: string): SweepConfig {
  const spec = sweep.parameters.sizes as ParameterSpec;
  if (!('value' in spec) || (spec.value as string[]).length > 0) return sweep;
  return { ...sweep, parameters: { ...sweep.parameters, sizes: { value: [size] } } };
}

/** The feature set of every size used, from the anchor's size family; a size not cached is a UserError. */
async function sizeSets(db: Store, anchor: FeatureSet, sizes: readonly string[], views: readonly string[]): Promise<Map<string, FeatureSet>> {
  const siblings = await sizeSiblings(db, anchor);
  return new Map(
    sizes.map((size) => {
      const set = siblings.get(size);
      if (!set) throw missingSize(size, [...siblings.keys()], views);
      return [size, set];
    }),
  );
}

/**
 * What pins a sweep's inputs besides its members: the anchor feature set alone when the
 * sweep reads only its original view (as sweeps always did), else every size's feature
 * set and the views read.
 */
function inputsIdentity(anchor: FeatureSet, sets: ReadonlyMap<string, FeatureSet>, views: readonly string[]): string {
  const ids = [...sets.values()].map((set) => set.id);
  if (ids.length === 1 && ids[0] === anchor.id && views.length === 1 && views[0] === 'original') return anchor.id;
  return JSON.stringify({ anchor: anchor.id, sizes: [...sets].map(([size, set]) => [size, set.id]), views });
}

/**
 * The identity of a sweep's data: the feature set(s) and every member with its split, row,
 * label and content. Any added, removed, edited or relabelled image changes it.
 */
export function membersHash(featureSet: string, members: readonly SweepMember[]): string {
  return sha256(JSON.stringify([featureSet, members.map((m) => [m.split, m.position, m.path, m.label, m.sha256])]));
}

/** A short account of how two memberships differ, for the user. */
function describeChange(before: readonly SweepMember[], after: readonly SweepMember[]): string {
  const key = (m: SweepMember) => `${m.path}\u0000${m.label}\u0000${m.split}\u0000${m.sha256}`;
  const paths = (list: readonly SweepMember[]) => new Set(list.map((m) => m.path));
  const [oldPaths, newPaths] = [paths(before), paths(after)];
  const oldKeys = new Set(before.map(key));
  const added = after.filter((m) => !oldPaths.has(m.path)).length;
  const removed = before.filter((m) => !newPaths.has(m.path)).length;
  const changed = after.filter((m) => oldPaths.has(m.path) && !oldKeys.has(key(m))).length;
  return `${added} images added, ${removed} removed, ${changed} changed in content, label or split`;
}

/** The sweep's members and every (size, view) vector they need, read from the cache once. */
export interface CachedInputs {
  readonly members: SweepMembers;
  readonly sets: ReadonlyMap<string, FeatureSet>;
  /** by size, then view, then content hash */
  readonly vectors: ReadonlyMap<string, ReadonlyMap<string, ReadonlyMap<string, Float32Array>>>;
}

export async function loadCachedInputs(
  from: StoreLike,
  anchor: FeatureSet,
  sets: ReadonlyMap<string, FeatureSet>,
  views: readonly string[],
  log: Log,
): Promise<CachedInputs> {
  const db = storeOf(from);
  const items = await db.listItems(anchor.id);
  if (items.length === 0) {
    throw new UserError(`feature set ${anchor.id} has no images recorded: run \`pipeline extract\` first`);
  }
  const hashes = items.map((item) => item.sha256);
  const failures = await Promise.all([anchor, ...sets.values()].map((set) => db.listFailures(set.id)));
  const failed = new Set(failures.flat().map((f) => f.sha256));
  const anchorOriginal = await db.loadVectors(anchor.id, hashes);
  const missing = items.filter((item) => !anchorOriginal.has(item.sha256) && !failed.has(item.sha256));
  if (missing.length > 0) {
    throw new UserError(
      `feature set ${anchor.id} is missing features for ${missing.length} of ${items.length} images (e.g. ${missing[0].path}): run \`pipeline extract\` to finish it`,
    );
  }
  const usable = items.filter((item) => !failed.has(item.sha256));
  if (usable.length < items.length) log(`${items.length - usable.length} images failed extraction and are left out`);

  const vectors = new Map<string, Map<string, Map<string, Float32Array>>>();
  for (const [size, set] of sets) {
    const byView = new Map<string, Map<string, Float32Array>>();
    for (const view of views) {
      const found = set.id === anchor.id && view === 'original' ? anchorOriginal : await db.loadVectors(set.id, hashes, view);
      const absent = usable.filter((item) => !found.has(item.sha256));
      if (absent.length > 0) throw missingVectors(set, size, view, absent.length, usable.length, absent[0].path, [...sets.keys()], views);
      byView.set(view, found);
    }
    vectors.set(size, byView);
  }

  const split = await currentSplit(db, anchor.id, usable);
  const splitOf = new Map(split.map((row) => [row.path, row.split]));
  const labels = [...new Set(usable.map((item) => item.label))].sort();
  const classIndex = new Map(labels.map((label, i) => [label, i]));
  const members: SweepMember[] = [];
  const part = (name: Split) => {
    const rows = usable.filter((item) => splitOf.get(item.path) === name);
    if (rows.length === 0) throw new UserError(`the ${name} split is empty (${split[0]?.source}): a sweep needs images in train, val and test`);
    rows.forEach((item, i) => members.push({ split: name, position: i, path: item.path, label: item.label, sha256: item.sha256 }));
    return { hashes: rows.map((item) => item.sha256), y: Int32Array.from(rows, (item) => classIndex.get(item.label)!) };
  };
  const parts = { train: part('train'), val: part('val'), test: part('test') };
  return {
    members: { labels, splitSource: split[0].source, members, imagesLeftOut: items.length - usable.length, parts },
    sets,
    vectors,
  };
}

/** One line naming the sweep field that asks for what is missing and the extract that fills it. */
function missingVectors(set: FeatureSet, size: string, view: string, absent: number, of: number, example: string, sizes: string[], views: readonly string[]): UserError {
  const field = view === 'original' ? 'sweep.parameters.sizes' : 'sweep.parameters.views';
  return new UserError(
    `${field}: feature set ${set.id} (${size}) has no vectors of view ${view} for ${absent} of ${of} images (e.g. ${example}): ` +
      `run \`pipeline extract --size ${sizes.join(',')} --views ${views.join(',')}\``,
  );
}

/**
 * The head's input for one combination of sizes, views and standardisation: each row is
 * the sizes' vectors side by side in the order given; train holds every view of an image
 * as its own row, val and test keep an image's views together (image-major, view 0 first)
 * so the trainer averages over them. With standardize, every column is z-scored with the
 * mean and (population) standard deviation of the train rows, views included; a constant
 * column keeps a standard deviation of 1, so it stays constant instead of dividing by 0.
 */
export function assembleInputs(cache: CachedInputs, inputs: HeadInputs): { data: SweepData; standardization?: { mean: Float32Array; std: Float32Array } } {
  const { parts, ...members } = cache.members;
  const width = inputs.sizes.map((size) => cache.sets.get(size)!.dim);
  const dim = width.reduce((a, b) => a + b, 0);
  const rows = (hashes: readonly string[]) => {
    const x = new Float32Array(hashes.length * inputs.views.length * dim);
    let offset = 0;
    for (const hash of hashes) {
      for (const view of inputs.views) {
        inputs.sizes.forEach((size, s) => {
          x.set(cache.vectors.get(size)!.get(view)!.get(hash)!, offset);
          offset += width[s];
        });
      }
    }
    return x;
  };
  const views = inputs.views.length;
  const train: SplitData = { x: rows(parts.train.hashes), y: repeatEach(parts.train.y, views) };
  const val: SplitData = { x: rows(parts.val.hashes), y: parts.val.y, views };
  const test: SplitData = { x: rows(parts.test.hashes), y: parts.test.y, views };
  const data: SweepData = { ...members, dim, classes: members.labels.length, train, val, test };
  if (!inputs.standardize) return { data };
  const standardization = trainStatistics(train.x, dim);
  for (const split of [train, val, test]) zScore(split.x, standardization);
  return { data, standardization };
}

/** Each label repeated `times` times in a row: train's views are rows of their own. */
function repeatEach(y: Int32Array, times: number): Int32Array {
  const out = new Int32Array(y.length * times);
  for (let i = 0; i < out.length; i++) out[i] = y[Math.floor(i / times)];
  return out;
}

/** Column means and population standard deviations of row-major `x`, summed in float64, stored as float32. */
export function trainStatistics(x: Float32Array, dim: number): { mean: Float32Array; std: Float32Array } {
  const n = x.length / dim;
  const sum = new Float64Array(dim);
  for (let r = 0; r < n; r++) for (let d = 0; d < dim; d++) sum[d] += x[r * dim + d];
  const mean = sum.map((v) => v / n);
  const squares = new Float64Array(dim);
  for (let r = 0; r < n; r++) {
    for (let d = 0; d < dim; d++) {
      const delta = x[r * dim + d] - mean[d];
      squares[d] += delta * delta;
    }
  }
  const std = squares.map((v) => Math.sqrt(v / n) || 1);
  return { mean: Float32Array.from(mean), std: Float32Array.from(std) };
}

/** (x - mean) / std per column, in place, with the float32 statistics that are stored (what predict applies). */
function zScore(x: Float32Array, { mean, std }: { mean: Float32Array; std: Float32Array }): void {
  const dim = mean.length;
  for (let i = 0; i < x.length; i++) x[i] = (x[i] - mean[i % dim]) / std[i % dim];
}

/** The original view of the anchor's own size: what a sweep read before views and sizes existed (benchmarks use it). */
export async function loadSweepData(db: StoreLike, featureSet: FeatureSet, log: Log): Promise<SweepData> {
  const size = sizeName(featureSet);
  const cache = await loadCachedInputs(db, featureSet, new Map([[size, featureSet]]), ['original'], log);
  return assembleInputs(cache, { sizes: [size], views: ['original'], standardize: false }).data;
}

/** The stored split, remade (and stored) when the dataset's images changed since. */
async function currentSplit(db: Store, featureSet: string, items: readonly ItemRow[]): Promise<SplitRow[]> {
  const stored = await db.loadSplit(featureSet);
  const storedPaths = new Set(stored.map((row) => row.path));
  if (stored.length === items.length && items.every((item) => storedPaths.has(item.path))) return stored;
  const split = makeSplit(items);
  await db.saveSplit(featureSet, split);
  return split;
}

function storedRun(
  plan: PlannedRun,
  result: RunResult,
  data: SweepMembers,
  standardization: { mean: Float32Array; std: Float32Array } | undefined,
): StoredRun {
  const report = classificationReport(data.parts.test.y, result.test.predicted, data.labels);
  const statistics = standardization
    ? [
        { name: STANDARDIZE_MEAN, shape: [standardization.mean.length], values: standardization.mean },
        { name: STANDARDIZE_STD, shape: [standardization.std.length], values: standardization.std },
      ]
    : [];
  return {
    runKey: plan.runKey,
    variantKey: plan.variantKey,
    params: plan.variant,
    seed: plan.seed,
    status: 'done',
    bestEpoch: result.bestEpoch,
    epochsRun: result.epochsRun,
    trainLoss: result.train.loss,
    trainAccuracy: result.train.accuracy,
    valLoss: result.val.loss,
    valAccuracy: result.val.accuracy,
    testLoss: result.test.loss,
    testAccuracy: result.test.accuracy,
    testAccuracySingleView: result.test.firstViewAccuracy,
    macroF1: report.macroF1,
    perClass: report.perClass,
    confusion: report.confusion,
    curves: result.curves,
    testProbabilities: result.test.probabilities,
    weights: [...result.weights, ...statistics],
    trainSeconds: result.trainSeconds,
  };
}
