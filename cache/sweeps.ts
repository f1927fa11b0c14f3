/** Splits, sweeps and their runs. */
import { bytesToFloats, floatBytes } from './blobs.js';
import type { Split } from '../data/dataset.js';
import type { Db } from './database.js';

export interface SplitRow {
  readonly path: string;
  readonly split: Split;
  readonly source: string;
}

export interface SweepRow {
  readonly id: number;
  readonly featureSet: string;
  readonly configHash: string;
  readonly configJson: string;
  readonly splitSource: string;
  /** What trained the heads, e.g. "wasm-simd". */
  readonly trainer: string;
  /** Hash of the sweep's members; null for sweeps made before sweeps recorded their data. */
  readonly dataHash: string | null;
  /** Class names in index order, as the sweep trained them (null: not recorded). */
  readonly labels: string[] | null;
  readonly datasetRoot: string | null;
  /** Images of the feature set left out because their extraction failed. */
  readonly imagesLeftOut: number | null;
  /** The feature set of every size the sweep's runs concatenate, by `HxW` (null: made before sizes, its own size only). */
  readonly sizeSets: Record<string, string> | null;
  readonly status: 'running' | 'interrupted' | 'done';
  readonly plannedRuns: number;
  readonly startedAt: string;
  readonly finishedAt: string | null;
  readonly wallSeconds: number | null;
}

export interface NamedArray {
  readonly name: string;
  readonly shape: number[];
  readonly values: Float32Array;
}

/** A run's parameter values: numbers, names, flags and lists of names (views, sizes). */
export type ParamValue = number | string | boolean | string[];
export type RunParams = Record<string, ParamValue>;

/** Everything stored about one finished run (one variant, one seed). */
export interface StoredRun {
  readonly runKey: string;
  readonly variantKey: string;
  /** The variant's parameters; sweeps with views and sizes add `views`, `sizes` and `standardize`. */
  readonly params: RunParams;
  readonly seed: number;
  readonly status: 'done';
  readonly bestEpoch: number;
  readonly epochsRun: number;
  readonly trainLoss: number;
  readonly trainAccuracy: number;
  readonly valLoss: number;
  readonly valAccuracy: number;
  readonly testLoss: number;
  readonly testAccuracy: number;
  /** Test accuracy of view 0 alone, without averaging over views (null: stored before it was recorded). */
  readonly testAccuracySingleView: number | null;
  readonly macroF1: number;
  readonly perClass: { label: string; precision: number; recall: number; f1: number; support: number }[];
  readonly confusion: number[][];
  readonly curves: { trainLoss: number[]; trainAccuracy: number[]; valLoss: number[]; valAccuracy: number[] };
  /** Test rows in split order (sorted by path) x classes. */
  readonly testProbabilities: Float32Array;
  readonly weights: NamedArray[];
  readonly trainSeconds: number;
}

export function loadSplit(db: Db, featureSet: string): SplitRow[] {
  return db.prepare('SELECT path, split, source FROM splits WHERE feature_set = ? ORDER BY path').all(featureSet) as SplitRow[];
}

export function saveSplit(db: Db, featureSet: string, rows: readonly SplitRow[]): void {
  const remove = db.prepare('DELETE FROM splits WHERE feature_set = ?');
  const insert = db.prepare('INSERT INTO splits (feature_set, path, split, source) VALUES (?, ?, ?, ?)');
  db.transaction(() => {
    remove.run(featureSet);
    for (const row of rows) insert.run(featureSet, row.path, row.split, row.source);
  }).immediate();
}

/** One image a sweep trained or scored on; `position` is its row within its split. */
export interface SweepMember {
  readonly split: Split;
  readonly position: number;
  readonly path: string;
  readonly label: string;
  readonly sha256: string;
}

const SWEEP_COLUMNS = `id, feature_set AS featureSet, config_hash AS configHash, config_json AS configJson,
  split_source AS splitSource, trainer, data_hash AS dataHash, labels_json AS labelsJson, dataset_root AS datasetRoot,
  images_left_out AS imagesLeftOut, size_sets_json AS sizeSetsJson, status, planned_runs AS plannedRuns, started_at AS startedAt,
  finished_at AS finishedAt, wall_seconds AS wallSeconds`;

/** A sweep as both stores select it (labels and size sets still JSON). */
export type SweepRecord = Omit<SweepRow, 'labels' | 'sizeSets'> & { labelsJson: string | null; sizeSetsJson: string | null };
export const toSweepRow = ({ labelsJson, sizeSetsJson, ...row }: SweepRecord): SweepRow => ({
  ...row,
  labels: labelsJson === null ? null : (JSON.parse(labelsJson) as string[]),
  sizeSets: sizeSetsJson === null ? null : (JSON.parse(sizeSetsJson) as Record<string, string>),
});

