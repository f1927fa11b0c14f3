/**
 * Stage three: the facts of one sweep, gathered from the cache into one plain object that
 * the terminal, JSON and HTML renderings all read. Field names here are the JSON API
 * (documented in README): change them only with the README.
 */
import type { StoredAudit } from '../cache/audit.js';
import type { FeatureSet } from '../cache/features.js';
import { type StoreLike, storeOf } from '../cache/store.js';
import type { RunParams, StoredRun, SweepMember, SweepRow } from '../cache/sweeps.js';
import type { Split } from '../data/dataset.js';
import { UserError } from '../core/errors.js';
import type { AuditResult, LeakFreeAccuracy } from './audit/result.js';
import { testCopies } from './audit/duplicates.js';
import { argmaxRows } from '../core/arrays.js';
import type { SweepConfig } from './sweep/config.js';
import { type Metric, type VariantSummary, rankVariants, varyingParameters } from './sweep/ranking.js';

export interface RunFacts {
  readonly run_key: string;
  readonly variant: string;
  readonly params: RunParams;
  readonly seed: number;
  readonly best_epoch: number;
  readonly epochs_run: number;
  readonly train_loss: number;
  readonly train_accuracy: number;
  readonly val_loss: number;
  readonly val_accuracy: number;
  readonly test_loss: number;
  readonly test_accuracy: number;
  /** Test accuracy of view 0 alone, without averaging over the run's views (null: not recorded). */
  readonly test_accuracy_single_view: number | null;
  readonly macro_f1: number;
  readonly train_seconds: number;
}

/** What a run's head saw: sizes concatenated in order, views averaged over (view 0 first), z-scored or not. */
export interface InputFacts {
  readonly sizes: string[];
  readonly views: string[];
  readonly standardize: boolean;
}

export interface VariantFacts {
  readonly rank: number;
  readonly params: RunParams;
  readonly seeds: number[];
  readonly metric_mean: number;
  readonly metric_std: number;
  readonly val_accuracy_mean: number;
  readonly val_accuracy_std: number;
  readonly val_loss_mean: number;
  readonly test_accuracy_mean: number;
  readonly test_accuracy_std: number;
  /** Mean over seeds of the test accuracy of view 0 alone (null: not recorded). */
  readonly test_accuracy_single_view_mean: number | null;
}

export interface MisclassifiedImage {
  readonly path: string;
  readonly true_label: string;
  readonly predicted_label: string;
  readonly probabilities: Record<string, number>;
}

/** An audit as stored by `pipeline audit` (its JSON without audit_id, which is the row's id). */
export type StoredAuditFindings = StoredAudit<Omit<AuditResult, 'audit_id'>>;

/** The newest audit of the reported sweep's feature set, in short. */
export interface ReportAudit {
  readonly audit_id: number;
  readonly created_at: string;
  readonly summary: AuditResult['summary'];
  /** The reported sweep's selected run, with and without test images that have a copy in train/val. */
  readonly test_accuracy: LeakFreeAccuracy;
}

