/**
 * A finished sweep over real cached features whose one run uses several views and sizes
 * with standardisation, stored the way the sweep stores such runs: params `views` (view 0
 * first), `sizes` ("HxW", features concatenated in that order) and `standardize: true`,
 * weights `standardize/mean` and `standardize/std` beside the head's, and test
 * probabilities that are, per test image in member order, the mean over the run's views
 * of softmax(head((x - mean) / std)).
 *
 * The head is seeded random rather than trained: export and predict must reproduce
 * whatever head a run holds, and computing its probabilities here in float64 from the
 * cached vectors keeps this fixture independent of the trainer.
 */
import { quietLog } from '../../core/log.js';
import { formatSize } from '../../backbone/preprocessing.js';
import type { Db } from '../../cache/database.js';
import { type FeatureSet, loadVectors } from '../../cache/features.js';
import { type NamedArray, type StoredRun, type SweepMember, createSweep, finishSweep, saveRun } from '../../cache/sweeps.js';
import { loadSweepData } from '../../stages/sweep.js';
import { headProbabilities, randomHead } from './export-fixture.js';

export interface ViewsRunOptions {
  /** One feature set per size, in concatenation order; the first is the sweep's. */
  readonly featureSets: readonly FeatureSet[];
  readonly views: readonly string[];
  readonly standardize: boolean;
  readonly hiddenUnits: number;
  readonly seed?: number;
}

export interface ViewsRun {
  readonly sweepId: number;
  readonly run: StoredRun;
  readonly labels: string[];
  readonly test: SweepMember[];
  /** Per test image: the probabilities of view 0 alone (to show that averaging matters). */
  readonly firstViewProbabilities: number[][];
}

/** Concatenated features of one image and view over the sizes. */
function concatenated(vectors: readonly Map<string, Float32Array>[], sha256: string, dim: number): Float32Array {
  const out = new Float32Array(dim * vectors.length);
  vectors.forEach((bySha, s) => out.set(bySha.get(sha256)!, s * dim));
  return out;
}

export async function storeViewsRun(db: Db, options: ViewsRunOptions): Promise<ViewsRun> {
  const { featureSets, views } = options;
  const seed = options.seed ?? 3;
  const data = await loadSweepData(db, featureSets[0], quietLog);
  const dim = featureSets[0].dim;
  const width = dim * featureSets.length;
  const hashes = data.members.map((m) => m.sha256);
  // byView[v][s]: vectors of view v at size s.
  const byView = views.map((view) => featureSets.map((set) => loadVectors(db, set.id, hashes, view)));
  const rows = (members: readonly SweepMember[], view: number) => members.map((m) => concatenated(byView[view], m.sha256, dim));

  const train = data.members.filter((m) => m.split === 'train');
  const test = data.members.filter((m) => m.split === 'test');
  let mean: Float32Array | undefined;
  let std: Float32Array | undefined;
  if (options.standardize) {
    const trainRows = views.flatMap((_, v) => rows(train, v));
    const sum = new Float64Array(width);
    const squares = new Float64Array(width);
    for (const row of trainRows) for (let i = 0; i < width; i++) sum[i] += row[i];
    const m = Float64Array.from(sum, (s) => s / trainRows.length);
    for (const row of trainRows) for (let i = 0; i < width; i++) squares[i] += (row[i] - m[i]) ** 2;
    mean = Float32Array.from(m);
    // A feature constant over train gets scale 1, as scikit-learn's StandardScaler does.
    std = Float32Array.from(squares, (q) => Math.sqrt(q / trainRows.length) || 1);
  }
  const head = randomHead(width, data.labels.length, options.hiddenUnits, seed);
  const standardized = (row: Float32Array) => (mean && std ? Float32Array.from(row, (x, i) => (x - mean![i]) / std![i]) : row);
  const perView = views.map((_, v) => headProbabilities(concatFlat(rows(test, v).map(standardized)), width, head));
  const averaged = test.map((_, i) => data.labels.map((__, c) => perView.reduce((s, p) => s + p[i][c], 0) / views.length));

  const weights: NamedArray[] = [...head];
  if (mean && std) weights.push({ name: 'standardize/mean', shape: [width], values: mean }, { name: 'standardize/std', shape: [width], values: std });
  const sizes = featureSets.map((set) => formatSize(set));
  const params = { dropout: 0.1, hidden_units: options.hiddenUnits, learning_rate: 0.001, sizes, views, standardize: options.standardize };
  const key = `views=${views.join('+')},sizes=${sizes.join('+')},standardize=${options.standardize}`;
  const predicted = averaged.map((p) => p.indexOf(Math.max(...p)));
  const truth = test.map((m) => data.labels.indexOf(m.label));
  const accuracy = predicted.filter((p, i) => p === truth[i]).length / test.length;
  const run: StoredRun = {
    runKey: `${key}#seed=1`,
    variantKey: key,
    // The sweep's params hold lists and booleans beside numbers and strings.
    params: params as unknown as StoredRun['params'],
    seed: 1,
    status: 'done',
    bestEpoch: 1,
    epochsRun: 1,
    trainLoss: 1,
    trainAccuracy: 0.5,
    valLoss: 1,
    valAccuracy: 0.5,
    testLoss: 1,
    testAccuracy: accuracy,
    macroF1: accuracy,
    perClass: data.labels.map((label) => ({ label, precision: 0, recall: 0, f1: 0, support: truth.filter((t) => data.labels[t] === label).length })),
    confusion: data.labels.map((_, a) => data.labels.map((__, b) => predicted.filter((p, i) => truth[i] === a && p === b).length)),
    curves: { trainLoss: [1], trainAccuracy: [0.5], valLoss: [1], valAccuracy: [0.5] },
    testProbabilities: Float32Array.from(averaged.flat()),
    weights,
    trainSeconds: 0,
    testAccuracySingleView: null,
  };
  const sweepId = createSweep(
    db,
    {
      featureSet: featureSets[0].id,
      configHash: `views-run-${seed}`,
      configJson: JSON.stringify({ sweep: { metric: { name: 'val_accuracy', goal: 'maximize' }, seeds: [1] } }),
      splitSource: data.splitSource,
      trainer: 'test fixture',
      plannedRuns: 1,
      dataHash: `views-run-${seed}`,
      labels: data.labels,
      datasetRoot: null,
      imagesLeftOut: data.imagesLeftOut,
    },
    data.members,
  );
  saveRun(db, sweepId, run);
  finishSweep(db, sweepId, 'done', 0);
  return { sweepId, run, labels: data.labels, test, firstViewProbabilities: perView[0] };
}

function concatFlat(rows: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  let offset = 0;
  for (const row of rows) {
    out.set(row, offset);
    offset += row.length;
  }
  return out;
}
