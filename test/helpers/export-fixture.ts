/**
 * A cache with one finished sweep, for export/predict tests: a random alpha 0.35 backbone
 * written as a model folder, a feature set pointing at it, and two stored runs with seeded
 * random heads: a plain one (dense) and one with a hidden layer (dense, dense_1). Export
 * needs no feature vectors: a run's labels come from its per-class report.
 * Nothing here runs the backbone or the trainer.
 */
import { join } from 'node:path';
import { PREPROCESSING } from '../../backbone/preprocessing.js';
import { readWeightFile } from '../../backbone/weights.js';
import { type Db, openDatabase } from '../../cache/database.js';
import { ensureFeatureSet } from '../../cache/features.js';
import { type NamedArray, type RunParams, type StoredRun, createSweep, finishSweep, saveRun } from '../../cache/sweeps.js';
import { rng, writeRandomModel } from './random-model.js';
import { loadExportedModel } from '../../stages/predict.js';

export const FIXTURE_CLASSES = ['cardboard', 'glass', 'metal'] as const;
export const FIXTURE_FEATURE_SET = 'fs-export-test';

export interface ExportFixture {
  readonly db: Db;
  readonly dbPath: string;
  readonly modelJson: string;
  readonly sweepId: number;
  /** The plain head's run (the better val accuracy: what 'best' picks). */
  readonly plainRun: StoredRun;
  readonly hiddenRun: StoredRun;
  readonly size: { height: number; width: number };
}

export interface FixtureOptions {
  readonly height?: number;
  readonly width?: number;
  readonly seed?: number;
  readonly hiddenUnits?: number;
}

/** Uniform(-range, range) weights; a bias shift per class so outputs are not all equal. */
function randomArray(name: string, shape: number[], random: () => number, range: number): NamedArray {
  const size = shape.reduce((a, b) => a * b, 1);
  return { name, shape, values: Float32Array.from({ length: size }, () => (random() * 2 - 1) * range) };
}

export function randomHead(dim: number, classes: number, hiddenUnits: number, seed: number): NamedArray[] {
  const random = rng(seed);
  if (hiddenUnits === 0) {
    return [randomArray('dense/kernel', [dim, classes], random, 0.1), randomArray('dense/bias', [classes], random, 0.5)];
  }
  return [
    randomArray('dense/kernel', [dim, hiddenUnits], random, 0.1),
    randomArray('dense/bias', [hiddenUnits], random, 0.2),
    randomArray('dense_1/kernel', [hiddenUnits, classes], random, 0.3),
    randomArray('dense_1/bias', [classes], random, 0.5),
  ];
}

function storedRun(key: string, variant: string, params: RunParams, weights: NamedArray[], valAccuracy: number): StoredRun {
  const classes = FIXTURE_CLASSES.length;
  return {
    runKey: key,
    variantKey: variant,
    params,
    seed: 1,
    status: 'done',
    bestEpoch: 3,
    epochsRun: 5,
    trainLoss: 0.5,
    trainAccuracy: 0.8,
    valLoss: 0.6,
    valAccuracy,
    testLoss: 0.7,
    testAccuracy: 0.7,
    testAccuracySingleView: 0.7,
    macroF1: 0.65,
    perClass: FIXTURE_CLASSES.map((label) => ({ label, precision: 0.7, recall: 0.7, f1: 0.7, support: 2 })),
    confusion: FIXTURE_CLASSES.map((_, i) => FIXTURE_CLASSES.map((__, j) => (i === j ? 2 : 0))),
    curves: { trainLoss: [1, 0.5], trainAccuracy: [0.5, 0.8], valLoss: [1, 0.6], valAccuracy: [0.5, valAccuracy] },
    testProbabilities: new Float32Array(6 * classes).fill(1 / classes),
    weights,
    trainSeconds: 0.1,
  };
}

