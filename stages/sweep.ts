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
import type { SweepConfig } from './sweep/config.js';
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
  readonly wallSeconds: number;
  readonly splitSource: string;
  /** What trained the heads, e.g. "wasm-simd x2". */
  readonly trainer: string;
}

/** A training set assembled from the cache, with the row order every stored array follows. */
export interface SweepData extends TrainData {
  readonly labels: string[];
  readonly splitSource: string;
  /** Every image used, train then val then test, in row order. */
  readonly members: SweepMember[];
  readonly imagesLeftOut: number;
}

export async function runSweep(options: SweepOptions): Promise<SweepOutcome> {
  const log = options.log ?? quietLog;
  const { featureSet, sweep } = options;
  const db = storeOf(options.db);
  const data = await loadSweepData(db, featureSet, log);
  const planned = planRuns(sweep);
  const trainer = TRAINER;
  const configJson = JSON.stringify({ sweep, trainer });
  const configHash = sha256(configJson);
  const dataHash = membersHash(featureSet.id, data.members);

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
          },
          data.members,
        );

  const finished = await db.finishedRunKeys(sweepId);
  const pending = planned.filter((run) => !finished.has(run.runKey));
  log(
    `sweep ${sweepId}: ${planned.length} runs (${planned.length / sweep.seeds.length} variants x ${sweep.seeds.length} seeds), ` +
      `${finished.size} already done, ${pending.length} to train (${trainer}, ${workerCount(pending.length)} worker threads); ` +
      `split ${data.train.y.length}/${data.val.y.length}/${data.test.y.length} (${data.splitSource})`,
  );

  const started = performance.now();
  const byKey = new Map(pending.map((run) => [run.runKey, run]));
  let trainedNow = 0;
  // Runs are saved in the order they finish; a server store answers later, so the saves
  // are chained and all awaited before the sweep is closed. SQLite saves at once, as before.
  let saved: Promise<void> = Promise.resolve();
  await trainHeads(
    data,
    pending.map((run) => ({ key: run.runKey, params: headParams(run), seed: run.seed })),
    { monitor: sweep.early_stopping.monitor, patience: sweep.early_stopping.patience },
    {
      onRunFinished(result) {
        const run = storedRun(byKey.get(result.key)!, result, data);
        // Promise.all handles a failed save at once (no unhandled rejection) and keeps the first error.
        saved = Promise.all([saved, db.saveRun(sweepId, run)]).then(() => undefined);
        trainedNow++;
      },
      shouldStop: options.shouldStop,
    },
  );
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
      splitSource: data.splitSource,
      trainer,
    };
  }
}

/**
 * The identity of a sweep's data: the feature set and every member with its split, row,
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

export async function loadSweepData(from: StoreLike, featureSet: FeatureSet, log: Log): Promise<SweepData> {
  const db = storeOf(from);
  const items = await db.listItems(featureSet.id);
  if (items.length === 0) {
    throw new UserError(`feature set ${featureSet.id} has no images recorded: run \`pipeline extract\` first`);
  }
  const vectors = await db.loadVectors(featureSet.id, items.map((item) => item.sha256));
  const failed = new Set((await db.listFailures(featureSet.id)).map((f) => f.sha256));
  const missing = items.filter((item) => !vectors.has(item.sha256) && !failed.has(item.sha256));
  if (missing.length > 0) {
    throw new UserError(
      `feature set ${featureSet.id} is missing features for ${missing.length} of ${items.length} images (e.g. ${missing[0].path}): run \`pipeline extract\` to finish it`,
    );
  }
  const usable = items.filter((item) => vectors.has(item.sha256));
  if (usable.length < items.length) log(`${items.length - usable.length} images failed extraction and are left out`);

  const split = await currentSplit(db, featureSet.id, usable);
  const splitOf = new Map(split.map((row) => [row.path, row.split]));
  const labels = [...new Set(usable.map((item) => item.label))].sort();
  const classIndex = new Map(labels.map((label, i) => [label, i]));
  const members: SweepMember[] = [];
  const part = (name: Split) => {
    const rows = usable.filter((item) => splitOf.get(item.path) === name);
    const x = new Float32Array(rows.length * featureSet.dim);
    rows.forEach((item, i) => {
      x.set(vectors.get(item.sha256)!, i * featureSet.dim);
      members.push({ split: name, position: i, path: item.path, label: item.label, sha256: item.sha256 });
    });
    const y = Int32Array.from(rows, (item) => classIndex.get(item.label)!);
    return { rows, data: { x, y } satisfies SplitData };
  };
  const [train, val, test] = (['train', 'val', 'test'] as const).map(part);
  for (const [name, p] of [['train', train], ['val', val], ['test', test]] as const) {
    if (p.rows.length === 0) throw new UserError(`the ${name} split is empty (${split[0]?.source}): a sweep needs images in train, val and test`);
  }
  return {
    dim: featureSet.dim,
    classes: labels.length,
    labels,
    train: train.data,
    val: val.data,
    test: test.data,
    splitSource: split[0].source,
    members,
    imagesLeftOut: items.length - usable.length,
  };
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

function storedRun(plan: PlannedRun, result: RunResult, data: SweepData): StoredRun {
  const report = classificationReport(data.test.y, result.test.predicted, data.labels);
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
    macroF1: report.macroF1,
    perClass: report.perClass,
    confusion: report.confusion,
    curves: result.curves,
    testProbabilities: result.test.probabilities,
    weights: result.weights,
    trainSeconds: result.trainSeconds,
  };
}