export interface ReportFacts {
  readonly sweep: {
    id: number;
    status: string;
    metric: Metric;
    seeds: number[];
    planned_runs: number;
    finished_runs: number;
    wall_seconds: number | null;
    started_at: string;
    /** What trained the heads (the WebAssembly SIMD trainer). */
    trainer: string;
    split: string;
    split_sizes: { train: number; val: number; test: number };
  };
  readonly extraction: {
    feature_set: string;
    model: string;
    alpha: number;
    input_size: string;
    /** The feature set of every size the sweep concatenates, by HxW. */
    size_feature_sets: { size: string; feature_set: string }[];
    resize: string;
    backend: string;
    dataset_root: string | null;
    images: number;
    failures: number;
    images_per_second: number | null;
  };
  readonly labels: string[];
  /** Parameters that differ between the sweep's variants. */
  readonly varying_params: string[];
  readonly best: {
    params: RunParams;
    run_key: string;
    seed: number;
    best_epoch: number;
    val_accuracy: number;
    val_accuracy_mean: number;
    test_accuracy: number;
    test_accuracy_mean: number;
    test_accuracy_std: number;
    /** The selected run's test accuracy on view 0 alone, and its mean over seeds: accuracy without test-time averaging. */
    test_accuracy_single_view: number | null;
    test_accuracy_single_view_mean: number | null;
    /** The sizes, views and standardisation the winner used. */
    inputs: InputFacts;
    macro_f1: number;
    per_class: { label: string; precision: number; recall: number; f1: number; support: number }[];
    confusion: number[][];
    curves: { train_loss: number[]; train_accuracy: number[]; val_loss: number[]; val_accuracy: number[] };
    misclassified: MisclassifiedImage[];
  };
  readonly variants: VariantFacts[];
  readonly runs: RunFacts[];
  /** null when the cache holds no audit of the sweep's feature set. */
  readonly audit: ReportAudit | null;
}

/** The sweep asked for, or the latest one. */
export async function chooseSweep(db: StoreLike, id: number | undefined): Promise<SweepRow> {
  const store = storeOf(db);
  if (id !== undefined) {
    const sweep = await store.getSweep(id);
    if (!sweep) throw new UserError(`--sweep ${id}: no such sweep (pipeline report --list shows them)`);
    return sweep;
  }
  const sweeps = await store.listSweeps();
  if (sweeps.length === 0) throw new UserError('no sweep yet: run `pipeline sweep` first');
  return sweeps[sweeps.length - 1];
}

export interface SweepResults {
  readonly sweep: SweepRow;
  readonly featureSet: FeatureSet;
  readonly ranking: VariantSummary[];
  readonly runs: StoredRun[];
  readonly metric: Metric;
}

export async function sweepResults(db: StoreLike, sweep: SweepRow): Promise<SweepResults> {
  const store = storeOf(db);
  const featureSet = (await store.getFeatureSet(sweep.featureSet))!;
  const config = JSON.parse(sweep.configJson) as { sweep: SweepConfig };
  const runs = await store.loadRuns(sweep.id);
  if (runs.length === 0) throw new UserError(`sweep ${sweep.id} has no finished runs yet (pipeline sweep --resume continues it)`);
  return { sweep, featureSet, ranking: rankVariants(runs, config.sweep.metric), runs, metric: config.sweep.metric };
}

/** A run of a sweep by key, or "best": the best seed of the winning variant. */
export function findRun(results: SweepResults, runKey: string): StoredRun {
  if (runKey === 'best') return results.ranking[0].bestRun;
  const run = results.runs.find((r) => r.runKey === runKey);
  if (!run) throw new UserError(`--run ${runKey}: no such run in sweep ${results.sweep.id} (pipeline report --json lists run keys)`);
  return run;
}

/** A stored audit with each point of its map labelled, for the HTML report. */
export interface AuditForReport {
  readonly stored: StoredAuditFindings;
  /** In the map's order (by path); label and split as the feature set lists them now ('?' / null for images gone since). */
  readonly points: { path: string; x: number; y: number; label: string; split: string | null }[];
}

/** The newest stored audit of a feature set (`pipeline audit`), if any. */
export async function reportAudit(db: StoreLike, featureSet: string): Promise<AuditForReport | null> {
  const store = storeOf(db);
  const stored = await store.latestAudit<Omit<AuditResult, 'audit_id'>>(featureSet);
  if (!stored) return null;
  const items = new Map((await store.listItems(featureSet)).map((item) => [item.path, item]));
  const split = await store.loadSplit(featureSet);
  const splitOf = new Map<string, string | null>(split.length > 0 ? split.map((row) => [row.path, row.split]) : [...items.values()].map((item) => [item.path, item.split]));
  return {
    stored,
    points: stored.map.map((point) => ({ ...point, label: items.get(point.path)?.label ?? '?', split: splitOf.get(point.path) ?? null })),
  };
}