export type NewSweep = Pick<
  SweepRow,
  'featureSet' | 'configHash' | 'configJson' | 'splitSource' | 'trainer' | 'plannedRuns' | 'datasetRoot' | 'imagesLeftOut'
> & { readonly dataHash: string; readonly labels: readonly string[]; readonly sizeSets?: Readonly<Record<string, string>> };

/** Records a sweep and its members in one transaction. */
export function createSweep(db: Db, sweep: NewSweep, members: readonly SweepMember[]): number {
  const insertSweep = db.prepare(
    `INSERT INTO sweeps (feature_set, config_hash, config_json, split_source, trainer, data_hash, labels_json, dataset_root,
       images_left_out, size_sets_json, status, planned_runs, started_at)
     VALUES (@featureSet, @configHash, @configJson, @splitSource, @trainer, @dataHash, @labelsJson, @datasetRoot,
       @imagesLeftOut, @sizeSetsJson, 'running', @plannedRuns, @startedAt)`,
  );
  const insertMember = db.prepare(
    'INSERT INTO sweep_items (sweep_id, split, position, path, label, sha256) VALUES (?, ?, ?, ?, ?, ?)',
  );
  return db.transaction(() => {
    const { labels, sizeSets, ...row } = sweep;
    const sizeSetsJson = sizeSets ? JSON.stringify(sizeSets) : null;
    const id = Number(
      insertSweep.run({ ...row, labelsJson: JSON.stringify(labels), sizeSetsJson, startedAt: new Date().toISOString() }).lastInsertRowid,
    );
    for (const m of members) insertMember.run(id, m.split, m.position, m.path, m.label, m.sha256);
    return id;
  }).immediate();
}

/** A sweep's members, train then val then test, each in the row order its stored arrays follow. */
export function loadSweepMembers(db: Db, sweepId: number): SweepMember[] {
  return db
    .prepare(
      `SELECT split, position, path, label, sha256 FROM sweep_items WHERE sweep_id = ?
       ORDER BY CASE split WHEN 'train' THEN 0 WHEN 'val' THEN 1 ELSE 2 END, position`,
    )
    .all(sweepId) as SweepMember[];
}

export function getSweep(db: Db, id: number): SweepRow | undefined {
  const row = db.prepare(`SELECT ${SWEEP_COLUMNS} FROM sweeps WHERE id = ?`).get(id) as SweepRecord | undefined;
  return row && toSweepRow(row);
}

export function listSweeps(db: Db): SweepRow[] {
  return (db.prepare(`SELECT ${SWEEP_COLUMNS} FROM sweeps ORDER BY id`).all() as SweepRecord[]).map(toSweepRow);
}

/**
 * The newest sweep with this configuration on this feature set, if any: over exactly the data
 * `dataHash` names, or, without it, whatever data it saw.
 */
export function findSweep(db: Db, featureSet: string, configHash: string, dataHash?: string): SweepRow | undefined {
  const row = db
    .prepare(
      `SELECT ${SWEEP_COLUMNS} FROM sweeps WHERE feature_set = ? AND config_hash = ? AND (? IS NULL OR data_hash = ?)
       ORDER BY id DESC LIMIT 1`,
    )
    .get(featureSet, configHash, dataHash ?? null, dataHash ?? null) as SweepRecord | undefined;
  return row && toSweepRow(row);
}

/** Adds wall time spent in this session, so a resumed sweep reports its total. */
export function finishSweep(db: Db, id: number, status: 'interrupted' | 'done', seconds: number): void {
  db.prepare(
    `UPDATE sweeps SET status = ?, finished_at = ?, wall_seconds = COALESCE(wall_seconds, 0) + ? WHERE id = ?`,
  ).run(status, new Date().toISOString(), seconds, id);
}

export function finishedRunKeys(db: Db, sweepId: number): Set<string> {
  return new Set(db.prepare('SELECT run_key FROM sweep_runs WHERE sweep_id = ?').pluck().all(sweepId) as string[]);
}