export async function makeExportFixture(dir: string, options: FixtureOptions = {}): Promise<ExportFixture> {
  const { height = 64, width = 64, seed = 7, hiddenUnits = 16 } = options;
  const { modelJson } = await writeRandomModel(join(dir, 'backbone'), { alpha: 0.35, seed });
  const file = await readWeightFile(modelJson);
  const dbPath = join(dir, 'cache.db');
  const db = openDatabase(dbPath);
  const dim = 1280;
  const featureSet = ensureFeatureSet(db, {
    id: FIXTURE_FEATURE_SET,
    modelSource: modelJson,
    weightsSha256: file.sha256,
    architecture: 'mobilenet_v2',
    alpha: 0.35,
    height,
    width,
    resize: 'fill',
    preprocessing: PREPROCESSING.id,
    backend: 'wasm',
    dim,
  });

  const config = { sweep: { metric: { name: 'val_accuracy', goal: 'maximize' }, seeds: [1] } };
  const sweepId = createSweep(db, {
    featureSet: featureSet.id,
    configHash: 'fixture',
    configJson: JSON.stringify(config),
    splitSource: 'stratified 70/15/15, seed 0, duplicates kept together',
    trainer: 'cpu',
    plannedRuns: 2,
    dataHash: 'fixture',
    labels: FIXTURE_CLASSES,
    datasetRoot: null,
    imagesLeftOut: 0,
  }, []);
  const plainRun = storedRun(
    'dropout=0.2,hidden_units=0#seed=1',
    'dropout=0.2,hidden_units=0',
    { dropout: 0.2, hidden_units: 0, learning_rate: 0.001 },
    randomHead(dim, FIXTURE_CLASSES.length, 0, seed + 2),
    0.9,
  );
  const hiddenRun = storedRun(
    `dropout=0.3,hidden_units=${hiddenUnits}#seed=1`,
    `dropout=0.3,hidden_units=${hiddenUnits}`,
    { dropout: 0.3, hidden_units: hiddenUnits, learning_rate: 0.001 },
    randomHead(dim, FIXTURE_CLASSES.length, hiddenUnits, seed + 3),
    0.8,
  );
  saveRun(db, sweepId, plainRun);
  saveRun(db, sweepId, hiddenRun);
  finishSweep(db, sweepId, 'done', 1);
  return { db, dbPath, modelJson, sweepId, plainRun, hiddenRun, size: { height, width } };
}

/** The head computed in plain float64 JavaScript, independent of tfjs: dense layers, ReLU between, softmax last. */
export function headProbabilities(features: Float32Array, dim: number, weights: readonly NamedArray[]): number[][] {
  const byName = new Map(weights.map((w) => [w.name, w]));
  const names = byName.has('dense_1/kernel') ? ['dense', 'dense_1'] : ['dense'];
  const rows = features.length / dim;
  const out: number[][] = [];
  for (let r = 0; r < rows; r++) {
    let x = Array.from(features.subarray(r * dim, (r + 1) * dim));
    names.forEach((name, layer) => {
      const kernel = byName.get(`${name}/kernel`)!;
      const bias = byName.get(`${name}/bias`)!;
      const [inputs, units] = kernel.shape;
      const y = Array.from(bias.values);
      for (let i = 0; i < inputs; i++) for (let u = 0; u < units; u++) y[u] += x[i] * kernel.values[i * units + u];
      x = layer < names.length - 1 ? y.map((v) => Math.max(0, v)) : y;
    });
    const max = Math.max(...x);
    const exps = x.map((v) => Math.exp(v - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    out.push(exps.map((v) => v / sum));
  }
  return out;
}

/**
 * Adds a run to the fixture's sweep that uses several sizes and views with standardisation,
 * in the sweep's storage contract (params sizes/views/standardize, weights standardize/mean
 * and standardize/std); its numbers are seeded random, its test probabilities meaningless.
 */
export function addViewsRun(fixture: ExportFixture, sizes: readonly string[], views: readonly string[], seed = 11): StoredRun {
  const random = rng(seed);
  const dim = 1280 * sizes.length;
  const mean = randomArray('standardize/mean', [dim], random, 0.5);
  const std = { name: 'standardize/std', shape: [dim], values: Float32Array.from({ length: dim }, () => 0.05 + random()) };
  const params = { dropout: 0.1, hidden_units: 8, learning_rate: 0.001, sizes, views, standardize: true };
  const run = storedRun('views#seed=1', 'views', params as unknown as Record<string, number | string>, [...randomHead(dim, FIXTURE_CLASSES.length, 8, seed + 1), mean, std], 0.5);
  saveRun(fixture.db, fixture.sweepId, run);
  return run;
}

/** An export folder that must hold a TF.js model, loaded. */
export async function loadTfjsExport(dir: string) {
  const loaded = await loadExportedModel(dir);
  if (loaded.runtime !== 'tfjs') throw new Error(`${dir} holds a ${loaded.runtime} export, expected tfjs`);
  return loaded;
}