/** `audit` (null: none) is looked up when not given: the newest audit of the sweep's feature set (reportAudit). */
export async function gatherReport(db: StoreLike, sweepRow: SweepRow, given?: AuditForReport | null): Promise<ReportFacts> {
  const store = storeOf(db);
  const audit = given === undefined ? await reportAudit(store, sweepRow.featureSet) : given;
  const data = await pinnedData(store, sweepRow);
  const results = await sweepResults(store, sweepRow);
  const { sweep, featureSet, ranking, runs, metric } = results;
  const config = JSON.parse(sweep.configJson) as { sweep: SweepConfig };
  const winner = ranking[0];
  const best = winner.bestRun;
  const extract = await store.latestExtractRun(featureSet.id, sweep.startedAt);
  const classes = data.labels.length;
  const predicted = argmaxRows(best.testProbabilities, classes);
  const misclassified: MisclassifiedImage[] = [];
  data.test.forEach((member, i) => {
    if (data.labels[predicted[i]] === member.label) return;
    const probabilities = Object.fromEntries(
      data.labels.map((label, c) => [label, round(best.testProbabilities[i * classes + c], 4)]),
    );
    misclassified.push({ path: member.path, true_label: member.label, predicted_label: data.labels[predicted[i]], probabilities });
  });

  return {
    sweep: {
      id: sweep.id,
      status: sweep.status,
      metric,
      seeds: config.sweep.seeds,
      planned_runs: sweep.plannedRuns,
      finished_runs: runs.length,
      wall_seconds: sweep.wallSeconds,
      started_at: sweep.startedAt,
      trainer: sweep.trainer,
      split: sweep.splitSource,
      split_sizes: { train: data.train.length, val: data.val.length, test: data.test.length },
    },
    extraction: {
      feature_set: featureSet.id,
      model: featureSet.modelSource,
      alpha: featureSet.alpha,
      input_size: `${featureSet.height}x${featureSet.width}`,
      size_feature_sets: Object.entries(sweep.sizeSets ?? { [`${featureSet.height}x${featureSet.width}`]: featureSet.id }).map(([size, id]) => ({ size, feature_set: id })),
      resize: featureSet.resize,
      backend: featureSet.backend,
      dataset_root: sweep.datasetRoot,
      images: data.train.length + data.val.length + data.test.length,
      failures: sweep.imagesLeftOut ?? 0,
      images_per_second: extract?.imagesPerSecond ?? null,
    },
    labels: data.labels,
    varying_params: varyingParameters(ranking),
    best: {
      params: winner.params,
      run_key: best.runKey,
      seed: best.seed,
      best_epoch: best.bestEpoch,
      val_accuracy: best.valAccuracy,
      val_accuracy_mean: winner.valAccuracy.mean,
      test_accuracy: best.testAccuracy,
      test_accuracy_mean: winner.testAccuracy.mean,
      test_accuracy_std: winner.testAccuracy.std,
      test_accuracy_single_view: singleView(best),
      test_accuracy_single_view_mean: singleViewMean(winner.runs),
      inputs: runInputs(best.params, featureSet),
      macro_f1: best.macroF1,
      per_class: best.perClass,
      confusion: best.confusion,
      curves: {
        train_loss: best.curves.trainLoss,
        train_accuracy: best.curves.trainAccuracy,
        val_loss: best.curves.valLoss,
        val_accuracy: best.curves.valAccuracy,
      },
      misclassified,
    },
    variants: ranking.map((v, i) => ({
      rank: i + 1,
      params: v.params,
      seeds: v.seeds,
      metric_mean: v.metric.mean,
      metric_std: v.metric.std,
      val_accuracy_mean: v.valAccuracy.mean,
      val_accuracy_std: v.valAccuracy.std,
      val_loss_mean: v.valLoss.mean,
      test_accuracy_mean: v.testAccuracy.mean,
      test_accuracy_std: v.testAccuracy.std,
      test_accuracy_single_view_mean: singleViewMean(v.runs),
    })),
    runs: runs.map((r) => ({
      run_key: r.runKey,
      variant: r.variantKey,
      params: r.params,
      seed: r.seed,
      best_epoch: r.bestEpoch,
      epochs_run: r.epochsRun,
      train_loss: r.trainLoss,
      train_accuracy: r.trainAccuracy,
      val_loss: r.valLoss,
      val_accuracy: r.valAccuracy,
      test_loss: r.testLoss,
      test_accuracy: r.testAccuracy,
      test_accuracy_single_view: singleView(r),
      macro_f1: r.macroF1,
      train_seconds: r.trainSeconds,
    })),
    audit: audit
      ? {
          audit_id: audit.stored.id,
          created_at: audit.stored.createdAt,
          summary: audit.stored.result.summary,
          test_accuracy: await leakFreeAccuracy(store, sweep, testCopies(audit.stored.result.duplicate_groups)),
        }
      : null,
  };
}

