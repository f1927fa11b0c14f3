/**
 * Stage three: the facts of one sweep, gathered from the cache into one plain object that
 * the terminal, JSON and HTML renderings all read. Field names here are the JSON API
 * (documented in README): change them only with the README.
 */
import type { Db } from '../cache/database.js';
import { type FeatureSet, getFeatureSet, latestExtractRun } from '../cache/features.js';
import { type RunParams, type StoredRun, type SweepMember, type SweepRow, getSweep, listSweeps, loadRuns, loadSweepMembers } from '../cache/sweeps.js';
import type { Split } from '../data/dataset.js';
import { UserError } from '../core/errors.js';
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
    size_feature_sets: Record<string, string>;
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
}

/** The sweep asked for, or the latest one. */
export function chooseSweep(db: Db, id: number | undefined): SweepRow {
  if (id !== undefined) {
    const sweep = getSweep(db, id);
    if (!sweep) throw new UserError(`--sweep ${id}: no such sweep (pipeline report --list shows them)`);
    return sweep;
  }
  const sweeps = listSweeps(db);
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

export function sweepResults(db: Db, sweep: SweepRow): SweepResults {
  const featureSet = getFeatureSet(db, sweep.featureSet)!;
  const config = JSON.parse(sweep.configJson) as { sweep: SweepConfig };
  const runs = loadRuns(db, sweep.id);
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

export function gatherReport(db: Db, sweepRow: SweepRow): ReportFacts {
  const data = pinnedData(db, sweepRow);
  const results = sweepResults(db, sweepRow);
  const { sweep, featureSet, ranking, runs, metric } = results;
  const config = JSON.parse(sweep.configJson) as { sweep: SweepConfig };
  const winner = ranking[0];
  const best = winner.bestRun;
  const extract = latestExtractRun(db, featureSet.id, sweep.startedAt);
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
      size_feature_sets: sweep.sizeSets ?? { [`${featureSet.height}x${featureSet.width}`]: featureSet.id },
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
export function pinnedData(db: Db, sweep: SweepRow): { labels: string[]; train: SweepMember[]; val: SweepMember[]; test: SweepMember[] } {
  if (sweep.dataHash === null || sweep.labels === null) {
    throw new UserError(
      `sweep ${sweep.id} was made by an earlier pipeline that did not record which images it trained on, so its split and misclassified images cannot be shown: run \`pipeline sweep\` again`,
    );
  }
  const members = loadSweepMembers(db, sweep.id);
  const part = (split: Split) => members.filter((m) => m.split === split);
  return { labels: sweep.labels, train: part('train'), val: part('val'), test: part('test') };
}

export function argmaxRows(probabilities: Float32Array, classes: number): Int32Array {
  const rows = probabilities.length / classes;
  const out = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (probabilities[i * classes + c] > probabilities[i * classes + best]) best = c;
    out[i] = best;
  }
  return out;
}

const round = (value: number, digits: number) => Number(value.toFixed(digits));