/** Stores a finished run; its own transaction, so a kill right after loses nothing. */
export function saveRun(db: Db, sweepId: number, run: StoredRun): void {
  db.prepare(
    `INSERT OR REPLACE INTO sweep_runs (sweep_id, run_key, variant_key, params_json, seed, status, best_epoch, epochs_run,
       train_loss, train_accuracy, val_loss, val_accuracy, test_loss, test_accuracy, test_accuracy_single_view, macro_f1, per_class_json,
       confusion_json, curves_json, test_probabilities, weights_json, weights, train_seconds, finished_at)
     VALUES (@sweepId, @runKey, @variantKey, @paramsJson, @seed, @status, @bestEpoch, @epochsRun,
       @trainLoss, @trainAccuracy, @valLoss, @valAccuracy, @testLoss, @testAccuracy, @testAccuracySingleView, @macroF1, @perClassJson,
       @confusionJson, @curvesJson, @testProbabilities, @weightsJson, @weights, @trainSeconds, @finishedAt)`,
  ).run({
    sweepId,
    runKey: run.runKey,
    variantKey: run.variantKey,
    paramsJson: JSON.stringify(run.params),
    seed: run.seed,
    status: run.status,
    bestEpoch: run.bestEpoch,
    epochsRun: run.epochsRun,
    trainLoss: run.trainLoss,
    trainAccuracy: run.trainAccuracy,
    valLoss: run.valLoss,
    valAccuracy: run.valAccuracy,
    testLoss: run.testLoss,
    testAccuracy: run.testAccuracy,
    testAccuracySingleView: run.testAccuracySingleView,
    macroF1: run.macroF1,
    perClassJson: JSON.stringify(run.perClass),
    confusionJson: JSON.stringify(run.confusion),
    curvesJson: JSON.stringify(run.curves),
    testProbabilities: floatBytes(run.testProbabilities),
    weightsJson: JSON.stringify(run.weights.map(({ name, shape }) => ({ name, shape }))),
    weights: Buffer.concat(run.weights.map((w) => floatBytes(w.values))),
    trainSeconds: run.trainSeconds,
    finishedAt: new Date().toISOString(),
  });
}

/** A run as both stores select it (JSON and bytes not yet decoded). */
export interface RunRecord {
  runKey: string;
  variantKey: string;
  paramsJson: string;
  seed: number;
  status: 'done';
  bestEpoch: number;
  epochsRun: number;
  trainLoss: number;
  trainAccuracy: number;
  valLoss: number;
  valAccuracy: number;
  testLoss: number;
  testAccuracy: number;
  testAccuracySingleView: number | null;
  macroF1: number;
  perClassJson: string;
  confusionJson: string;
  curvesJson: string;
  testProbabilities: Buffer;
  weightsJson: string;
  weights: Buffer;
  trainSeconds: number;
}

export function loadRuns(db: Db, sweepId: number): StoredRun[] {
  const rows = db
    .prepare(
      `SELECT run_key AS runKey, variant_key AS variantKey, params_json AS paramsJson, seed, status, best_epoch AS bestEpoch,
        epochs_run AS epochsRun, train_loss AS trainLoss, train_accuracy AS trainAccuracy, val_loss AS valLoss,
        val_accuracy AS valAccuracy, test_loss AS testLoss, test_accuracy AS testAccuracy,
        test_accuracy_single_view AS testAccuracySingleView, macro_f1 AS macroF1,
        per_class_json AS perClassJson, confusion_json AS confusionJson, curves_json AS curvesJson,
        test_probabilities AS testProbabilities, weights_json AS weightsJson, weights, train_seconds AS trainSeconds
       FROM sweep_runs WHERE sweep_id = ? ORDER BY variant_key, seed`,
    )
    .all(sweepId) as RunRecord[];
  return rows.map(toStoredRun);
}

export function toStoredRun(row: RunRecord): StoredRun {
  const all = bytesToFloats(row.weights);
  let offset = 0;
  const weights = (JSON.parse(row.weightsJson) as { name: string; shape: number[] }[]).map(({ name, shape }) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const values = all.subarray(offset, offset + size);
    offset += size;
    return { name, shape, values };
  });
  return {
    runKey: row.runKey,
    variantKey: row.variantKey,
    params: JSON.parse(row.paramsJson),
    seed: row.seed,
    status: row.status,
    bestEpoch: row.bestEpoch,
    epochsRun: row.epochsRun,
    trainLoss: row.trainLoss,
    trainAccuracy: row.trainAccuracy,
    valLoss: row.valLoss,
    valAccuracy: row.valAccuracy,
    testLoss: row.testLoss,
    testAccuracy: row.testAccuracy,
    testAccuracySingleView: row.testAccuracySingleView,
    macroF1: row.macroF1,
    perClass: JSON.parse(row.perClassJson),
    confusion: JSON.parse(row.confusionJson),
    curves: JSON.parse(row.curvesJson),
    testProbabilities: bytesToFloats(row.testProbabilities),
    weights,
    trainSeconds: row.trainSeconds,
  };
}