/**
 * A sweep's selected run (the winner's best seed, as the report shows it) on test, with
 * and without the test images in `copies`. Its stored test probabilities are in the order
 * of the sweep's own test members.
 */
export async function leakFreeAccuracy(db: StoreLike, sweep: SweepRow, copies: ReadonlySet<string>): Promise<LeakFreeAccuracy> {
  const run = (await sweepResults(db, sweep)).ranking[0].bestRun;
  const data = await pinnedData(db, sweep);
  const predicted = argmaxRows(run.testProbabilities, data.labels.length);
  let right = 0;
  let kept = 0;
  let keptRight = 0;
  data.test.forEach((member, i) => {
    const correct = data.labels[predicted[i]] === member.label ? 1 : 0;
    right += correct;
    if (copies.has(member.path)) return;
    kept++;
    keptRight += correct;
  });
  const total = data.test.length;
  return {
    sweep: sweep.id,
    run_key: run.runKey,
    test_images: total,
    test_accuracy: round(right / total, 4),
    left_out: total - kept,
    test_accuracy_without_copies: kept ? round(keptRight / kept, 4) : null,
  };
}

/**
 * A run's inputs from its parameters; runs stored before views and sizes existed saw
 * their feature set's one size, the original view, no standardisation.
 */
export function runInputs(params: RunParams, featureSet: Pick<FeatureSet, 'height' | 'width'>): InputFacts {
  return {
    sizes: Array.isArray(params.sizes) ? params.sizes : [`${featureSet.height}x${featureSet.width}`],
    views: Array.isArray(params.views) ? params.views : ['original'],
    standardize: params.standardize === true,
  };
}

/** Test accuracy without averaging over views; a run of one view scores the same either way. */
function singleView(run: StoredRun): number | null {
  if (run.testAccuracySingleView !== null) return run.testAccuracySingleView;
  return Array.isArray(run.params.views) && run.params.views.length > 1 ? null : run.testAccuracy;
}

function singleViewMean(runs: readonly StoredRun[]): number | null {
  const values = runs.map(singleView);
  return values.every((v) => v !== null) ? values.reduce((a, b) => a + b!, 0) / values.length : null;
}

/** The images a sweep was trained and scored on, as stored with it (never the current listing). */
export async function pinnedData(
  db: StoreLike,
  sweep: SweepRow,
): Promise<{ labels: string[]; train: SweepMember[]; val: SweepMember[]; test: SweepMember[] }> {
  if (sweep.dataHash === null || sweep.labels === null) {
    throw new UserError(
      `sweep ${sweep.id} was made by an earlier pipeline that did not record which images it trained on, so its split and misclassified images cannot be shown: run \`pipeline sweep\` again`,
    );
  }
  const members = await storeOf(db).loadSweepMembers(sweep.id);
  const part = (split: Split) => members.filter((m) => m.split === split);
  return { labels: sweep.labels, train: part('train'), val: part('val'), test: part('test') };
}

const round = (value: number, digits: number) => Number(value.toFixed(digits));
